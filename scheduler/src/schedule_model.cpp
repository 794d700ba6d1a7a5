#include <geopipe/core/error.h>
#include <geopipe/scheduler/schedule_model.h>

#include <algorithm>
#include <limits>
#include <map>
#include <tuple>

namespace geopipe::scheduler {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

using MessageKey = std::tuple<int, int, int>;  // (receiving stage, receive kind, micro-batch)

// Replay state: per rank the next action and its clock; per directed link when it is free; per
// message when it is delivered; per compute slot when it is free.
struct Replay {
  const Schedule& s;
  const std::vector<ChunkCost>& chunks;
  const std::vector<BoundaryCost>& boundaries;
  std::vector<size_t> next;
  std::vector<double> clock;
  std::vector<double> compute;
  std::map<std::pair<int, int>, double> link_free;
  std::map<MessageKey, double> delivered;
  std::vector<double> slots;

  double duration(const Action& a) const {
    const ChunkCost& c = chunks.at(static_cast<size_t>(a.stage));
    switch (a.kind) {
      case ActionKind::kForward: return c.forward_s;
      case ActionKind::kBackward: return c.backward_s;
      case ActionKind::kInputGrad: return c.input_grad_s;
      case ActionKind::kWeightGrad: return c.weight_grad_s;
      default: return 0;
    }
  }
  static bool is_compute(ActionKind k) {
    return k == ActionKind::kForward || k == ActionKind::kBackward || k == ActionKind::kInputGrad ||
           k == ActionKind::kWeightGrad;
  }
  size_t earliest_slot() const { return static_cast<size_t>(std::min_element(slots.begin(), slots.end()) - slots.begin()); }

  // The message a compute action consumes from another rank: F of stage s the activations of
  // s - 1, B or I of stage s the gradient from s + 1. false when its input is on this rank.
  bool input_message(int r, const Action& a, MessageKey* key) const {
    const int N = s.num_stages;
    if (a.kind == ActionKind::kForward && a.stage > 0 && s.stage_rank[a.stage - 1] != r) {
      *key = {a.stage, static_cast<int>(ActionKind::kRecvF), a.micro_batch};
      return true;
    }
    if ((a.kind == ActionKind::kBackward || a.kind == ActionKind::kInputGrad) && a.stage + 1 < N &&
        s.stage_rank[a.stage + 1] != r) {
      *key = {a.stage, static_cast<int>(ActionKind::kRecvB), a.micro_batch};
      return true;
    }
    return false;
  }

  // When rank r's next action can start; kInf when it waits for a message not yet sent. A RECV
  // only posts the receive (the runtime posts them all at the step's start); the compute that
  // consumes the message waits for it.
  double start_of(int r) const {
    const Action& a = s.ranks[r][next[r]];
    if (!is_compute(a.kind)) return clock[r];
    double t = clock[r];
    MessageKey key;
    if (input_message(r, a, &key)) {
      auto it = delivered.find(key);
      if (it == delivered.end()) return kInf;
      t = std::max(t, it->second);
    }
    if (!slots.empty()) t = std::max(t, slots[earliest_slot()]);
    return t;
  }

  void send(int r, const Action& a) {
    const bool fwd = a.kind == ActionKind::kSendF;
    const int to_stage = fwd ? a.stage + 1 : a.stage - 1;
    const BoundaryCost& b = boundaries.at(static_cast<size_t>(fwd ? a.stage : a.stage - 1));
    const double xfer = fwd ? b.forward_xfer_s : b.backward_xfer_s;
    double& free_at = link_free[{r, s.stage_rank.at(static_cast<size_t>(to_stage))}];
    const double begin = std::max(clock[r], free_at);
    free_at = begin + xfer;
    const int recv = static_cast<int>(fwd ? ActionKind::kRecvF : ActionKind::kRecvB);
    delivered[{to_stage, recv, a.micro_batch}] = begin + xfer + b.latency_s;
  }

  void run(int r, double start) {
    const Action& a = s.ranks[r][next[r]++];
    if (is_compute(a.kind)) {
      const double d = duration(a);
      clock[r] = start + d;
      compute[r] += d;
      if (!slots.empty()) slots[earliest_slot()] = clock[r];
    } else if (a.kind == ActionKind::kSendF || a.kind == ActionKind::kSendB) {
      send(r, a);
    }  // RECV (posted) and OPT (the model gives it no time) take no time
  }
};

}  // namespace

ScheduleTiming time_schedule(const Schedule& lowered, const std::vector<ChunkCost>& chunks,
                             const std::vector<BoundaryCost>& boundaries, int shared_compute_slots) {
  if (static_cast<int>(chunks.size()) != lowered.num_stages ||
      static_cast<int>(boundaries.size()) + 1 < lowered.num_stages)
    throw InputError("schedule", "costs", "time_schedule needs one cost per stage chunk and per boundary");
  const int R = lowered.num_ranks;
  Replay p{lowered, chunks, boundaries, std::vector<size_t>(R, 0), std::vector<double>(R, 0.0),
           std::vector<double>(R, 0.0), {}, {}, {}};
  if (shared_compute_slots > 0 && shared_compute_slots < R) p.slots.assign(shared_compute_slots, 0.0);
  for (;;) {
    int best = -1;
    double best_start = kInf;
    bool left = false;
    for (int r = 0; r < R; ++r) {
      if (p.next[r] >= lowered.ranks[r].size()) continue;
      left = true;
      const double t = p.start_of(r);
      if (t < best_start) best_start = t, best = r;
    }
    if (!left) break;
    if (best < 0) {
      std::string why;
      for (int r = 0; r < R; ++r)
        if (p.next[r] < lowered.ranks[r].size())
          why += (why.empty() ? "" : ", ") + std::string("rank ") + std::to_string(r) + " at " +
                 to_string(lowered.ranks[r][p.next[r]]);
      throw InputError("schedule", "actions", "the schedule deadlocks when timed: " + why);
    }
    p.run(best, best_start);
  }
  ScheduleTiming t;
  t.rank_end_s = p.clock;
  t.rank_compute_s = p.compute;
  t.iteration_s = R > 0 ? *std::max_element(p.clock.begin(), p.clock.end()) : 0.0;
  t.peak_activations = peak_in_flight(lowered);
  return t;
}

}  // namespace geopipe::scheduler
