// Schedule IR: actions, placement, lowering, validation and the two dry runs. Generators live in
// schedule_generators.cpp, the text and CSV forms in schedule_text.cpp.
#include <geopipe/core/error.h>
#include <geopipe/core/schedule.h>

#include <algorithm>
#include <map>
#include <set>
#include <tuple>

namespace geopipe {

namespace {

using Key = std::tuple<int, int, int>;  // (stage, kind, micro-batch)

Key key(const Action& a) { return {a.stage, static_cast<int>(a.kind), a.micro_batch}; }
Key key(int stage, ActionKind kind, int mb) { return {stage, static_cast<int>(kind), mb}; }

bool is_send(ActionKind k) { return k == ActionKind::kSendF || k == ActionKind::kSendB; }
bool is_recv(ActionKind k) { return k == ActionKind::kRecvF || k == ActionKind::kRecvB; }
bool is_comm(ActionKind k) { return is_send(k) || is_recv(k); }
// B and I both produce the gradient of the stage's input, which the previous stage consumes.
bool makes_input_grad(ActionKind k) { return k == ActionKind::kBackward || k == ActionKind::kInputGrad; }

// The receive that a send pairs with.
Action peer_of_send(const Action& send) {
  if (send.kind == ActionKind::kSendF) return {send.stage + 1, ActionKind::kRecvF, send.micro_batch};
  return {send.stage - 1, ActionKind::kRecvB, send.micro_batch};
}

// The rank that runs `stage`, or -1 when the stage is out of range (an invalid schedule).
int rank_of(const Schedule& s, int stage) {
  return stage >= 0 && stage < static_cast<int>(s.stage_rank.size()) ? s.stage_rank[stage] : -1;
}

// Whether a compute action's output goes to a stage on another rank (and so needs a SEND).
bool sends_across(const Schedule& s, const Action& a) {
  if (a.kind == ActionKind::kForward)
    return a.stage + 1 < s.num_stages && rank_of(s, a.stage + 1) != rank_of(s, a.stage);
  if (makes_input_grad(a.kind)) return a.stage > 0 && rank_of(s, a.stage - 1) != rank_of(s, a.stage);
  return false;
}

std::string join(const std::vector<std::string>& parts, const std::string& sep) {
  std::string out;
  for (const auto& p : parts) out += (out.empty() ? "" : sep) + p;
  return out;
}

// Fills `res` after a dry run stopped: completed, or each unfinished rank's blocked action(s)
// [pc, max(pc + 1, group_end)) as "rank 1 blocked at 1SEND_B0 + 3RECV_F1 (index 3)".
void report_blocked(const Schedule& sch, const std::vector<size_t>& pc, const std::vector<size_t>& group_end,
                    SimulationResult& res) {
  res.completed = true;
  for (size_t r = 0; r < sch.ranks.size(); ++r) {
    if (pc[r] >= sch.ranks[r].size()) continue;
    res.completed = false;
    std::string what = to_string(sch.ranks[r][pc[r]]);
    for (size_t i = pc[r] + 1; i < group_end[r]; ++i) what += " + " + to_string(sch.ranks[r][i]);
    res.blocked.push_back("rank " + std::to_string(r) + " blocked at " + what + " (index " + std::to_string(pc[r]) +
                          ")");
  }
}

}  // namespace

const char* action_kind_name(ActionKind kind) {
  switch (kind) {
    case ActionKind::kForward: return "F";
    case ActionKind::kInputGrad: return "I";
    case ActionKind::kWeightGrad: return "W";
    case ActionKind::kBackward: return "B";
    case ActionKind::kSendF: return "SEND_F";
    case ActionKind::kRecvF: return "RECV_F";
    case ActionKind::kSendB: return "SEND_B";
    case ActionKind::kRecvB: return "RECV_B";
    case ActionKind::kOptimizer: return "OPT";
  }
  return "?";
}

std::string to_string(const Action& a) {
  std::string s = std::to_string(a.stage) + action_kind_name(a.kind);
  if (a.kind != ActionKind::kOptimizer) s += std::to_string(a.micro_batch);
  return s;
}

ChunkPlacement chunk_placement_of(const std::string& kind) {
  return kind == "zbv" ? ChunkPlacement::kVShape : ChunkPlacement::kLooped;
}

std::vector<int> stage_ranks(ChunkPlacement placement, int num_ranks, int chunks_per_rank) {
  if (num_ranks < 1)
    throw InputError("schedule", "num_ranks", "expected at least 1 rank, got " + std::to_string(num_ranks));
  if (chunks_per_rank < 1)
    throw InputError("schedule", "chunks_per_rank",
                     "expected at least 1 chunk per rank, got " + std::to_string(chunks_per_rank));
  std::vector<int> out(static_cast<size_t>(num_ranks) * chunks_per_rank);
  if (placement == ChunkPlacement::kVShape) {
    if (chunks_per_rank != 2)
      throw InputError("schedule", "chunks_per_rank",
                       "a V placement has 2 chunks per rank, got " + std::to_string(chunks_per_rank));
    for (int s = 0; s < 2 * num_ranks; ++s) out[s] = s < num_ranks ? s : 2 * num_ranks - 1 - s;
  } else {
    for (size_t s = 0; s < out.size(); ++s) out[s] = static_cast<int>(s) % num_ranks;
  }
  return out;
}

bool has_virtual_stages(const Schedule& schedule) {
  std::vector<int> held(std::max(schedule.num_ranks, 0), 0);
  for (int r : schedule.stage_rank)
    if (r >= 0 && r < schedule.num_ranks && ++held[r] > 1) return true;
  return false;
}

bool has_split_backward(const Schedule& schedule) {
  for (const auto& list : schedule.ranks)
    for (const auto& a : list)
      if (a.kind == ActionKind::kInputGrad || a.kind == ActionKind::kWeightGrad) return true;
  return false;
}

std::vector<double> peak_held_bytes(const Schedule& schedule, const std::vector<double>& bytes_per_stage) {
  std::vector<double> peaks;
  for (const auto& list : schedule.ranks) {
    double live = 0, peak = 0;
    for (const auto& a : list) {
      const double bytes = bytes_per_stage.at(static_cast<size_t>(a.stage));
      // An activation lives from F until the pass that last reads it: B, or W when split.
      if (a.kind == ActionKind::kForward) peak = std::max(peak, live += bytes);
      if (a.kind == ActionKind::kBackward || a.kind == ActionKind::kWeightGrad) live -= bytes;
    }
    peaks.push_back(peak);
  }
  return peaks;
}

std::vector<int> peak_in_flight(const Schedule& schedule) {
  std::vector<int> peaks;
  for (double p : peak_held_bytes(schedule, std::vector<double>(static_cast<size_t>(schedule.num_stages), 1.0)))
    peaks.push_back(static_cast<int>(p));
  return peaks;
}

// ---- Lowering --------------------------------------------------------------------------------

bool has_communication(const Schedule& schedule) {
  for (const auto& list : schedule.ranks)
    for (const auto& a : list)
      if (is_comm(a.kind)) return true;
  return false;
}

Schedule lower(const Schedule& in) {
  if (has_communication(in))
    throw InputError("schedule", "lower", "expected a compute-only schedule (F, I, W, B, OPT), got one with sends/receives");
  if (auto errs = validate(in); !errs.empty()) throw InputError("schedule", "lower", join(errs, "; "));
  const int R = in.num_ranks;
  Schedule out = in;
  for (auto& list : out.ranks) list.clear();
  std::vector<size_t> next(R, 0);
  std::vector<std::set<Key>> placed(R);  // per rank: computes run and receives posted so far
  // A compute can be placed once its input is on this rank: the producer ran here, or its RECV
  // was placed (by the producer's rank, when it sent).
  auto ready = [&](int r, const Action& a) {
    const int s = a.stage, m = a.micro_batch;
    if (a.kind == ActionKind::kForward && s > 0)
      return placed[r].count(key(s - 1, ActionKind::kForward, m)) + placed[r].count(key(s, ActionKind::kRecvF, m)) > 0;
    if (makes_input_grad(a.kind) && s + 1 < in.num_stages)
      return placed[r].count(key(s + 1, ActionKind::kBackward, m)) + placed[r].count(key(s + 1, ActionKind::kInputGrad, m)) +
                 placed[r].count(key(s, ActionKind::kRecvB, m)) > 0;
    return true;
  };
  // Round-robin, one action per rank per round, as torch's _add_send_recv: a RECV lands in the
  // receiver's list at the point the sender issues the SEND.
  for (bool progress = true; progress;) {
    progress = false;
    for (int r = 0; r < R; ++r) {
      if (next[r] >= in.ranks[r].size()) continue;
      const Action& a = in.ranks[r][next[r]];
      if (!ready(r, a)) continue;
      out.ranks[r].push_back(a);
      placed[r].insert(key(a));
      if (sends_across(in, a)) {
        const Action send{a.stage, a.kind == ActionKind::kForward ? ActionKind::kSendF : ActionKind::kSendB, a.micro_batch};
        const Action recv = peer_of_send(send);
        const int peer = in.stage_rank[recv.stage];
        out.ranks[r].push_back(send);
        out.ranks[peer].push_back(recv);
        placed[peer].insert(key(recv));
      }
      ++next[r];
      progress = true;
    }
  }
  std::vector<std::string> blocked;
  for (int r = 0; r < R; ++r)
    if (next[r] < in.ranks[r].size())
      blocked.push_back("rank " + std::to_string(r) + " blocked at " + to_string(in.ranks[r][next[r]]) + " (index " +
                        std::to_string(next[r]) + ")");
  if (!blocked.empty())
    throw InputError("schedule", "lower", "deadlock: the compute lists wait on each other: " + join(blocked, ", "));
  return out;
}

// ---- Validation ------------------------------------------------------------------------------

namespace {

struct Where {
  int rank = -1;
  int index = -1;
};

// Shape and placement; false when the rest cannot be checked.
bool validate_shape(const Schedule& sch, std::vector<std::string>& errs) {
  const int R = sch.num_ranks, N = sch.num_stages, M = sch.num_micro_batches;
  if (R < 1) errs.push_back("expected at least one rank, got " + std::to_string(R));
  if (N < 1) errs.push_back("expected at least one stage, got " + std::to_string(N));
  if (M < 1) errs.push_back("expected at least one micro-batch, got " + std::to_string(M));
  if (static_cast<int>(sch.ranks.size()) != R)
    errs.push_back("expected " + std::to_string(R) + " rank lists, got " + std::to_string(sch.ranks.size()));
  if (static_cast<int>(sch.stage_rank.size()) != N)
    errs.push_back("expected a rank for each of the " + std::to_string(N) + " stages, got " +
                   std::to_string(sch.stage_rank.size()));
  for (size_t s = 0; s < sch.stage_rank.size(); ++s)
    if (sch.stage_rank[s] < 0 || sch.stage_rank[s] >= R)
      errs.push_back("stage " + std::to_string(s) + " is placed on rank " + std::to_string(sch.stage_rank[s]) +
                     ", outside [0, " + std::to_string(R) + ")");
  return errs.empty();
}

// One rank's list: placement, ranges, duplicates, OPT, and sends/receives that have no peer
// stage on another rank. Records where each action is.
void validate_list(const Schedule& sch, int r, std::map<Key, Where>& at, std::vector<std::string>& errs) {
  const auto& list = sch.ranks[r];
  const std::string where = "rank " + std::to_string(r) + ": ";
  int opt_count = 0;
  for (size_t i = 0; i < list.size(); ++i) {
    const Action& a = list[i];
    const std::string what = where + to_string(a) + " (index " + std::to_string(i) + ") ";
    if (a.kind == ActionKind::kOptimizer) {
      ++opt_count;
      if (a.stage != r) errs.push_back(what + "is rank " + std::to_string(a.stage) + "'s optimizer step");
      if (i + 1 != list.size()) errs.push_back(what + "is not the last action");
      continue;
    }
    if (a.stage < 0 || a.stage >= sch.num_stages) {
      errs.push_back(what + "names a stage outside [0, " + std::to_string(sch.num_stages) + ")");
      continue;
    }
    if (sch.stage_rank[a.stage] != r)
      errs.push_back(what + "belongs to stage " + std::to_string(a.stage) + " on rank " +
                     std::to_string(sch.stage_rank[a.stage]));
    if (a.micro_batch < 0 || a.micro_batch >= sch.num_micro_batches) {
      errs.push_back(what + "has a micro-batch outside [0, " + std::to_string(sch.num_micro_batches) + ")");
      continue;
    }
    if (!at.emplace(key(a), Where{r, static_cast<int>(i)}).second) {
      errs.push_back(what + "appears more than once");
      continue;
    }
    if (!is_comm(a.kind)) continue;
    const bool to_next = a.kind == ActionKind::kSendF || a.kind == ActionKind::kRecvB;
    const int peer = a.stage + (to_next ? 1 : -1);
    if (peer < 0 || peer >= sch.num_stages)
      errs.push_back(what + "has no " + (to_next ? "next" : "previous") + " stage");
    else if (sch.stage_rank[peer] == r)
      errs.push_back(what + "exchanges with stage " + std::to_string(peer) + " on the same rank");
  }
  if (opt_count != 1) errs.push_back(where + "expected exactly one OPT, got " + std::to_string(opt_count));
}

int index_of(const std::map<Key, Where>& at, int stage, ActionKind kind, int mb) {
  auto it = at.find(key(stage, kind, mb));
  return it == at.end() ? -1 : it->second.index;
}

// Per stage and micro-batch: F once, then either B or I and W (I before W).
void validate_passes(const Schedule& sch, const std::map<Key, Where>& at, std::vector<std::string>& errs) {
  for (int s = 0; s < sch.num_stages; ++s)
    for (int m = 0; m < sch.num_micro_batches; ++m) {
      const std::string where = "rank " + std::to_string(sch.stage_rank[s]) + ": stage " + std::to_string(s) + " ";
      const std::string sm = std::to_string(s), mb = std::to_string(m);
      const int f = index_of(at, s, ActionKind::kForward, m), b = index_of(at, s, ActionKind::kBackward, m);
      const int in = index_of(at, s, ActionKind::kInputGrad, m), w = index_of(at, s, ActionKind::kWeightGrad, m);
      if (f < 0) errs.push_back(where + "missing " + sm + "F" + mb);
      if (b >= 0 && (in >= 0 || w >= 0)) errs.push_back(where + "runs both " + sm + "B" + mb + " and I/W");
      if (b < 0 && in < 0 && w < 0) errs.push_back(where + "missing " + sm + "B" + mb + " (or " + sm + "I" + mb + " and " + sm + "W" + mb + ")");
      if (b < 0 && in >= 0 && w < 0) errs.push_back(where + "missing " + sm + "W" + mb + " after " + sm + "I" + mb);
      if (b < 0 && in < 0 && w >= 0) errs.push_back(where + "missing " + sm + "I" + mb + " before " + sm + "W" + mb);
      if (in >= 0 && w >= 0 && w < in) errs.push_back(where + sm + "W" + mb + " runs before " + sm + "I" + mb);
      const int back = b >= 0 ? b : in;
      if (f >= 0 && back >= 0 && back < f)
        errs.push_back(where + sm + (b >= 0 ? "B" : "I") + mb + " runs before " + sm + "F" + mb);
    }
}

// One dependency: `consumer` (on stage c) needs `producer` (on stage p, the neighbour). On one
// rank, list order; across ranks (lowered only), RECV before the consumer, SEND after the producer.
void validate_edge(const Schedule& sch, const std::map<Key, Where>& at, const Action& producer,
                   const Action& consumer, bool lowered, std::vector<std::string>& errs) {
  const int pr = sch.stage_rank[producer.stage], cr = sch.stage_rank[consumer.stage];
  const int pi = index_of(at, producer.stage, producer.kind, producer.micro_batch);
  const int ci = index_of(at, consumer.stage, consumer.kind, consumer.micro_batch);
  if (pi < 0 || ci < 0) return;  // reported by validate_passes
  const bool fwd = consumer.kind == ActionKind::kForward;
  if (pr == cr) {
    if (pi > ci)
      errs.push_back("rank " + std::to_string(cr) + ": " + to_string(consumer) + " (index " + std::to_string(ci) +
                     ") runs before its input " + to_string(producer) + " (index " + std::to_string(pi) + ")");
    return;
  }
  if (!lowered) return;
  const Action recv{consumer.stage, fwd ? ActionKind::kRecvF : ActionKind::kRecvB, consumer.micro_batch};
  const Action send{producer.stage, fwd ? ActionKind::kSendF : ActionKind::kSendB, producer.micro_batch};
  const int ri = index_of(at, recv.stage, recv.kind, recv.micro_batch);
  const int si = index_of(at, send.stage, send.kind, send.micro_batch);
  const std::string cw = "rank " + std::to_string(cr) + ": ", pw = "rank " + std::to_string(pr) + ": ";
  if (ri < 0) errs.push_back(cw + "missing " + to_string(recv) + " before " + to_string(consumer));
  else if (ri > ci) errs.push_back(cw + to_string(recv) + " comes after " + to_string(consumer));
  if (si < 0) errs.push_back(pw + "missing " + to_string(send) + " after " + to_string(producer));
  else if (si < pi) errs.push_back(pw + to_string(send) + " comes before " + to_string(producer));
}

void validate_dependencies(const Schedule& sch, const std::map<Key, Where>& at, std::vector<std::string>& errs) {
  const bool lowered = has_communication(sch);
  for (int s = 0; s < sch.num_stages; ++s)
    for (int m = 0; m < sch.num_micro_batches; ++m) {
      if (s > 0) validate_edge(sch, at, {s - 1, ActionKind::kForward, m}, {s, ActionKind::kForward, m}, lowered, errs);
      if (s + 1 == sch.num_stages) continue;
      auto grad = [&](int stage) {  // whichever pass makes the stage's input gradient
        const bool split = index_of(at, stage, ActionKind::kBackward, m) < 0;
        return Action{stage, split ? ActionKind::kInputGrad : ActionKind::kBackward, m};
      };
      validate_edge(sch, at, grad(s + 1), grad(s), lowered, errs);
    }
}

// Every SEND with its peer's RECV and every RECV with its SEND (extras the edges do not name).
void validate_pairs(const Schedule& sch, const std::map<Key, Where>& at, std::vector<std::string>& errs) {
  for (const auto& [k, w] : at) {
    const Action a{std::get<0>(k), static_cast<ActionKind>(std::get<1>(k)), std::get<2>(k)};
    if (is_send(a.kind)) {
      const Action r = peer_of_send(a);
      if (!at.count(key(r)))
        errs.push_back("rank " + std::to_string(w.rank) + ": " + to_string(a) + " (index " + std::to_string(w.index) +
                       ") has no matching " + to_string(r));
    } else if (is_recv(a.kind)) {
      const Action s{a.kind == ActionKind::kRecvF ? a.stage - 1 : a.stage + 1,
                     a.kind == ActionKind::kRecvF ? ActionKind::kSendF : ActionKind::kSendB, a.micro_batch};
      if (!at.count(key(s)))
        errs.push_back("rank " + std::to_string(w.rank) + ": " + to_string(a) + " (index " + std::to_string(w.index) +
                       ") has no matching " + to_string(s));
    }
  }
}

}  // namespace

std::vector<std::string> validate(const Schedule& sch) {
  std::vector<std::string> errs;
  if (!validate_shape(sch, errs)) return errs;
  std::map<Key, Where> at;
  for (int r = 0; r < sch.num_ranks; ++r) validate_list(sch, r, at, errs);
  validate_passes(sch, at, errs);
  validate_dependencies(sch, at, errs);
  validate_pairs(sch, at, errs);
  return errs;
}

// ---- Dry runs --------------------------------------------------------------------------------

std::string SimulationResult::message() const {
  if (completed) return "completed (" + std::to_string(steps) + " actions)";
  std::string s = "deadlock after " + std::to_string(steps) + " actions:";
  for (const auto& b : blocked) s += "\n  " + b;
  return s;
}

SimulationResult simulate(const Schedule& sch) {
  SimulationResult res;
  const int R = static_cast<int>(sch.ranks.size());
  std::vector<size_t> pc(R, 0);
  std::multiset<Key> delivered;  // sends executed, keyed by their receive
  for (bool progress = true; progress;) {
    progress = false;
    for (int r = 0; r < R; ++r) {
      const auto& list = sch.ranks[r];
      while (pc[r] < list.size()) {
        const Action& a = list[pc[r]];
        if (is_recv(a.kind)) {
          auto it = delivered.find(key(a));
          if (it == delivered.end()) break;
          delivered.erase(it);
        } else if (is_send(a.kind)) {
          delivered.insert(key(peer_of_send(a)));
        }
        ++pc[r];
        ++res.steps;
        progress = true;
      }
    }
  }
  report_blocked(sch, pc, pc, res);
  return res;
}

std::vector<std::pair<size_t, size_t>> comm_groups(const std::vector<Action>& list) {
  std::vector<std::pair<size_t, size_t>> groups;
  for (size_t i = 0; i < list.size();) {
    if (!is_comm(list[i].kind)) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < list.size() && is_comm(list[j].kind)) ++j;
    groups.emplace_back(i, j);
    i = j;
  }
  return groups;
}

SimulationResult simulate_rendezvous(const Schedule& sch, bool group_adjacent) {
  SimulationResult res;
  const int R = static_cast<int>(sch.ranks.size());
  // pc: next action; a rank at a comm group has issued all of the group's operations and stays
  // there until every one of them has met its peer's operation, itself issued (in the peer's group).
  std::vector<size_t> pc(R, 0), group_end(R, 0);
  std::vector<std::vector<bool>> matched(R);
  std::vector<std::vector<size_t>> group_end_of(R);  // comm action index -> end of its comm_groups() run
  for (int r = 0; r < R; ++r) {
    matched[r].assign(sch.ranks[r].size(), false);
    group_end_of[r].assign(sch.ranks[r].size(), 0);
    for (const auto& [b, e] : comm_groups(sch.ranks[r]))
      for (size_t i = b; i < e; ++i) group_end_of[r][i] = e;
  }
  auto issued = [&](int r, const Action& op, size_t* index) {
    if (r < 0 || r >= R || group_end[r] <= pc[r]) return false;
    for (size_t i = pc[r]; i < group_end[r]; ++i)
      if (sch.ranks[r][i] == op && !matched[r][i]) {
        *index = i;
        return true;
      }
    return false;
  };
  for (bool progress = true; progress;) {
    progress = false;
    for (int r = 0; r < R; ++r) {
      const auto& list = sch.ranks[r];
      while (pc[r] < list.size()) {
        if (!is_comm(list[pc[r]].kind)) {
          ++pc[r];
          ++res.steps;
          progress = true;
          continue;
        }
        if (group_end[r] <= pc[r]) {  // issue the whole group (or, without groups, one operation)
          group_end[r] = group_adjacent ? group_end_of[r][pc[r]] : pc[r] + 1;
          progress = true;
        }
        for (size_t i = pc[r]; i < group_end[r]; ++i) {
          if (matched[r][i] || !is_send(list[i].kind)) continue;
          const Action recv = peer_of_send(list[i]);
          const int peer = rank_of(sch, recv.stage);
          size_t ri = 0;
          if (issued(peer, recv, &ri)) {
            matched[r][i] = matched[peer][ri] = true;
            res.steps += 2;
            progress = true;
          }
        }
        bool done = true;
        for (size_t i = pc[r]; i < group_end[r]; ++i) done = done && matched[r][i];
        if (!done) break;
        pc[r] = group_end[r];
      }
    }
  }
  report_blocked(sch, pc, group_end, res);
  return res;
}

void check_schedule(const Schedule& lowered, const std::string& source, bool rendezvous) {
  std::vector<std::string> errs = validate(lowered);
  bool crosses = false;  // some neighbours on different ranks: the list needs sends/receives
  for (int s = 0; errs.empty() && s + 1 < lowered.num_stages; ++s)
    crosses = crosses || lowered.stage_rank[s] != lowered.stage_rank[s + 1];
  if (errs.empty() && crosses && !has_communication(lowered))
    errs.push_back("schedule has no sends/receives; lower it first");
  if (errs.empty()) {
    SimulationResult r = simulate(lowered);
    if (!r.completed) errs.push_back(r.message());
  }
  if (errs.empty() && rendezvous) {
    SimulationResult r = simulate_rendezvous(lowered);
    if (!r.completed) errs.push_back("under NCCL's rendezvous sends, " + r.message());
  }
  if (errs.empty()) return;
  throw InputError(source, "schedule", join(errs, "; ") + "\nschedule:\n" + format_schedule(lowered));
}

Schedule prepare_schedule(const Schedule& schedule, const std::string& source, bool rendezvous) {
  Schedule lowered = schedule;
  if (!has_communication(schedule)) {
    try {
      lowered = lower(schedule);
    } catch (const InputError& e) {  // name the file or generator, and show what was given
      std::string msg;
      for (const auto& d : e.diagnostics()) msg += (msg.empty() ? "" : "; ") + d.message;
      throw InputError(source, "schedule", msg + "\nschedule:\n" + format_schedule(schedule));
    }
  }
  check_schedule(lowered, source, rendezvous);
  return lowered;
}

}  // namespace geopipe
