#include <geopipe/core/error.h>
#include <geopipe/runtime/stage_compute.h>

#include <ATen/autocast_mode.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/version.h>

#include <algorithm>
#include <set>

namespace geopipe::runtime {

Recompute parse_recompute(const std::string& text) {
  if (text == "none") return Recompute::kNone;
  if (text == "full") return Recompute::kFull;
  throw InputError("command line", "--recompute", "expected none or full, got '" + text + "'");
}

const char* recompute_name(Recompute r) { return r == Recompute::kFull ? "full" : "none"; }

namespace {

// Bytes of the distinct storages behind `tensors` (views of one buffer count once).
int64_t storage_bytes(const std::vector<at::Tensor>& tensors) {
  std::set<const void*> seen;
  int64_t n = 0;
  for (const auto& t : tensors)
    if (t.defined() && seen.insert(t.storage().unsafeGetStorageImpl()).second)
      n += static_cast<int64_t>(t.storage().nbytes());
  return n;
}

// The weight and bias gradients of y = x W^T + b from 2-D x [N, in] and dy [N, out], with the ops
// at::linear's autograd uses (addmm/mm backward: dy^T x; bias: sum over rows), cast back to the
// parameters' dtypes as autocast's ToCopyBackward does.
std::pair<at::Tensor, at::Tensor> weight_grads(const at::Tensor& x2, const at::Tensor& g2, const at::Tensor& w,
                                               const at::Tensor& b) {
  at::Tensor gw = g2.t().mm(x2).to(w.scalar_type());
  at::Tensor gb = b.defined() ? g2.sum(0).to(b.scalar_type()) : at::Tensor();
  return {gw, gb};
}

// Accumulation into .grad as AccumulateGrad does outside grad mode: set when empty, else add.
void accumulate(const at::Tensor& param, const at::Tensor& grad) {
  at::Tensor& slot = param.mutable_grad();
  if (!slot.defined()) slot = grad.is_contiguous() ? grad : grad.contiguous();
  else slot.add_(grad);
}

struct DeferrableLinear : torch::autograd::Function<DeferrableLinear> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w,
                            const c10::optional<at::Tensor>& b, WeightGradStash* stash) {
    const bool has_bias = b.has_value() && b->defined();
    // The very call the plain path makes (autocast, if on, casts inside at::linear).
    at::Tensor y = has_bias ? at::linear(x, w, *b) : at::linear(x, w);
    // Keep the input in the dtype the product ran in (bf16 under autocast), as addmm's autograd does.
    ctx->save_for_backward({x.to(y.scalar_type()), w, has_bias ? *b : at::Tensor()});
    // An IValue holds no raw pointer; the stash outlives this node because StageCompute's
    // micro-batch owns both the stash and the graph that holds the node.
    ctx->saved_data["stash"] = static_cast<int64_t>(reinterpret_cast<intptr_t>(stash));
    ctx->saved_data["x_dtype"] = static_cast<int64_t>(x.scalar_type());
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &w = saved[1], &b = saved[2];
    auto* stash = reinterpret_cast<WeightGradStash*>(static_cast<intptr_t>(ctx->saved_data["stash"].toInt()));
    const auto x_dtype = static_cast<at::ScalarType>(ctx->saved_data["x_dtype"].toInt());
    const int64_t out = w.size(0), in = w.size(1);
    at::Tensor g2 = grads[0].reshape({-1, out});
    at::Tensor x2 = x.reshape({-1, in});
    // addmm/mm backward for the input: dy W, in the product's dtype, then back to x's.
    at::Tensor gx = g2.mm(w.to(g2.scalar_type())).view(x.sizes()).to(x_dtype);
    at::Tensor gw, gb;
    // Detached: a saved input still carries its producer's grad_fn, which would keep the rest
    // of the graph (and its saved activations) alive until W.
    if (stash->defer) stash->push({x2.detach(), g2.detach(), w, b});
    else std::tie(gw, gb) = weight_grads(x2, g2, w, b);
    return {gx, gw, gb, at::Tensor()};
  }
};

// The autocast state of one device type, read and set across LibTorch 1.13 and 2.x (2.4 replaced
// the per-device calls with ones taking the device type).
struct AutocastMode {
  bool enabled = false;
  at::ScalarType dtype = at::kBFloat16;
};

AutocastMode autocast_mode(at::DeviceType t) {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
  return {at::autocast::is_autocast_enabled(t), at::autocast::get_autocast_dtype(t)};
#else
  if (t == at::kCUDA) return {at::autocast::is_enabled(), at::autocast::get_autocast_gpu_dtype()};
  return {at::autocast::is_cpu_enabled(), at::autocast::get_autocast_cpu_dtype()};
#endif
}

void set_autocast_mode(at::DeviceType t, AutocastMode m) {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
  at::autocast::set_autocast_dtype(t, m.dtype);
  at::autocast::set_autocast_enabled(t, m.enabled);
#else
  if (t == at::kCUDA) {
    at::autocast::set_autocast_gpu_dtype(m.dtype);
    at::autocast::set_enabled(m.enabled);
  } else {
    at::autocast::set_autocast_cpu_dtype(m.dtype);
    at::autocast::set_cpu_enabled(m.enabled);
  }
#endif
}

// Runs a scope under a given autocast mode: a recomputed forward sees the mode its F saw, and a
// loss is computed without autocast, as the executor does.
class AutocastAs {
 public:
  AutocastAs(at::DeviceType t, AutocastMode m) : type_(t), prev_(autocast_mode(t)) { set_autocast_mode(t, m); }
  ~AutocastAs() {
    const bool was_on = autocast_mode(type_).enabled;
    set_autocast_mode(type_, prev_);
    if (was_on && !prev_.enabled) at::autocast::clear_cache();  // cast weights cached in the scope
  }

 private:
  at::DeviceType type_;
  AutocastMode prev_;
};

}  // namespace

at::Tensor deferrable_linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                             WeightGradStash* stash) {
  c10::optional<at::Tensor> b;
  if (bias.defined()) b = bias;
  return DeferrableLinear::apply(x, weight, b, stash);
}

void WeightGradStash::push(Entry e) {
  std::lock_guard<std::mutex> lock(mutex_);
  entries_.push_back(std::move(e));
}

void WeightGradStash::apply_and_clear(const std::function<void(const at::Tensor&)>& accumulated) {
  std::lock_guard<std::mutex> lock(mutex_);
  at::NoGradGuard no_grad;
  for (const Entry& e : entries_) {
    auto [gw, gb] = weight_grads(e.input, e.grad_output, e.weight, e.bias);
    accumulate(e.weight, gw);
    if (accumulated) accumulated(e.weight);
    if (gb.defined()) accumulate(e.bias, gb);
    if (gb.defined() && accumulated) accumulated(e.bias);
  }
  entries_.clear();
}

int64_t WeightGradStash::bytes() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<at::Tensor> all;
  for (const Entry& e : entries_) {
    all.push_back(e.input);
    all.push_back(e.grad_output);
  }
  return storage_bytes(all);
}

}  // namespace geopipe::runtime

namespace geopipe::runtime {

StageCompute::StageCompute(const GptStage& model, Recompute recompute) : model_(model), recompute_(recompute) {}

std::string StageCompute::where(int mb, const char* action) const {
  return "stage of layers [" + std::to_string(model_.layer_begin()) + ", " + std::to_string(model_.layer_end()) +
         "), action " + action + std::to_string(mb) + " (micro-batch " + std::to_string(mb) + ")";
}

StageCompute::MicroBatch& StageCompute::state(int mb, const char* action, Phase expected) {
  auto it = live_.find(mb);
  const bool is_w = expected == Phase::kInputDone;
  if (it == live_.end())
    throw Error(where(mb, action) + ": nothing pending for this micro-batch (" + action +
                (is_w ? " before its F and I, or W twice)" : " before its F, or after its B/W freed it)"));
  if (it->second.phase != expected)
    throw Error(where(mb, action) + (is_w ? ": W before I (its input gradient has not run yet)"
                                          : ": its I already ran (I twice, or B after I: W finishes it)"));
  return it->second;
}

at::Tensor StageCompute::loss_of(const at::Tensor& logits, const MicroBatch& s) const {
  AutocastAs off(model_.device().type(), {false, s.autocast_dtype});  // as the executor: no autocast
  return GptStage::loss(logits, s.targets) / s.loss_divisor;
}

at::Tensor StageCompute::forward(int mb, const at::Tensor& input, const at::Tensor& targets, double loss_divisor) {
  if (live_.count(mb)) throw Error(where(mb, "F") + ": F again before its backward freed the micro-batch");
  const bool first = model_.is_first(), last = model_.is_last();
  if (last && !targets.defined()) throw Error(where(mb, "F") + ": the last stage needs the targets");
  MicroBatch s;
  const AutocastMode mode = autocast_mode(model_.device().type());
  s.autocast = mode.enabled;
  s.autocast_dtype = mode.dtype;
  s.targets = targets;
  s.loss_divisor = loss_divisor;
  if (first) s.tokens = input;
  if (!last) s.output_sizes = {input.size(0), input.size(1), model_.config().n_embd};
  at::Tensor result;
  if (recompute_ == Recompute::kFull) {
    result = forward_recomputable(s, input);
  } else {
    if (!first) s.input = input.detach().requires_grad_(true);  // a leaf: its .grad is the input gradient
    at::Tensor y = model_.forward(first ? s.tokens : s.input, s.stash.get());
    s.root = last ? loss_of(y, s) : y;
    s.graph_estimate = graph_bytes_estimate(input.size(0), input.size(1));
    result = s.root.detach();
  }
  live_.emplace(mb, std::move(s));
  return result;
}

// Recompute full's F: no graph; each block's input (and the head's) is kept for the backward.
at::Tensor StageCompute::forward_recomputable(MicroBatch& s, const at::Tensor& input) {
  at::NoGradGuard no_grad;
  at::Tensor h = model_.is_first() ? model_.embed(s.tokens) : input;
  for (int i = model_.layer_begin(); i < model_.layer_end(); ++i) {
    s.kept.push_back(h);
    h = model_.block(i, h);
  }
  if (!model_.is_last()) return h;
  s.kept.push_back(h);
  return loss_of(model_.head(h), s);
}

// Recompute full's backward: rebuild one segment's graph at a time (head, blocks in reverse, then
// the embedding) under F's autocast mode, from its kept input made a leaf, and run it with the
// gradient the later segment gave that leaf. The same ops in the same order as one whole graph.
at::Tensor StageCompute::backward_recomputed(MicroBatch& s, const at::Tensor& grad_output) {
  const at::DeviceType dev = model_.device().type();
  const AutocastMode mode{s.autocast, s.autocast_dtype};
  WeightGradStash* stash = s.stash.get();
  at::Tensor g = grad_output;
  size_t k = s.kept.size();
  if (model_.is_last()) {
    at::Tensor h = s.kept[--k].detach().requires_grad_(true);
    at::Tensor logits;
    {
      AutocastAs as_f(dev, mode);
      logits = model_.head(h, stash);
    }
    loss_of(logits, s).backward();
    g = h.grad();
    s.kept[k] = at::Tensor();
  }
  for (int i = model_.layer_end() - 1; i >= model_.layer_begin(); --i) {
    at::Tensor x = s.kept[--k].detach().requires_grad_(true);
    at::Tensor y;
    {
      AutocastAs as_f(dev, mode);
      y = model_.block(i, x, stash);
    }
    y.backward(g.to(y.scalar_type()));
    g = x.grad();
    s.kept[k] = at::Tensor();  // this block's input is no longer needed
  }
  if (!model_.is_first()) return g;
  at::Tensor e;
  {
    AutocastAs as_f(dev, mode);
    e = model_.embed(s.tokens);
  }
  e.backward(g);
  return at::Tensor();
}

at::Tensor StageCompute::run_backward(int mb, MicroBatch& s, const at::Tensor& grad_output, bool defer) {
  const char* action = defer ? "I" : "B";
  const bool last = model_.is_last();
  if (!last && !grad_output.defined()) throw Error(where(mb, action) + ": no gradient of the stage output given");
  if (!last && grad_output.sizes() != at::IntArrayRef(s.output_sizes))
    throw Error(where(mb, action) + ": gradient of shape " + c10::str(grad_output.sizes()) + " for an output of shape " +
                c10::str(at::IntArrayRef(s.output_sizes)));
  s.stash->defer = defer;
  if (recompute_ == Recompute::kFull) return backward_recomputed(s, grad_output);
  if (last) s.root.backward();
  else s.root.backward(grad_output.to(s.root.scalar_type()));
  return model_.is_first() ? at::Tensor() : s.input.grad();
}

at::Tensor StageCompute::backward(int mb, const at::Tensor& grad_output) {
  at::Tensor g = run_backward(mb, state(mb, "B", Phase::kForwarded), grad_output, false);
  live_.erase(mb);
  return g;
}

at::Tensor StageCompute::backward_input(int mb, const at::Tensor& grad_output) {
  MicroBatch& s = state(mb, "I", Phase::kForwarded);
  at::Tensor g = run_backward(mb, s, grad_output, true);
  // Only the stash is left for W; the graph and the kept activations go now.
  s.tokens = s.input = s.root = s.targets = at::Tensor();
  s.kept.clear();
  s.graph_estimate = 0;
  s.phase = Phase::kInputDone;
  return g;
}

void StageCompute::backward_weight(int mb) {
  state(mb, "W", Phase::kInputDone).stash->apply_and_clear(observer_);
  live_.erase(mb);
}

int64_t StageCompute::live_bytes(int mb) const {
  auto it = live_.find(mb);
  if (it == live_.end()) return 0;
  const MicroBatch& s = it->second;
  std::vector<at::Tensor> held = s.kept;
  held.push_back(s.tokens);
  held.push_back(s.targets);
  return storage_bytes(held) + s.stash->bytes() + s.graph_estimate;
}

int64_t StageCompute::live_bytes() const {
  int64_t n = 0;
  for (const auto& [mb, s] : live_) n += live_bytes(mb);
  return n;
}

// Recompute none, fp32: what autograd saves per block for the ops in GptStage::block (N = B T
// rows): the block input, LN outputs, q/k/v copies made by matmul, attention output, x1, MLP
// input, c_fc output and GELU output (16 N C), two LayerNorms' mean and rstd (4 N), the softmax
// (B nh T^2). The last stage adds ln_f's input and stats, lm_head's input and the log-softmax
// (2 N C + 2 N + N V); other stages hold their output (N C).
namespace {
int64_t block_floats(const GptConfig& c, int64_t batch, int64_t seq) {
  const int64_t N = batch * seq;
  return 16 * N * c.n_embd + 4 * N + batch * c.n_head * seq * seq;
}
int64_t head_floats(const GptConfig& c, int64_t batch, int64_t seq) {
  const int64_t N = batch * seq;
  return 2 * N * c.n_embd + 2 * N + N * c.vocab_size;
}
}  // namespace

int64_t StageCompute::graph_bytes_estimate(int64_t batch, int64_t seq) const {
  const GptConfig& c = model_.config();
  const int64_t L = model_.layer_end() - model_.layer_begin();
  int64_t floats = L * block_floats(c, batch, seq);
  floats += model_.is_last() ? head_floats(c, batch, seq) : batch * seq * c.n_embd;
  return floats * static_cast<int64_t>(sizeof(float));
}

int64_t StageCompute::rebuild_bytes(int mb) const {
  auto it = live_.find(mb);
  if (recompute_ != Recompute::kFull || it == live_.end() || it->second.kept.empty()) return 0;
  const at::Tensor& x = it->second.kept.front();  // [B, T, C]: every kept input has the batch's shape
  const GptConfig& c = model_.config();
  int64_t floats = block_floats(c, x.size(0), x.size(1));
  if (model_.is_last()) floats = std::max(floats, head_floats(c, x.size(0), x.size(1)));
  return floats * static_cast<int64_t>(sizeof(float));
}

std::vector<int> StageCompute::micro_batches() const {
  std::vector<int> v;
  for (const auto& [mb, s] : live_) v.push_back(mb);
  return v;
}

}  // namespace geopipe::runtime
