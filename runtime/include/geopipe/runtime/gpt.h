// A GPT-2 / nanoGPT model cut into pipeline stages. Written with ATen ops only (linear,
// layer_norm, tanh-GELU, causal attention from matmul + softmax) so it builds against LibTorch
// 1.13 and 2.x alike.
//
// - Parameter names are nanoGPT's ("transformer.wte.weight", "transformer.h.3.attn.c_attn.weight",
//   "lm_head.weight", ...), with PyTorch's Linear layout [out, in]; a stage owns the blocks of its
//   layer range with their global indices.
// - The first stage owns wte and wpe; the last owns ln_f and lm_head and computes the loss.
//   Embeddings are NOT tied to lm_head (nanoGPT ties them): tying across two ranks would need an
//   extra all-reduce of that gradient every step. lm_head is initialised from its own seed.
// - Initialisation is nanoGPT's (normal 0.02, c_proj weights 0.02/sqrt(2 L), zero biases, unit
//   LayerNorms), each unit drawn from its own generator seeded by (seed, unit): the embedding is
//   unit 0, block i is unit 1 + i, the head is unit L + 1. Any split gives the same numbers.
#pragma once

#include <ATen/ATen.h>

#include <geopipe/core/config.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace geopipe::runtime {

class WeightGradStash;  // stage_compute.h

struct GptConfig {
  int n_layer = 0, n_head = 0, n_embd = 0, block_size = 0, vocab_size = 0;
};
GptConfig gpt_config(const ModelSpec& model);  // checks heads divide d_model etc. (InputError)

struct NamedTensor {
  std::string name;
  at::Tensor tensor;
};

// A parameter group: the unit of initialisation and of the gradient-norm reduction
// ("embedding", "h.0", ..., "head").
struct ParamUnit {
  int unit = 0;  // 0 = embedding, 1 + i = block i, L + 1 = head
  std::vector<NamedTensor> params;
};

// The names and shapes of the parameters a stage of layers [layer_begin, layer_end) owns, in
// named_parameters() order, without building it: what a checkpoint's manifest indexes for every
// stage (checkpoint.h, "tensors"). GptStage's constructor makes the same list (a test checks).
std::vector<std::pair<std::string, std::vector<int64_t>>> stage_parameter_shapes(const GptConfig& config, int layer_begin,
                                                                                 int layer_end, bool first, bool last);

class GptStage {
 public:
  // Builds blocks [layer_begin, layer_end); first/last decide embeddings and head.
  GptStage(const GptConfig& config, int layer_begin, int layer_end, bool first, bool last, uint64_t seed,
           at::Device device = at::kCPU);

  // First stage: token ids [B, T] (int64) -> hidden [B, T, C]. Middle: hidden -> hidden.
  // Last stage: -> logits [B, T, V]. (A single stage does all of it.)
  // With a `stash` the linear layers run through deferrable_linear (stage_compute.h), whose
  // backward can leave the weight gradients for later; without one they are plain at::linear.
  at::Tensor forward(const at::Tensor& input, WeightGradStash* stash = nullptr) const;
  // Mean cross-entropy of logits [B, T, V] against targets [B, T].
  static at::Tensor loss(const at::Tensor& logits, const at::Tensor& targets);

  // Pieces, for the profiler: embedding, one block (global index), head.
  at::Tensor embed(const at::Tensor& tokens) const;
  at::Tensor block(int layer, const at::Tensor& x, WeightGradStash* stash = nullptr) const;
  at::Tensor head(const at::Tensor& x, WeightGradStash* stash = nullptr) const;

  const std::vector<ParamUnit>& units() const { return units_; }
  std::vector<NamedTensor> named_parameters() const;  // all units, in order
  int64_t num_parameters() const;
  const GptConfig& config() const { return config_; }
  bool is_first() const { return first_; }
  bool is_last() const { return last_; }
  int layer_begin() const { return layer_begin_; }
  int layer_end() const { return layer_end_; }
  at::Device device() const { return device_; }

 private:
  const at::Tensor& p(const std::string& name) const;
  GptConfig config_;
  int layer_begin_, layer_end_;
  bool first_, last_;
  at::Device device_;
  std::vector<ParamUnit> units_;
  std::vector<std::pair<std::string, at::Tensor>> by_name_;  // sorted by name for lookup
};

}  // namespace geopipe::runtime
