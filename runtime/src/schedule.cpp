#include <geopipe/core/error.h>
#include <geopipe/runtime/schedule.h>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <tuple>

namespace geopipe::runtime {

namespace {

constexpr ActionKind kAllKinds[] = {ActionKind::kForward, ActionKind::kBackward, ActionKind::kSendF,
                                    ActionKind::kRecvF,   ActionKind::kSendB,    ActionKind::kRecvB,
                                    ActionKind::kOptimizer};

bool is_comm(ActionKind k) {
  return k == ActionKind::kSendF || k == ActionKind::kRecvF || k == ActionKind::kSendB ||
         k == ActionKind::kRecvB;
}

void check_shape(int num_stages, int num_micro_batches, const char* who) {
  if (num_stages < 1)
    throw InputError(who, "num_stages", "expected at least 1 stage, got " + std::to_string(num_stages));
  if (num_micro_batches < 1)
    throw InputError(who, "num_micro_batches",
                     "expected at least 1 micro-batch, got " + std::to_string(num_micro_batches));
}

bool is_comm(const Action& a) {
  return a.kind == ActionKind::kSendF || a.kind == ActionKind::kSendB || a.kind == ActionKind::kRecvF ||
         a.kind == ActionKind::kRecvB;
}

// The receive that a send pairs with: (receiving stage, kind, micro-batch).
Action peer_of_send(const Action& send) {
  if (send.kind == ActionKind::kSendF) return {send.stage + 1, ActionKind::kRecvF, send.micro_batch};
  return {send.stage - 1, ActionKind::kRecvB, send.micro_batch};
}

// Fills `res` after a dry run stopped: completed, or each unfinished stage's blocked action(s)
// [pc, max(pc + 1, group_end)) as "stage 1 blocked at 1SEND_B0 + 1RECV_F1 (index 3)".
void report_blocked(const Schedule& sch, const std::vector<size_t>& pc, const std::vector<size_t>& group_end,
                    SimulationResult& res) {
  res.completed = true;
  for (size_t st = 0; st < sch.stages.size(); ++st) {
    if (pc[st] >= sch.stages[st].size()) continue;
    res.completed = false;
    std::string what = to_string(sch.stages[st][pc[st]]);
    for (size_t i = pc[st] + 1; i < group_end[st]; ++i) what += " + " + to_string(sch.stages[st][i]);
    res.blocked.push_back("stage " + std::to_string(st) + " blocked at " + what + " (index " +
                          std::to_string(pc[st]) + ")");
  }
}

}  // namespace

const char* action_kind_name(ActionKind kind) {
  switch (kind) {
    case ActionKind::kForward: return "F";
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

// ---- Generators ------------------------------------------------------------------------------

Schedule gpipe_schedule(int num_stages, int num_micro_batches) {
  check_shape(num_stages, num_micro_batches, "gpipe schedule");
  Schedule s{num_stages, num_micro_batches, std::vector<std::vector<Action>>(num_stages)};
  for (int st = 0; st < num_stages; ++st) {
    auto& list = s.stages[st];
    for (int m = 0; m < num_micro_batches; ++m) list.push_back({st, ActionKind::kForward, m});
    for (int m = 0; m < num_micro_batches; ++m) list.push_back({st, ActionKind::kBackward, m});
    list.push_back({st, ActionKind::kOptimizer, -1});
  }
  return s;
}

std::vector<int> one_f_one_b_warmup(int num_stages) {
  std::vector<int> w(std::max(num_stages, 0));
  for (int st = 0; st < num_stages; ++st) w[st] = num_stages - 1 - st;
  return w;
}

Schedule one_f_one_b_schedule(int num_stages, int num_micro_batches, const std::vector<int>& warmup) {
  check_shape(num_stages, num_micro_batches, "1f1b schedule");
  if (static_cast<int>(warmup.size()) != num_stages)
    throw InputError("1f1b schedule", "warmup",
                     "expected one warm-up depth per stage (" + std::to_string(num_stages) + "), got " +
                         std::to_string(warmup.size()));
  Schedule s{num_stages, num_micro_batches, std::vector<std::vector<Action>>(num_stages)};
  for (int st = 0; st < num_stages; ++st) {
    if (warmup[st] < 0)
      throw InputError("1f1b schedule", "warmup[" + std::to_string(st) + "]",
                       "expected a depth >= 0, got " + std::to_string(warmup[st]));
    const int w = std::min(warmup[st], num_micro_batches);
    auto& list = s.stages[st];
    int next_f = 0, next_b = 0;
    for (; next_f < w; ++next_f) list.push_back({st, ActionKind::kForward, next_f});
    while (next_f < num_micro_batches) {  // steady state: one forward, one backward
      list.push_back({st, ActionKind::kForward, next_f++});
      list.push_back({st, ActionKind::kBackward, next_b++});
    }
    while (next_b < num_micro_batches) list.push_back({st, ActionKind::kBackward, next_b++});
    list.push_back({st, ActionKind::kOptimizer, -1});
  }
  return s;
}

Schedule schedule_for(const std::string& kind, int num_stages, int num_micro_batches,
                      const std::vector<int>& warmup) {
  if (kind == "gpipe") return gpipe_schedule(num_stages, num_micro_batches);
  if (kind == "1f1b") return one_f_one_b_schedule(num_stages, num_micro_batches, one_f_one_b_warmup(num_stages));
  if (kind == "1f1b-lh")
    return one_f_one_b_schedule(num_stages, num_micro_batches,
                                warmup.empty() ? one_f_one_b_warmup(num_stages) : warmup);
  throw InputError("schedule", "kind", "expected gpipe, 1f1b or 1f1b-lh, got \"" + kind + "\"");
}

// ---- Lowering --------------------------------------------------------------------------------

bool has_communication(const Schedule& schedule) {
  for (const auto& list : schedule.stages)
    for (const auto& a : list)
      if (is_comm(a.kind)) return true;
  return false;
}

Schedule lower(const Schedule& in) {
  if (has_communication(in))
    throw InputError("schedule", "lower", "expected a compute-only schedule (F, B, OPT), got one with sends/receives");
  Schedule out{in.num_stages, in.num_micro_batches, std::vector<std::vector<Action>>(in.stages.size())};
  const int last = in.num_stages - 1;
  for (size_t st = 0; st < in.stages.size(); ++st) {
    auto& list = out.stages[st];
    for (const Action& a : in.stages[st]) {
      const int s = a.stage, m = a.micro_batch;
      if (a.kind == ActionKind::kForward) {
        if (s > 0) list.push_back({s, ActionKind::kRecvF, m});
        list.push_back(a);
        if (s < last) list.push_back({s, ActionKind::kSendF, m});
      } else if (a.kind == ActionKind::kBackward) {
        if (s < last) list.push_back({s, ActionKind::kRecvB, m});
        list.push_back(a);
        if (s > 0) list.push_back({s, ActionKind::kSendB, m});
      } else {
        list.push_back(a);
      }
    }
  }
  return out;
}

// ---- Validation ------------------------------------------------------------------------------

std::vector<std::string> validate(const Schedule& sch) {
  std::vector<std::string> errs;
  const int S = sch.num_stages, M = sch.num_micro_batches;
  if (S < 1) errs.push_back("expected at least one stage, got " + std::to_string(S));
  if (M < 1) errs.push_back("expected at least one micro-batch, got " + std::to_string(M));
  if (static_cast<int>(sch.stages.size()) != S)
    errs.push_back("expected " + std::to_string(S) + " stage lists, got " + std::to_string(sch.stages.size()));
  if (!errs.empty()) return errs;
  const bool lowered = has_communication(sch);
  std::multiset<std::tuple<int, int, int>> sends, recvs;  // keyed by the receive they pair with
  for (int st = 0; st < S; ++st) {
    const auto& list = sch.stages[st];
    const std::string where = "stage " + std::to_string(st) + ": ";
    std::map<std::pair<int, int>, int> first_index;  // (kind, mb) -> position
    int opt_count = 0;
    for (size_t i = 0; i < list.size(); ++i) {
      const Action& a = list[i];
      const std::string at = where + to_string(a) + " (index " + std::to_string(i) + ") ";
      if (a.stage != st) errs.push_back(at + "is in stage " + std::to_string(st) + "'s list");
      if (a.kind == ActionKind::kOptimizer) {
        ++opt_count;
        if (i + 1 != list.size()) errs.push_back(at + "is not the last action");
        continue;
      }
      if (a.micro_batch < 0 || a.micro_batch >= M) {
        errs.push_back(at + "has micro-batch outside [0, " + std::to_string(M) + ")");
        continue;
      }
      auto key = std::make_pair(static_cast<int>(a.kind), a.micro_batch);
      if (first_index.count(key)) {
        errs.push_back(at + "appears more than once");
        continue;
      }
      first_index[key] = static_cast<int>(i);
      if ((a.kind == ActionKind::kSendF || a.kind == ActionKind::kRecvB) && st == S - 1)
        errs.push_back(at + "on the last stage has no next stage");
      if ((a.kind == ActionKind::kSendB || a.kind == ActionKind::kRecvF) && st == 0)
        errs.push_back(at + "on the first stage has no previous stage");
      if (a.kind == ActionKind::kSendF || a.kind == ActionKind::kSendB) {
        Action r = peer_of_send(a);
        sends.insert({r.stage, static_cast<int>(r.kind), r.micro_batch});
      } else if (a.kind == ActionKind::kRecvF || a.kind == ActionKind::kRecvB) {
        recvs.insert({a.stage, static_cast<int>(a.kind), a.micro_batch});
      }
    }
    if (opt_count != 1)
      errs.push_back(where + "expected exactly one OPT, got " + std::to_string(opt_count));
    auto pos = [&](ActionKind k, int m) {
      auto it = first_index.find({static_cast<int>(k), m});
      return it == first_index.end() ? -1 : it->second;
    };
    for (int m = 0; m < M; ++m) {
      const std::string mb = std::to_string(m);
      int f = pos(ActionKind::kForward, m), b = pos(ActionKind::kBackward, m);
      if (f < 0) errs.push_back(where + "missing F" + mb);
      if (b < 0) errs.push_back(where + "missing B" + mb);
      if (f >= 0 && b >= 0 && b < f) errs.push_back(where + "B" + mb + " runs before F" + mb);
      if (!lowered) continue;
      auto need = [&](ActionKind k, bool before, int compute, const char* cname) {
        int p = pos(k, m);
        std::string name = std::string(action_kind_name(k)) + mb;
        if (p < 0) {
          errs.push_back(where + "missing " + name);
        } else if (compute >= 0 && (before ? p > compute : p < compute)) {
          errs.push_back(where + name + (before ? " comes after " : " comes before ") + cname + mb);
        }
      };
      if (st > 0) need(ActionKind::kRecvF, true, f, "F");
      if (st < S - 1) need(ActionKind::kSendF, false, f, "F");
      if (st < S - 1) need(ActionKind::kRecvB, true, b, "B");
      if (st > 0) need(ActionKind::kSendB, false, b, "B");
    }
  }
  for (const auto& r : recvs)
    if (!sends.count(r))
      errs.push_back(to_string({std::get<0>(r), static_cast<ActionKind>(std::get<1>(r)), std::get<2>(r)}) +
                     " has no matching send");
  for (const auto& s : sends)
    if (!recvs.count(s))
      errs.push_back("send to " + to_string({std::get<0>(s), static_cast<ActionKind>(std::get<1>(s)), std::get<2>(s)}) +
                     " has no matching receive");
  return errs;
}

// ---- Dry run ---------------------------------------------------------------------------------

std::string SimulationResult::message() const {
  if (completed) return "completed (" + std::to_string(steps) + " actions)";
  std::string s = "deadlock after " + std::to_string(steps) + " actions:";
  for (const auto& b : blocked) s += "\n  " + b;
  return s;
}

SimulationResult simulate(const Schedule& sch) {
  SimulationResult res;
  const int S = static_cast<int>(sch.stages.size());
  std::vector<size_t> pc(S, 0);
  std::set<std::tuple<int, int, int>> delivered;  // sends executed, keyed by their receive
  bool progress = true;
  while (progress) {
    progress = false;
    for (int st = 0; st < S; ++st) {
      const auto& list = sch.stages[st];
      while (pc[st] < list.size()) {
        const Action& a = list[pc[st]];
        if (a.kind == ActionKind::kRecvF || a.kind == ActionKind::kRecvB) {
          auto it = delivered.find({a.stage, static_cast<int>(a.kind), a.micro_batch});
          if (it == delivered.end()) break;
          delivered.erase(it);
        } else if (a.kind == ActionKind::kSendF || a.kind == ActionKind::kSendB) {
          Action r = peer_of_send(a);
          delivered.insert({r.stage, static_cast<int>(r.kind), r.micro_batch});
        }
        ++pc[st];
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
    if (!is_comm(list[i])) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < list.size() && is_comm(list[j])) ++j;
    groups.emplace_back(i, j);
    i = j;
  }
  return groups;
}

SimulationResult simulate_rendezvous(const Schedule& sch, bool group_adjacent) {
  SimulationResult res;
  const int S = static_cast<int>(sch.stages.size());
  // pc: next action; a stage at a comm group has issued all of the group's operations and stays
  // there until every one of them has met its peer's operation, itself issued (in the peer's group).
  std::vector<size_t> pc(S, 0), group_end(S, 0);
  std::vector<std::vector<bool>> matched(S);
  std::vector<std::vector<size_t>> group_end_of(S);  // comm action index -> end of its comm_groups() run
  for (int st = 0; st < S; ++st) {
    matched[st].assign(sch.stages[st].size(), false);
    group_end_of[st].assign(sch.stages[st].size(), 0);
    for (const auto& [b, e] : comm_groups(sch.stages[st]))
      for (size_t i = b; i < e; ++i) group_end_of[st][i] = e;
  }
  auto issued = [&](int st, const Action& op, size_t* index) {
    if (st < 0 || st >= S || group_end[st] <= pc[st]) return false;
    for (size_t i = pc[st]; i < group_end[st]; ++i)
      if (sch.stages[st][i] == op && !matched[st][i]) {
        *index = i;
        return true;
      }
    return false;
  };
  bool progress = true;
  while (progress) {
    progress = false;
    for (int st = 0; st < S; ++st) {
      const auto& list = sch.stages[st];
      while (pc[st] < list.size()) {
        if (!is_comm(list[pc[st]])) {
          ++pc[st];
          ++res.steps;
          progress = true;
          continue;
        }
        if (group_end[st] <= pc[st]) {  // issue the whole group (or, without groups, one operation)
          group_end[st] = group_adjacent ? group_end_of[st][pc[st]] : pc[st] + 1;
          progress = true;
        }
        for (size_t i = pc[st]; i < group_end[st]; ++i) {
          const Action& a = list[i];
          if (matched[st][i] || (a.kind != ActionKind::kSendF && a.kind != ActionKind::kSendB)) continue;
          const Action r = peer_of_send(a);
          size_t ri = 0;
          if (issued(r.stage, r, &ri)) {
            matched[st][i] = matched[r.stage][ri] = true;
            res.steps += 2;
            progress = true;
          }
        }
        bool done = true;
        for (size_t i = pc[st]; i < group_end[st]; ++i) done = done && matched[st][i];
        if (!done) break;
        pc[st] = group_end[st];
      }
    }
  }
  report_blocked(sch, pc, group_end, res);
  return res;
}

void check_schedule(const Schedule& lowered, const std::string& source) {
  std::vector<std::string> errs = validate(lowered);
  if (errs.empty() && !has_communication(lowered) && lowered.num_stages > 1)
    errs.push_back("schedule has no sends/receives; lower it first");
  if (errs.empty()) {
    SimulationResult r = simulate(lowered);
    if (!r.completed) errs.push_back(r.message());
  }
  if (errs.empty()) return;
  std::string msg;
  for (const auto& e : errs) msg += (msg.empty() ? "" : "; ") + e;
  msg += "\nschedule:\n" + format_schedule(lowered);
  throw InputError(source, "schedule", msg);
}

Schedule prepare_schedule(const Schedule& schedule, const std::string& source) {
  Schedule lowered = has_communication(schedule) ? schedule : lower(schedule);
  check_schedule(lowered, source);
  return lowered;
}

// ---- Text form -------------------------------------------------------------------------------

std::string format_actions(const std::vector<Action>& actions) {
  std::string s;
  for (const auto& a : actions) {
    if (!s.empty()) s += ' ';
    s += to_string(a);
  }
  return s;
}

std::string format_schedule(const Schedule& schedule) {
  std::string s;
  for (const auto& list : schedule.stages) s += format_actions(list) + "\n";
  return s;
}

Schedule parse_schedule(const std::string& text, const std::string& source) {
  std::vector<Diagnostic> diags;
  std::vector<Action> all;
  std::istringstream in(text);
  std::string line;
  int line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    size_t hash = line.find('#');
    if (hash != std::string::npos) line.resize(hash);
    std::istringstream words(line);
    std::string tok;
    while (words >> tok) {
      const std::string where = "line " + std::to_string(line_no) + ": \"" + tok + "\"";
      size_t i = 0;
      while (i < tok.size() && std::isdigit(static_cast<unsigned char>(tok[i]))) ++i;
      size_t j = i;
      while (j < tok.size() && (std::isupper(static_cast<unsigned char>(tok[j])) || tok[j] == '_')) ++j;
      const std::string stage_s = tok.substr(0, i), kind_s = tok.substr(i, j - i), mb_s = tok.substr(j);
      bool digits_ok = std::all_of(mb_s.begin(), mb_s.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); });
      const ActionKind* kind = nullptr;
      for (const ActionKind& k : kAllKinds)
        if (kind_s == action_kind_name(k)) kind = &k;
      if (stage_s.empty() || !kind || !digits_ok || stage_s.size() > 6 || mb_s.size() > 6) {
        diags.push_back({source, where, "expected <stage><F|B|SEND_F|RECV_F|SEND_B|RECV_B|OPT><micro-batch>, e.g. 2SEND_F0"});
        continue;
      }
      Action a{std::stoi(stage_s), *kind, -1};
      if (*kind == ActionKind::kOptimizer) {
        if (!mb_s.empty()) diags.push_back({source, where, "OPT takes no micro-batch"});
      } else if (mb_s.empty()) {
        diags.push_back({source, where, std::string(action_kind_name(*kind)) + " needs a micro-batch"});
        continue;
      } else {
        a.micro_batch = std::stoi(mb_s);
      }
      all.push_back(a);
    }
  }
  if (all.empty() && diags.empty()) diags.push_back({source, "", "no actions found"});
  if (!diags.empty()) throw InputError(diags);
  Schedule s;
  for (const auto& a : all) {
    s.num_stages = std::max(s.num_stages, a.stage + 1);
    s.num_micro_batches = std::max(s.num_micro_batches, a.micro_batch + 1);
  }
  s.stages.resize(s.num_stages);
  for (const auto& a : all) s.stages[a.stage].push_back(a);
  return s;
}

Schedule load_schedule_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw InputError(path, "", "cannot open schedule file");
  std::ostringstream ss;
  ss << f.rdbuf();
  return parse_schedule(ss.str(), path);
}

}  // namespace geopipe::runtime
