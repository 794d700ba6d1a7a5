#include <geopipe/core/error.h>
#include <geopipe/runtime/data.h>
#include <geopipe/runtime/gpt.h>
#include <geopipe/runtime/stage_compute.h>

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>

namespace geopipe::runtime {

GptConfig gpt_config(const ModelSpec& m) {
  std::vector<Diagnostic> d;
  if (m.layers < 1) d.push_back({"job", "model.layers", "expected >= 1"});
  if (m.d_model < 1 || m.heads < 1 || m.d_model % std::max(m.heads, 1) != 0)
    d.push_back({"job", "model.heads", "expected heads >= 1 dividing d_model"});
  if (m.seq_len < 1) d.push_back({"job", "model.seq_len", "expected >= 1"});
  if (m.vocab < 1 || m.vocab > 65536) d.push_back({"job", "model.vocab", "expected 1..65536 (uint16 tokens)"});
  if (!d.empty()) throw InputError(d);
  return {m.layers, m.heads, m.d_model, m.seq_len, m.vocab};
}

namespace {

// A unit's generator: the same numbers whatever the split and whichever rank draws them.
at::Generator unit_generator(uint64_t seed, int unit) {
  return at::detail::createCPUGenerator(mix64(mix64(seed) ^ static_cast<uint64_t>(unit)));
}

at::Tensor normal(std::vector<int64_t> shape, double std, at::Generator& gen) {
  at::Tensor t = at::empty(shape, at::TensorOptions().dtype(at::kFloat));
  t.normal_(0.0, std, gen);
  return t;
}

// Today's at::linear unless a stash asks for the split-aware one (same forward numbers).
at::Tensor stage_linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, WeightGradStash* stash) {
  if (stash) return deferrable_linear(x, w, b, stash);
  return b.defined() ? at::linear(x, w, b) : at::linear(x, w);
}

at::Tensor zeros(std::vector<int64_t> shape) { return at::zeros(shape, at::TensorOptions().dtype(at::kFloat)); }
at::Tensor ones(std::vector<int64_t> shape) { return at::ones(shape, at::TensorOptions().dtype(at::kFloat)); }

}  // namespace

std::vector<std::pair<std::string, std::vector<int64_t>>> stage_parameter_shapes(const GptConfig& c, int layer_begin,
                                                                                 int layer_end, bool first, bool last) {
  const int64_t C = c.n_embd, V = c.vocab_size;
  std::vector<std::pair<std::string, std::vector<int64_t>>> out;
  if (first) out.insert(out.end(), {{"transformer.wte.weight", {V, C}}, {"transformer.wpe.weight", {c.block_size, C}}});
  for (int i = layer_begin; i < layer_end; ++i) {
    const std::string h = "transformer.h." + std::to_string(i) + ".";
    out.insert(out.end(), {{h + "ln_1.weight", {C}},          {h + "ln_1.bias", {C}},
                           {h + "attn.c_attn.weight", {3 * C, C}}, {h + "attn.c_attn.bias", {3 * C}},
                           {h + "attn.c_proj.weight", {C, C}}, {h + "attn.c_proj.bias", {C}},
                           {h + "ln_2.weight", {C}},          {h + "ln_2.bias", {C}},
                           {h + "mlp.c_fc.weight", {4 * C, C}}, {h + "mlp.c_fc.bias", {4 * C}},
                           {h + "mlp.c_proj.weight", {C, 4 * C}}, {h + "mlp.c_proj.bias", {C}}});
  }
  if (last)
    out.insert(out.end(), {{"transformer.ln_f.weight", {C}}, {"transformer.ln_f.bias", {C}}, {"lm_head.weight", {V, C}}});
  return out;
}

GptStage::GptStage(const GptConfig& c, int layer_begin, int layer_end, bool first, bool last, uint64_t seed,
                   at::Device device)
    : config_(c), layer_begin_(layer_begin), layer_end_(layer_end), first_(first), last_(last), device_(device) {
  if (layer_begin < 0 || layer_end < layer_begin || layer_end > c.n_layer)
    throw InputError("plan", "stages.layers",
                     "layer range [" + std::to_string(layer_begin) + ", " + std::to_string(layer_end) +
                         ") is outside the model's " + std::to_string(c.n_layer) + " layers");
  const int64_t C = c.n_embd;
  const double std = 0.02, proj_std = 0.02 / std::sqrt(2.0 * c.n_layer);
  if (first) {
    at::Generator g = unit_generator(seed, 0);
    units_.push_back({0, {{"transformer.wte.weight", normal({c.vocab_size, C}, std, g)},
                          {"transformer.wpe.weight", normal({c.block_size, C}, std, g)}}});
  }
  for (int i = layer_begin; i < layer_end; ++i) {
    at::Generator g = unit_generator(seed, 1 + i);
    const std::string h = "transformer.h." + std::to_string(i) + ".";
    // Draw order is fixed: c_attn, attn.c_proj, c_fc, mlp.c_proj.
    at::Tensor attn_w = normal({3 * C, C}, std, g);
    at::Tensor attn_proj_w = normal({C, C}, proj_std, g);
    at::Tensor fc_w = normal({4 * C, C}, std, g);
    at::Tensor mlp_proj_w = normal({C, 4 * C}, proj_std, g);
    units_.push_back({1 + i,
                      {{h + "ln_1.weight", ones({C})},
                       {h + "ln_1.bias", zeros({C})},
                       {h + "attn.c_attn.weight", attn_w},
                       {h + "attn.c_attn.bias", zeros({3 * C})},
                       {h + "attn.c_proj.weight", attn_proj_w},
                       {h + "attn.c_proj.bias", zeros({C})},
                       {h + "ln_2.weight", ones({C})},
                       {h + "ln_2.bias", zeros({C})},
                       {h + "mlp.c_fc.weight", fc_w},
                       {h + "mlp.c_fc.bias", zeros({4 * C})},
                       {h + "mlp.c_proj.weight", mlp_proj_w},
                       {h + "mlp.c_proj.bias", zeros({C})}}});
  }
  if (last) {
    at::Generator g = unit_generator(seed, c.n_layer + 1);
    units_.push_back({c.n_layer + 1,
                      {{"transformer.ln_f.weight", ones({C})},
                       {"transformer.ln_f.bias", zeros({C})},
                       {"lm_head.weight", normal({c.vocab_size, C}, std, g)}}});
  }
  for (auto& u : units_)
    for (auto& np : u.params) {
      np.tensor = np.tensor.to(device_).set_requires_grad(true);
      by_name_.emplace_back(np.name, np.tensor);
    }
  std::sort(by_name_.begin(), by_name_.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
}

const at::Tensor& GptStage::p(const std::string& name) const {
  auto it = std::lower_bound(by_name_.begin(), by_name_.end(), name,
                             [](const auto& a, const std::string& n) { return a.first < n; });
  if (it == by_name_.end() || it->first != name) throw Error("GptStage: no parameter " + name + " on this stage");
  return it->second;
}

std::vector<NamedTensor> GptStage::named_parameters() const {
  std::vector<NamedTensor> all;
  for (const auto& u : units_) all.insert(all.end(), u.params.begin(), u.params.end());
  return all;
}

int64_t GptStage::num_parameters() const {
  int64_t n = 0;
  for (const auto& u : units_)
    for (const auto& np : u.params) n += np.tensor.numel();
  return n;
}

at::Tensor GptStage::embed(const at::Tensor& tokens) const {
  const int64_t T = tokens.size(1);
  at::Tensor pos = at::arange(T, at::TensorOptions().dtype(at::kLong).device(device_));
  return at::embedding(p("transformer.wte.weight"), tokens) + at::embedding(p("transformer.wpe.weight"), pos);
}

at::Tensor GptStage::block(int layer, const at::Tensor& x, WeightGradStash* stash) const {
  const std::string h = "transformer.h." + std::to_string(layer) + ".";
  const int64_t B = x.size(0), T = x.size(1), C = x.size(2), nh = config_.n_head, hs = C / nh;
  // Causal self-attention, pre-LN.
  at::Tensor a = at::layer_norm(x, {C}, p(h + "ln_1.weight"), p(h + "ln_1.bias"), 1e-5);
  at::Tensor qkv = stage_linear(a, p(h + "attn.c_attn.weight"), p(h + "attn.c_attn.bias"), stash);
  std::vector<at::Tensor> parts = qkv.split(C, 2);
  at::Tensor q = parts[0].view({B, T, nh, hs}).transpose(1, 2);  // [B, nh, T, hs]
  at::Tensor k = parts[1].view({B, T, nh, hs}).transpose(1, 2);
  at::Tensor v = parts[2].view({B, T, nh, hs}).transpose(1, 2);
  at::Tensor att = at::matmul(q, k.transpose(-2, -1)) * (1.0 / std::sqrt(static_cast<double>(hs)));
  at::Tensor mask = at::ones({T, T}, at::TensorOptions().dtype(at::kBool).device(device_)).tril();
  att = att.masked_fill(mask.logical_not(), -std::numeric_limits<float>::infinity());
  att = at::softmax(att, -1);
  at::Tensor y = at::matmul(att, v).transpose(1, 2).contiguous().view({B, T, C});
  at::Tensor x1 = x + stage_linear(y, p(h + "attn.c_proj.weight"), p(h + "attn.c_proj.bias"), stash);
  // MLP with tanh-GELU.
  at::Tensor m = at::layer_norm(x1, {C}, p(h + "ln_2.weight"), p(h + "ln_2.bias"), 1e-5);
  m = at::gelu(stage_linear(m, p(h + "mlp.c_fc.weight"), p(h + "mlp.c_fc.bias"), stash), "tanh");
  return x1 + stage_linear(m, p(h + "mlp.c_proj.weight"), p(h + "mlp.c_proj.bias"), stash);
}

at::Tensor GptStage::head(const at::Tensor& x, WeightGradStash* stash) const {
  const int64_t C = x.size(2);
  at::Tensor n = at::layer_norm(x, {C}, p("transformer.ln_f.weight"), p("transformer.ln_f.bias"), 1e-5);
  return stage_linear(n, p("lm_head.weight"), at::Tensor(), stash);
}

at::Tensor GptStage::forward(const at::Tensor& input, WeightGradStash* stash) const {
  at::Tensor x = first_ ? embed(input) : input;
  for (int i = layer_begin_; i < layer_end_; ++i) x = block(i, x, stash);
  return last_ ? head(x, stash) : x;
}

at::Tensor GptStage::loss(const at::Tensor& logits, const at::Tensor& targets) {
  const int64_t V = logits.size(-1);
  return at::cross_entropy_loss(logits.reshape({-1, V}).to(at::kFloat), targets.reshape({-1}));
}

}  // namespace geopipe::runtime
