// AdamW (PyTorch's formula, decoupled weight decay on matrices only, as nanoGPT), the learning-rate
// schedule (linear warm-up, cosine decay to min_lr) and gradient clipping by global norm.
#pragma once

#include <geopipe/runtime/gpt.h>

#include <cstdint>
#include <string>
#include <vector>

namespace geopipe::runtime {

struct OptimConfig {
  double lr = 1e-3;
  double min_lr = 1e-4;
  int64_t warmup_steps = 20;
  int64_t decay_steps = 1000;  // cosine reaches min_lr here (usually the run's length)
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8;
  double weight_decay = 0.1;
  double grad_clip = 1.0;  // <= 0: no clipping
};

// Learning rate at `step` (0-based): warm-up from lr/warmup to lr, then cosine to min_lr.
double learning_rate(const OptimConfig& config, int64_t step);

// A contiguous range of one parameter's elements (flattened): what a replica updates under
// ZeRO-1 (runtime/src/grad_reducer.h shards each gradient bucket into such slices).
struct ParamSlice {
  NamedTensor param;
  int64_t begin = 0, length = 0;
  bool whole() const { return begin == 0 && length == param.tensor.numel(); }
  std::string name() const;  // "<param>" when whole, else "<param>[begin:end]"
};

class AdamW {
 public:
  AdamW(std::vector<NamedTensor> params, const OptimConfig& config);  // every parameter whole
  // ZeRO-1: state and updates for these slices only (the rest of each parameter is another
  // replica's); their gradients are passed to step().
  AdamW(std::vector<ParamSlice> slices, const OptimConfig& config);
  // One update with learning rate `lr` using the parameters' current .grad (scaled by
  // grad_scale first, for clipping). Parameters without a gradient are skipped. `slice_grads`
  // (ZeRO-1): the gradient of each slice instead, in slice order, flat.
  void step(double lr, double grad_scale = 1.0, const std::vector<at::Tensor>* slice_grads = nullptr);
  void zero_grad();
  int64_t steps_taken() const { return t_; }
  int64_t state_bytes() const;  // the moments' bytes (what ZeRO-1 divides by the replicas)

  // State for checkpoints: "exp_avg.<slice name>" and "exp_avg_sq.<slice name>" per slice.
  std::vector<NamedTensor> state() const;
  // Restores state() output and the step count; a slice's state may also come from its whole
  // parameter's entry (a checkpoint written with other shards). Throws Error naming a
  // missing/mismatched entry.
  void load_state(const std::vector<NamedTensor>& state, int64_t steps_taken, const std::string& source);

 private:
  std::vector<ParamSlice> slices_;
  std::vector<at::Tensor> m_, v_;
  OptimConfig config_;
  int64_t t_ = 0;
};

// Sum of squared gradient entries per parameter unit of this stage, in double: (unit, value).
// The global norm is the square root of the sum over ALL stages' units taken in unit order, so
// every split of the model gives the same number.
std::vector<std::pair<int, double>> unit_grad_sq_norms(const GptStage& stage);
double global_norm(std::vector<std::pair<int, double>> all_units);  // sorts by unit, sums, sqrt
// Factor to multiply gradients by: min(1, max_norm / (norm + 1e-6)); 1 when max_norm <= 0.
double clip_scale(double norm, double max_norm);

}  // namespace geopipe::runtime
