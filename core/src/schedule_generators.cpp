// Compute-only schedule generators: GPipe, 1F1B (plain and latency-hiding warm-ups), Megatron's
// interleaved 1F1B, ZB-H1 and ZB-V. lower() adds the communication.
#include <geopipe/core/error.h>
#include <geopipe/core/schedule.h>

#include <algorithm>
#include <deque>
#include <map>
#include <tuple>

namespace geopipe {

namespace {

void check_shape(int num_ranks, int num_micro_batches, const char* who) {
  if (num_ranks < 1)
    throw InputError(who, "num_ranks", "expected at least 1 rank, got " + std::to_string(num_ranks));
  if (num_micro_batches < 1)
    throw InputError(who, "num_micro_batches",
                     "expected at least 1 micro-batch, got " + std::to_string(num_micro_batches));
}

Schedule empty_schedule(int num_ranks, int num_micro_batches, std::vector<int> stage_rank) {
  Schedule s;
  s.num_ranks = num_ranks;
  s.num_stages = static_cast<int>(stage_rank.size());
  s.num_micro_batches = num_micro_batches;
  s.stage_rank = std::move(stage_rank);
  s.ranks.resize(num_ranks);
  return s;
}

void append_optimizer(Schedule& s) {
  for (int r = 0; r < s.num_ranks; ++r) s.ranks[r].push_back({r, ActionKind::kOptimizer, -1});
}

// Unit-time list scheduling for split backward (F = I = W = 1 time step, free links): each rank
// follows its `main` order of F and I, running the oldest pending W whenever the next main action
// is not ready yet (a bubble) or is an F that would lift the live activations above cap[r]; the
// W's left at the end run last. Deterministic, and it cannot deadlock when `main` does not.
void fill_weight_passes(Schedule& s, const std::vector<std::vector<Action>>& main, const std::vector<int>& cap) {
  const int R = s.num_ranks;
  std::map<std::tuple<int, int, int>, int> finished;  // (stage, kind, mb) -> time step it ended
  auto done_by = [&](int stage, ActionKind k, int mb, int t) {
    auto it = finished.find({stage, static_cast<int>(k), mb});
    return it != finished.end() && it->second <= t;
  };
  auto ready = [&](const Action& a, int t) {
    if (a.kind == ActionKind::kForward)
      return a.stage == 0 || done_by(a.stage - 1, ActionKind::kForward, a.micro_batch, t);
    if (a.stage + 1 == s.num_stages) return done_by(a.stage, ActionKind::kForward, a.micro_batch, t);
    return done_by(a.stage + 1, ActionKind::kInputGrad, a.micro_batch, t);
  };
  std::vector<size_t> next(R, 0);
  std::vector<std::deque<Action>> pending(R);  // W's owed, oldest first
  std::vector<int> live(R, 0);
  for (int t = 0, left = R; left > 0; ++t) {
    std::vector<Action> ran;
    left = 0;
    for (int r = 0; r < R; ++r) {
      const Action* a = next[r] < main[r].size() ? &main[r][next[r]] : nullptr;
      if (!a && pending[r].empty()) continue;  // this rank is done
      ++left;
      const bool over_cap = a && a->kind == ActionKind::kForward && live[r] >= cap[r];
      Action run;
      if (a && ready(*a, t) && !over_cap) {
        run = *a;
        ++next[r];
        if (run.kind == ActionKind::kForward) ++live[r];
        else pending[r].push_back({run.stage, ActionKind::kWeightGrad, run.micro_batch});
      } else if (!pending[r].empty()) {
        run = pending[r].front();
        pending[r].pop_front();
        --live[r];
      } else {
        continue;  // idle: waiting for a neighbour
      }
      ran.push_back(run);
      s.ranks[r].push_back(run);
    }
    if (left > 0 && ran.empty()) throw Error("split-backward generator: the main order deadlocks");
    for (const Action& a : ran) finished[{a.stage, static_cast<int>(a.kind), a.micro_batch}] = t + 1;
  }
}

}  // namespace

Schedule gpipe_schedule(int num_ranks, int num_micro_batches) {
  check_shape(num_ranks, num_micro_batches, "gpipe schedule");
  Schedule s = empty_schedule(num_ranks, num_micro_batches, stage_ranks(ChunkPlacement::kLooped, num_ranks, 1));
  for (int r = 0; r < num_ranks; ++r) {
    for (int m = 0; m < num_micro_batches; ++m) s.ranks[r].push_back({r, ActionKind::kForward, m});
    for (int m = 0; m < num_micro_batches; ++m) s.ranks[r].push_back({r, ActionKind::kBackward, m});
  }
  append_optimizer(s);
  return s;
}

std::vector<int> one_f_one_b_warmup(int num_ranks) {
  std::vector<int> w(std::max(num_ranks, 0));
  for (int r = 0; r < num_ranks; ++r) w[r] = num_ranks - 1 - r;
  return w;
}

Schedule one_f_one_b_schedule(int num_ranks, int num_micro_batches, const std::vector<int>& warmup) {
  check_shape(num_ranks, num_micro_batches, "1f1b schedule");
  if (static_cast<int>(warmup.size()) != num_ranks)
    throw InputError("1f1b schedule", "warmup",
                     "expected one warm-up depth per rank (" + std::to_string(num_ranks) + "), got " +
                         std::to_string(warmup.size()));
  Schedule s = empty_schedule(num_ranks, num_micro_batches, stage_ranks(ChunkPlacement::kLooped, num_ranks, 1));
  for (int r = 0; r < num_ranks; ++r) {
    if (warmup[r] < 0)
      throw InputError("1f1b schedule", "warmup[" + std::to_string(r) + "]",
                       "expected a depth >= 0, got " + std::to_string(warmup[r]));
    const int w = std::min(warmup[r], num_micro_batches);
    auto& list = s.ranks[r];
    int next_f = 0, next_b = 0;
    for (; next_f < w; ++next_f) list.push_back({r, ActionKind::kForward, next_f});
    while (next_f < num_micro_batches) {  // steady state: one forward, one backward
      list.push_back({r, ActionKind::kForward, next_f++});
      list.push_back({r, ActionKind::kBackward, next_b++});
    }
    while (next_b < num_micro_batches) list.push_back({r, ActionKind::kBackward, next_b++});
  }
  append_optimizer(s);
  return s;
}

Schedule interleaved_1f1b_schedule(int num_ranks, int chunks_per_rank, int num_micro_batches) {
  const int R = num_ranks, V = chunks_per_rank, M = num_micro_batches;
  check_shape(R, M, "interleaved schedule");
  if (V < 1)
    throw InputError("interleaved schedule", "chunks_per_rank", "expected at least 1, got " + std::to_string(V));
  if (V == 1) return one_f_one_b_schedule(R, M, one_f_one_b_warmup(R));
  // Megatron walks micro-batches in groups of R through each chunk; a partial group would leave
  // a chunk waiting for micro-batches that never come, so M must be a multiple of R.
  if (M % R != 0)
    throw InputError("interleaved schedule", "num_micro_batches",
                     "with " + std::to_string(V) + " chunks per rank the micro-batches must be a multiple of the " +
                         std::to_string(R) + " ranks, got " + std::to_string(M));
  Schedule s = empty_schedule(R, M, stage_ranks(ChunkPlacement::kLooped, R, V));
  const int total = M * V;  // (chunk, micro-batch) passes per rank and direction
  // The k-th pass of a rank: chunk (k / R) % V (counted from the last chunk for backward), and
  // micro-batch (k / (R V)) R + k % R, as Megatron's get_model_chunk_id / microbatch id.
  auto pass = [&](int r, int k, bool forward) {
    const int chunk = (k / R) % V;
    const int stage = (forward ? chunk : V - 1 - chunk) * R + r;
    const int mb = (k / (R * V)) * R + k % R;
    return Action{stage, forward ? ActionKind::kForward : ActionKind::kBackward, mb};
  };
  for (int r = 0; r < R; ++r) {
    // Warm-up: enough forwards to fill the other chunks' pipeline, 2 per hop to the last rank.
    const int warmup = std::min((R - r - 1) * 2 + (V - 1) * R, total);
    auto& list = s.ranks[r];
    for (int k = 0; k < warmup; ++k) list.push_back(pass(r, k, true));
    for (int k = 0; k + warmup < total; ++k) {
      list.push_back(pass(r, k + warmup, true));
      list.push_back(pass(r, k, false));
    }
    for (int k = total - warmup; k < total; ++k) list.push_back(pass(r, k, false));
  }
  append_optimizer(s);
  return s;
}

Schedule zb_h1_schedule(int num_ranks, int num_micro_batches) {
  const int R = num_ranks, M = num_micro_batches;
  check_shape(R, M, "zb-h1 schedule");
  Schedule s = empty_schedule(R, M, stage_ranks(ChunkPlacement::kLooped, R, 1));
  // 1F1B's order with I for B; cap = 1F1B's peak (warm-up + 1), so no rank holds more.
  const Schedule base = one_f_one_b_schedule(R, M, one_f_one_b_warmup(R));
  std::vector<std::vector<Action>> main(R);
  std::vector<int> cap(R);
  for (int r = 0; r < R; ++r) {
    for (Action a : base.ranks[r]) {
      if (a.kind == ActionKind::kOptimizer) continue;
      if (a.kind == ActionKind::kBackward) a.kind = ActionKind::kInputGrad;
      main[r].push_back(a);
    }
    cap[r] = std::min(R - r, M);
  }
  fill_weight_passes(s, main, cap);
  append_optimizer(s);
  return s;
}

Schedule zbv_schedule(int num_ranks, int num_micro_batches) {
  const int R = num_ranks, M = num_micro_batches;
  check_shape(R, M, "zbv schedule");
  Schedule s = empty_schedule(R, M, stage_ranks(ChunkPlacement::kVShape, R, 2));
  // The paper's order assumes at least 2R-1 micro-batches to fill the V; with fewer, generate that
  // many and drop the passes of micro-batches that do not exist (their slots are bubbles).
  const int n = std::max(2 * R - 1, M);
  for (int r = 0; r < R; ++r) {
    const int down = r, up = 2 * R - 1 - r;  // the V's descending and ascending chunks
    int f[2] = {0, 0}, in[2] = {0, 0}, w[2] = {0, 0};
    std::vector<Action> list;
    auto F = [&](int c) { list.push_back({c ? up : down, ActionKind::kForward, f[c]++}); };
    auto I = [&](int c) { list.push_back({c ? up : down, ActionKind::kInputGrad, in[c]++}); };
    auto W = [&](int c) { list.push_back({c ? up : down, ActionKind::kWeightGrad, w[c]++}); };
    for (int k = 0; k < 2 * (R - r) - 1; ++k) F(0);  // fill the descending arm
    for (int k = 0; k < r; ++k) F(1), F(0);
    for (int k = 0; k < R - r; ++k) F(1), I(1), W(1);  // the V's tip turns around here
    while (f[1] < f[0] || f[0] < n) {                  // steady: both chunks F, I, W
      if (f[0] < n) F(0);
      I(0), W(0);
      F(1), I(1), W(1);
    }
    for (int k = 0; k < r; ++k) I(0), I(1);  // cool-down: input gradients first, W's fill in
    for (int k = 0; k < R - r; ++k) I(0), W(0);
    while (w[1] < in[1]) W(1);
    while (w[0] < in[0]) W(0);
    for (const Action& a : list)
      if (a.micro_batch < M) s.ranks[r].push_back(a);
  }
  append_optimizer(s);
  return s;
}

Schedule schedule_for(const std::string& kind, int num_ranks, int num_micro_batches, int chunks_per_rank,
                      const std::vector<int>& warmup) {
  const bool multi = kind == "interleaved" || kind == "zbv";
  if (!multi && chunks_per_rank != 1)
    throw InputError("schedule", "chunks_per_rank",
                     "schedule " + kind + " runs one chunk per rank, got " + std::to_string(chunks_per_rank));
  if (kind == "gpipe") return gpipe_schedule(num_ranks, num_micro_batches);
  if (kind == "1f1b") return one_f_one_b_schedule(num_ranks, num_micro_batches, one_f_one_b_warmup(num_ranks));
  if (kind == "1f1b-lh")
    return one_f_one_b_schedule(num_ranks, num_micro_batches,
                                warmup.empty() ? one_f_one_b_warmup(num_ranks) : warmup);
  if (kind == "interleaved") return interleaved_1f1b_schedule(num_ranks, chunks_per_rank, num_micro_batches);
  if (kind == "zb-h1") return zb_h1_schedule(num_ranks, num_micro_batches);
  if (kind == "zbv") {
    if (chunks_per_rank != 1 && chunks_per_rank != 2)
      throw InputError("schedule", "chunks_per_rank", "zbv runs 2 chunks per rank, got " + std::to_string(chunks_per_rank));
    return zbv_schedule(num_ranks, num_micro_batches);
  }
  throw InputError("schedule", "kind",
                   "expected gpipe, 1f1b, 1f1b-lh, interleaved, zb-h1 or zbv, got \"" + kind + "\"");
}

}  // namespace geopipe
