#include <geopipe/core/error.h>
#include <geopipe/runtime/optim.h>

#include <algorithm>
#include <cmath>
#include <map>

namespace geopipe::runtime {

double learning_rate(const OptimConfig& c, int64_t step) {
  if (c.warmup_steps > 0 && step < c.warmup_steps)
    return c.lr * static_cast<double>(step + 1) / static_cast<double>(c.warmup_steps);
  if (step >= c.decay_steps) return c.min_lr;
  const double span = static_cast<double>(std::max<int64_t>(c.decay_steps - c.warmup_steps, 1));
  const double ratio = static_cast<double>(step - c.warmup_steps) / span;
  const double coeff = 0.5 * (1.0 + std::cos(M_PI * ratio));
  return c.min_lr + coeff * (c.lr - c.min_lr);
}

std::string ParamSlice::name() const {
  if (whole()) return param.name;
  return param.name + "[" + std::to_string(begin) + ":" + std::to_string(begin + length) + "]";
}

namespace {

std::vector<ParamSlice> whole_params(std::vector<NamedTensor> params) {
  std::vector<ParamSlice> slices;
  for (auto& p : params) slices.push_back({p, 0, p.tensor.numel()});
  return slices;
}

// The slice's elements as a tensor sharing the parameter's storage (the parameter itself when whole).
at::Tensor view_of(const ParamSlice& s, const at::Tensor& full) {
  return s.whole() ? full : full.view(-1).narrow(0, s.begin, s.length);
}

}  // namespace

AdamW::AdamW(std::vector<NamedTensor> params, const OptimConfig& config) : AdamW(whole_params(std::move(params)), config) {}

AdamW::AdamW(std::vector<ParamSlice> slices, const OptimConfig& config) : slices_(std::move(slices)), config_(config) {
  for (const auto& s : slices_) {
    m_.push_back(at::zeros_like(view_of(s, s.param.tensor)));
    v_.push_back(at::zeros_like(view_of(s, s.param.tensor)));
  }
}

void AdamW::step(double lr, double grad_scale, const std::vector<at::Tensor>* slice_grads) {
  at::NoGradGuard no_grad;
  ++t_;
  const double bc1 = 1.0 - std::pow(config_.beta1, static_cast<double>(t_));
  const double bc2 = 1.0 - std::pow(config_.beta2, static_cast<double>(t_));
  for (size_t i = 0; i < slices_.size(); ++i) {
    const ParamSlice& s = slices_[i];
    at::Tensor p = view_of(s, s.param.tensor);
    at::Tensor g = slice_grads ? slice_grads->at(i).view(p.sizes()) : s.param.tensor.grad();
    if (!g.defined()) continue;
    if (!slice_grads) g = view_of(s, g);
    if (grad_scale != 1.0) g.mul_(grad_scale);
    // Decoupled weight decay on matrices only: the whole parameter's shape decides.
    if (s.param.tensor.dim() >= 2 && config_.weight_decay > 0) p.mul_(1.0 - lr * config_.weight_decay);
    m_[i].mul_(config_.beta1).add_(g, 1.0 - config_.beta1);
    v_[i].mul_(config_.beta2).addcmul_(g, g, 1.0 - config_.beta2);
    at::Tensor denom = (v_[i] / bc2).sqrt_().add_(config_.eps);
    p.addcdiv_(m_[i], denom, -lr / bc1);
  }
}

void AdamW::zero_grad() {
  for (auto& s : slices_) {
    at::Tensor& g = s.param.tensor.mutable_grad();
    if (g.defined()) g.zero_();
  }
}

int64_t AdamW::state_bytes() const {
  int64_t n = 0;
  for (size_t i = 0; i < m_.size(); ++i)
    n += m_[i].numel() * static_cast<int64_t>(m_[i].element_size()) + v_[i].numel() * static_cast<int64_t>(v_[i].element_size());
  return n;
}

std::vector<NamedTensor> AdamW::state() const {
  std::vector<NamedTensor> s;
  for (size_t i = 0; i < slices_.size(); ++i) {
    s.push_back({"exp_avg." + slices_[i].name(), m_[i]});
    s.push_back({"exp_avg_sq." + slices_[i].name(), v_[i]});
  }
  return s;
}

void AdamW::load_state(const std::vector<NamedTensor>& state, int64_t steps_taken, const std::string& source) {
  std::map<std::string, at::Tensor> by_name;
  for (const auto& s : state) by_name[s.name] = s.tensor;
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < slices_.size(); ++i) {
    const ParamSlice& s = slices_[i];
    for (auto [prefix, dst] : {std::make_pair("exp_avg.", &m_[i]), std::make_pair("exp_avg_sq.", &v_[i])}) {
      at::Tensor src;
      if (auto it = by_name.find(prefix + s.name()); it != by_name.end()) {
        src = it->second;
      } else if (auto whole = by_name.find(prefix + s.param.name); whole != by_name.end() && !s.whole() &&
                                                                    whole->second.numel() == s.param.tensor.numel()) {
        src = view_of(s, whole->second.reshape(-1));  // a slice of whole state (another sharding)
      } else {
        throw Error(source + ": optimizer state has no " + prefix + s.name());
      }
      if (!src.sizes().equals(dst->sizes()))
        throw Error(source + ": optimizer state " + prefix + s.name() + " has the wrong shape");
      dst->copy_(src);
    }
  }
  t_ = steps_taken;
}

std::vector<std::pair<int, double>> unit_grad_sq_norms(const GptStage& stage) {
  at::NoGradGuard no_grad;
  std::vector<std::pair<int, double>> out;
  for (const auto& u : stage.units()) {
    double sum = 0;
    for (const auto& p : u.params) {
      const at::Tensor& g = p.tensor.grad();
      if (g.defined()) sum += g.to(at::kDouble).pow(2).sum().item<double>();
    }
    out.emplace_back(u.unit, sum);
  }
  return out;
}

double global_norm(std::vector<std::pair<int, double>> all) {
  std::sort(all.begin(), all.end());
  double sum = 0;
  for (const auto& u : all) sum += u.second;
  return std::sqrt(sum);
}

double clip_scale(double norm, double max_norm) {
  if (max_norm <= 0) return 1.0;
  return std::min(1.0, max_norm / (norm + 1e-6));
}

}  // namespace geopipe::runtime
