// One stage's compute per micro-batch, for the action interpreter: F, the full backward B, the
// split backward I (input gradient) + W (weight gradients, later) of zero-bubble schedules, and
// activation recomputation. It owns every micro-batch's state from its F to its B or W.
// Memory formulas and the choice of what W defers: docs/ARCHITECTURE.md ("stage_compute.h").
#pragma once

#include <geopipe/runtime/gpt.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace geopipe::runtime {

// What a micro-batch keeps between F and its backward.
enum class Recompute {
  kNone,  // the whole autograd graph (all saved activations)
  kFull,  // only each block's input (and the head's); the backward recomputes block by block
};
Recompute parse_recompute(const std::string& text);  // "none" | "full"; InputError names --recompute
const char* recompute_name(Recompute r);

// The deferred weight-gradient work of one micro-batch: for each linear layer that ran its input
// gradient in I, the (input, output gradient) pair W turns into grad_W and grad_b.
class WeightGradStash {
 public:
  // false (B): a linear's backward computes all its gradients at once, exactly as at::linear's
  // autograd does. true (I): it computes only the input gradient and stashes the rest.
  bool defer = false;

  struct Entry {
    at::Tensor input;        // [N, in], in the dtype the layer computed in (bf16 under autocast)
    at::Tensor grad_output;  // [N, out], same dtype
    at::Tensor weight, bias; // the parameters (bias undefined for lm_head)
  };
  void push(Entry e);
  // grad_W += grad_out^T input and grad_b += sum_rows(grad_out) into the parameters' .grad, as
  // autograd's accumulation would (set when undefined, else add in place); then forgets them.
  // `accumulated` (when set) is told of each parameter right after its gradient was added, as
  // autograd's accumulation hooks are (the replicas' gradient buckets start on it).
  void apply_and_clear(const std::function<void(const at::Tensor&)>& accumulated = {});
  int64_t bytes() const;  // the distinct storages of the stashed inputs and output gradients

 private:
  mutable std::mutex mutex_;  // a CUDA backward runs on the engine's device thread
  std::vector<Entry> entries_;
};

// y = x W^T + b with the same forward as at::linear, whose backward consults `stash` (see defer).
// GptStage routes its linear layers here when given a stash; without one it calls at::linear.
at::Tensor deferrable_linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                             WeightGradStash* stash);

class StageCompute {
 public:
  StageCompute(const GptStage& model, Recompute recompute);

  // F. First stage: token ids [B, T]; others: the previous stage's output (not modified). Last
  // stage: `targets` [B, T] are required and the result is the micro-batch's loss divided by
  // `loss_divisor` (the number of micro-batches, as the executor's reported sum); other stages
  // return their output, detached (send it; the graph stays here). Runs under the caller's autocast
  // state, which recomputation restores.
  at::Tensor forward(int mb, const at::Tensor& input, const at::Tensor& targets = {}, double loss_divisor = 1.0);
  // B: all gradients of micro-batch mb into the parameters' .grad; returns the gradient of the
  // stage input (undefined on the first stage). `grad_output`: the next stage's gradient of my
  // output; ignored on the last stage (it differentiates its loss). Frees the micro-batch.
  at::Tensor backward(int mb, const at::Tensor& grad_output = {});
  // I: the same input gradient as B, and the gradients of the parameters that are not in a linear
  // layer (LayerNorms, embeddings); each linear's (input, output gradient) is kept for W.
  at::Tensor backward_input(int mb, const at::Tensor& grad_output = {});
  // W: the linear layers' weight and bias gradients of micro-batch mb; frees the micro-batch.
  void backward_weight(int mb);
  // Told of every parameter W accumulates a gradient into (WeightGradStash::apply_and_clear);
  // B and I accumulate through autograd, whose hooks the gradient reducer registers itself.
  void set_weight_grad_observer(std::function<void(const at::Tensor&)> observer) { observer_ = std::move(observer); }

  // Bytes micro-batch mb holds now (0 when it holds nothing): exact for the tensors kept here
  // (input, block inputs, stash); for a live autograd graph (recompute none, F to B/I) an estimate
  // from the documented per-block formula (fp32; an upper bound of what malloc holds, tested).
  // Summed over micro-batches by live_bytes().
  int64_t live_bytes(int mb) const;
  int64_t live_bytes() const;
  // The estimate used for one micro-batch's autograd graph with recompute none (fp32 activations).
  int64_t graph_bytes_estimate(int64_t batch, int64_t seq) const;
  // Recompute full: the largest graph micro-batch mb's backward rebuilds at once (one block's, or
  // the head's on the last stage), by the same estimate; 0 without recomputation or micro-batch.
  int64_t rebuild_bytes(int mb) const;
  std::vector<int> micro_batches() const;  // those F'd and not yet freed, ascending

 private:
  enum class Phase { kForwarded, kInputDone };
  struct MicroBatch {
    Phase phase = Phase::kForwarded;
    at::Tensor tokens;                // first stage: token ids (graph input of the embedding)
    at::Tensor input;                 // other stages: leaf whose .grad is the input gradient
    at::Tensor root;                  // recompute none: the output or loss the backward starts from
    std::vector<at::Tensor> kept;     // recompute full: each block's input, then the head's
    at::Tensor targets;               // last stage
    double loss_divisor = 1.0;
    std::vector<int64_t> output_sizes;  // other stages: what a gradient of the output must match
    int64_t graph_estimate = 0;       // recompute none, until the graph is released
    bool autocast = false;            // the autocast mode F ran under, for recomputation
    at::ScalarType autocast_dtype = at::kBFloat16;
    std::unique_ptr<WeightGradStash> stash = std::make_unique<WeightGradStash>();
  };

  MicroBatch& state(int mb, const char* action, Phase expected);
  std::string where(int mb, const char* action) const;
  at::Tensor run_backward(int mb, MicroBatch& s, const at::Tensor& grad_output, bool defer);  // defer: I
  at::Tensor forward_recomputable(MicroBatch& s, const at::Tensor& input);
  at::Tensor backward_recomputed(MicroBatch& s, const at::Tensor& grad_output);
  at::Tensor loss_of(const at::Tensor& logits, const MicroBatch& s) const;

  const GptStage& model_;
  Recompute recompute_;
  std::map<int, MicroBatch> live_;
  std::function<void(const at::Tensor&)> observer_;
};

}  // namespace geopipe::runtime
