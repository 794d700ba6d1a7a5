// The time and the activation memory of one concrete schedule (core/schedule.h): the action lists
// the runtime will run, replayed with the cost model's durations. Where pipeline_timing() has a
// closed form for the 1F1B family, this replays any schedule (interleaved, ZB-H1, ZB-V, a user's
// file), so every kind is predicted the same way. Method and measured accuracy: docs/SCHEDULER.md
// ("Timing a schedule").
#pragma once

#include <geopipe/core/schedule.h>

#include <vector>

namespace geopipe::scheduler {

// Seconds of one micro-batch through one stage chunk.
struct ChunkCost {
  double forward_s = 0;
  double backward_s = 0;     // B
  double input_grad_s = 0;   // I
  double weight_grad_s = 0;  // W
};

// Boundary s: stage chunk s -> s + 1. Used only when the two chunks are on different ranks.
struct BoundaryCost {
  double forward_xfer_s = 0;   // activations: bytes / bandwidth
  double backward_xfer_s = 0;  // their gradients
  double latency_s = 0;        // one way
};

struct ScheduleTiming {
  double iteration_s = 0;                // the last rank's end
  std::vector<double> rank_end_s;        // when each rank finishes its list
  std::vector<double> rank_compute_s;    // compute seconds per rank
  std::vector<int> peak_activations;     // peak_in_flight() per rank
};

// Replays a lowered schedule (one entry per stage in `chunks`, per boundary in `boundaries`):
// each rank runs its list in order; a compute action takes its chunk's time; a SEND costs the
// sender nothing (asynchronous) and queues the message on its directed rank-to-rank link, which
// carries one message at a time (each direction on its own, as full-duplex links do) and delivers
// it `latency_s` after its last byte; a RECV only posts (the runtime posts every receive of a step
// at its start) and the compute that consumes the message waits for its delivery. With 0 < shared_compute_slots
// < ranks, compute actions also wait for one of that many slots (ranks sharing one host's cores),
// taken in the order the actions become ready. InputError when the lists deadlock.
ScheduleTiming time_schedule(const Schedule& lowered, const std::vector<ChunkCost>& chunks,
                             const std::vector<BoundaryCost>& boundaries, int shared_compute_slots = 0);

}  // namespace geopipe::scheduler
