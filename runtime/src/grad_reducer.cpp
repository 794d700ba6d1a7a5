// The replicas' gradient averaging (grad_reducer.h).
#include "grad_reducer.h"

#include <geopipe/core/error.h>

#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/utils/lambda_post_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <algorithm>

namespace geopipe::runtime {

GradReducer::GradReducer(const GptStage& model, int stage, comm::ProcessGroup& group, int micro_batches, bool shard,
                         int64_t bucket_bytes)
    : model_(model), stage_(stage), group_(group), micro_batches_(micro_batches), sharded_(shard) {
  for (const ParamUnit& u : model.units())
    for (const NamedTensor& p : u.params) {
      index_of_[p.tensor.unsafeGetTensorImpl()] = params_.size();
      params_.push_back(p);
      unit_of_.push_back(u.unit);
    }
  counts_.assign(params_.size(), 0);
  buckets_ = plan_buckets(params_, bucket_bytes, group.size(), sharded_, &bucket_of_);
  const at::TensorOptions f32 = at::TensorOptions().dtype(at::kFloat).device(model.device());
  for (Bucket& b : buckets_) {
    b.flat = at::zeros({b.padded}, f32);
    if (sharded_) b.shard = at::zeros({b.padded / group.size()}, f32);
  }
  if (sharded_) plan_shard(params_, buckets_, group.size(), group.rank(), &shard_, &shard_at_);
  // The accumulation hook fires after autograd added a micro-batch's gradient to .grad. An I whose
  // linear weights wait for W passes them an undefined gradient: that is no accumulation.
  for (const NamedTensor& p : params_) {
    std::shared_ptr<torch::autograd::Node> acc = torch::autograd::impl::grad_accumulator(p.tensor);
    const at::Tensor param = p.tensor;
    hooks_.push_back(acc->add_post_hook(std::make_unique<torch::autograd::utils::LambdaPostHook>(
        [this, param](const torch::autograd::variable_list& outputs, const torch::autograd::variable_list& inputs) {
          if (!inputs.empty() && inputs[0].defined()) on_accumulated(param);
          return outputs;
        })));
    accumulators_.push_back(std::move(acc));
  }
}

GradReducer::~GradReducer() {
  for (size_t i = 0; i < accumulators_.size(); ++i) accumulators_[i]->del_post_hook(hooks_[i]);
}

// Reverse model order, a new bucket when the next parameter would pass the cap (a parameter
// larger than the cap gets a bucket of its own).
std::vector<GradReducer::Bucket> GradReducer::plan_buckets(const std::vector<NamedTensor>& params, int64_t bucket_bytes,
                                                           int replicas, bool sharded, std::vector<size_t>* bucket_of) {
  std::vector<Bucket> buckets;
  bucket_of->assign(params.size(), 0);
  for (size_t k = params.size(); k-- > 0;) {
    const int64_t n = params[k].tensor.numel();
    if (buckets.empty() || (buckets.back().numel > 0 && (buckets.back().numel + n) * 4 > bucket_bytes))
      buckets.emplace_back();
    Bucket& b = buckets.back();
    b.params.push_back(k);
    b.offsets.push_back(b.numel);
    b.numel += n;
    (*bucket_of)[k] = buckets.size() - 1;
  }
  for (Bucket& b : buckets) b.padded = sharded ? (b.numel + replicas - 1) / replicas * replicas : b.numel;
  return buckets;
}

// ZeRO-1: replica `me`'s block of each bucket, cut at parameter boundaries into slices.
void GradReducer::plan_shard(const std::vector<NamedTensor>& params, const std::vector<Bucket>& buckets, int replicas,
                             int me, std::vector<ParamSlice>* slices, std::vector<std::pair<size_t, int64_t>>* at) {
  for (size_t bi = 0; bi < buckets.size(); ++bi) {
    const Bucket& b = buckets[bi];
    const int64_t block = b.padded / replicas, lo = block * me, hi = std::min(lo + block, b.numel);
    for (size_t j = 0; j < b.params.size(); ++j) {
      const int64_t p_lo = b.offsets[j], p_hi = p_lo + params[b.params[j]].tensor.numel();
      const int64_t from = std::max(lo, p_lo), to = std::min(hi, p_hi);
      if (from >= to) continue;
      slices->push_back({params[b.params[j]], from - p_lo, to - from});
      at->emplace_back(bi, from - lo);
    }
  }
}

std::vector<ParamSlice> GradReducer::shard_of(const GptStage& model, int replicas, int replica, int64_t bucket_bytes) {
  const std::vector<NamedTensor> params = model.named_parameters();
  std::vector<size_t> bucket_of;
  std::vector<ParamSlice> slices;
  std::vector<std::pair<size_t, int64_t>> at;
  plan_shard(params, plan_buckets(params, bucket_bytes, replicas, true, &bucket_of), replicas, replica, &slices, &at);
  return slices;
}

std::string GradReducer::bucket_name(size_t b) const {
  return "stage " + std::to_string(stage_) + " bucket " + std::to_string(b) + " (" +
         std::to_string(buckets_[b].numel) + " floats)";
}

void GradReducer::begin_step() {
  std::lock_guard<std::mutex> lock(mutex_);
  std::fill(counts_.begin(), counts_.end(), 0);
  for (Bucket& b : buckets_) {
    b.pending = static_cast<int>(b.params.size());
    b.request = comm::GroupRequest();
  }
  next_ = 0;
  spans_.clear();
}

void GradReducer::on_accumulated(const at::Tensor& param) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = index_of_.find(param.unsafeGetTensorImpl());
  if (it == index_of_.end()) return;
  if (++counts_[it->second] != micro_batches_) return;
  --buckets_[bucket_of_[it->second]].pending;
  while (next_ < buckets_.size() && buckets_[next_].pending == 0) start(next_++);
}

// Copies the bucket's gradients into its flat buffer and starts its collective.
void GradReducer::start(size_t bi) {
  at::NoGradGuard no_grad;
  Bucket& b = buckets_[bi];
  for (size_t j = 0; j < b.params.size(); ++j) {
    const at::Tensor& p = params_[b.params[j]].tensor;
    at::Tensor dst = b.flat.narrow(0, b.offsets[j], p.numel());
    if (p.grad().defined()) dst.copy_(p.grad().reshape({-1}));
    else dst.zero_();
  }
  b.start_s = comm::steady_now_s();
  b.request = sharded_ ? group_.reduce_scatter_sum(b.flat.data_ptr<float>(), b.shard.data_ptr<float>(),
                                                   static_cast<size_t>(b.shard.numel()), bucket_name(bi))
                       : group_.allreduce_sum(b.flat.data_ptr<float>(), static_cast<size_t>(b.padded), bucket_name(bi));
}

double GradReducer::finish(double timeout_s) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    while (next_ < buckets_.size()) start(next_++);  // parameters that got no gradient this step
  }
  const double t0 = comm::steady_now_s();
  double last_done = t0;
  for (Bucket& b : buckets_) {
    b.request.wait(comm::Seconds(timeout_s));
    last_done = std::max(last_done, b.request.completed_at());
  }
  // Until the last bucket completed (its completion time, as busy_s uses): a wake-up of this thread
  // delayed by other processes is not all-reduce time.
  const double waited = last_done - t0;
  at::NoGradGuard no_grad;
  const double scale = 1.0 / group_.size();
  for (size_t bi = 0; bi < buckets_.size(); ++bi) {
    Bucket& b = buckets_[bi];
    spans_.push_back({(sharded_ ? "reduce-scatter b" : "all-reduce b") + std::to_string(bi), b.start_s,
                      b.request.completed_at()});
    if (sharded_) {
      b.shard.mul_(scale);
      continue;
    }
    b.flat.mul_(scale);
    for (size_t j = 0; j < b.params.size(); ++j) {
      at::Tensor p = params_[b.params[j]].tensor;
      at::Tensor avg = b.flat.narrow(0, b.offsets[j], p.numel()).view(p.sizes());
      if (p.mutable_grad().defined()) p.mutable_grad().copy_(avg);
      else p.mutable_grad() = avg.clone();
    }
  }
  return waited;
}

std::vector<at::Tensor> GradReducer::shard_grads() const {
  std::vector<at::Tensor> grads;
  for (size_t i = 0; i < shard_.size(); ++i)
    grads.push_back(buckets_[shard_at_[i].first].shard.narrow(0, shard_at_[i].second, shard_[i].length));
  return grads;
}

std::vector<std::pair<int, double>> GradReducer::shard_unit_sq_norms() const {
  at::NoGradGuard no_grad;
  std::map<int, double> by_unit;
  const std::vector<at::Tensor> grads = shard_grads();
  for (size_t i = 0; i < shard_.size(); ++i) {
    const size_t k = index_of_.at(shard_[i].param.tensor.unsafeGetTensorImpl());
    by_unit[unit_of_[k]] += grads[i].to(at::kDouble).pow(2).sum().item<double>();
  }
  return {by_unit.begin(), by_unit.end()};
}

void GradReducer::gather_parameters(double timeout_s) {
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < shard_.size(); ++i)  // the updated slices into this replica's block
    buckets_[shard_at_[i].first].shard.narrow(0, shard_at_[i].second, shard_[i].length)
        .copy_(shard_[i].param.tensor.reshape({-1}).narrow(0, shard_[i].begin, shard_[i].length));
  std::vector<comm::GroupRequest> requests;
  for (size_t bi = 0; bi < buckets_.size(); ++bi) {
    Bucket& b = buckets_[bi];
    requests.push_back(group_.allgather(b.shard.data_ptr<float>(), b.flat.data_ptr<float>(),
                                        static_cast<size_t>(b.shard.numel()), "parameters of " + bucket_name(bi)));
  }
  for (auto& r : requests) r.wait(comm::Seconds(timeout_s));
  for (Bucket& b : buckets_)
    for (size_t j = 0; j < b.params.size(); ++j) {
      at::Tensor p = params_[b.params[j]].tensor;
      p.view({-1}).copy_(b.flat.narrow(0, b.offsets[j], p.numel()));
    }
}

double GradReducer::busy_s() const {
  if (spans_.empty()) return 0;
  double lo = spans_.front().start_s, hi = spans_.front().end_s;
  for (const Span& s : spans_) lo = std::min(lo, s.start_s), hi = std::max(hi, s.end_s);
  return hi - lo;
}

}  // namespace geopipe::runtime
