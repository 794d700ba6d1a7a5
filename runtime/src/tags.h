// The runtime's MPI message tags, in one place: forward activations, their gradients, evaluation
// activations, trace gathering and text generation never share a tag. Each of the first three
// kinds has kMaxMicroBatches tags: one per (stage boundary, micro-batch) of a step (message_tag).
#pragma once

namespace geopipe::runtime {

inline constexpr int kMaxMicroBatches = 8192;
inline constexpr int kTagForward = 0;
inline constexpr int kTagBackward = kTagForward + kMaxMicroBatches;
inline constexpr int kTagEval = kTagBackward + kMaxMicroBatches;
inline constexpr int kTagTrace = kTagEval + kMaxMicroBatches;
inline constexpr int kTagSample = kTagTrace + 1;

// The tag of micro-batch `mb`'s message across stage boundary `boundary` (between stages boundary
// and boundary + 1) in a step of `micro_batches`: with several stages per rank two ranks exchange
// messages of several boundaries in one step, and MPI matches by (peer, tag) only.
// boundaries * micro_batches must not exceed kMaxMicroBatches (the executor checks).
inline int message_tag(int base, int boundary, int micro_batches, int mb) { return base + boundary * micro_batches + mb; }

}  // namespace geopipe::runtime
