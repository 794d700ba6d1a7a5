// The runtime's MPI message tags, in one place: forward activations, their gradients, evaluation
// activations, trace gathering and text generation never share a tag. A micro-batch's message
// uses base + micro-batch, so each base leaves kMaxMicroBatches tags free above it.
#pragma once

namespace geopipe::runtime {

inline constexpr int kMaxMicroBatches = 8192;
inline constexpr int kTagForward = 0;
inline constexpr int kTagBackward = kTagForward + kMaxMicroBatches;
inline constexpr int kTagEval = kTagBackward + kMaxMicroBatches;
inline constexpr int kTagTrace = kTagEval + kMaxMicroBatches;
inline constexpr int kTagSample = kTagTrace + 1;

}  // namespace geopipe::runtime
