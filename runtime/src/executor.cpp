// The pipeline executor: an interpreter of this stage's action list (executor.h). The links are
// stage_io.h's; the compute and its per-micro-batch state are here; run() is the one loop, with
// a switch per action kind and one place that says where an error happened.
#include <geopipe/comm/communicator.h>
#include <geopipe/core/error.h>
#include <geopipe/runtime/executor.h>

#include "stage_io.h"
#include "tags.h"

#include <ATen/autocast_mode.h>
#include <torch/version.h>

#include <chrono>
#include <map>
#include <memory>

namespace geopipe::runtime {

namespace {

using Clock = std::chrono::steady_clock;

double now_us() {
  return static_cast<double>(
      std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch())
          .count());
}

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Bf16 autocast for the duration of a forward (CPU or CUDA, whichever the tensor lives on).
// LibTorch 2.4 replaced the per-device setters with ones taking the device type.
class AutocastScope {
 public:
  AutocastScope(bool on, at::Device device) : on_(on), type_(device.type()) {
    if (!on_) return;
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
    prev_ = at::autocast::is_autocast_enabled(type_);
    at::autocast::set_autocast_dtype(type_, at::kBFloat16);
    at::autocast::set_autocast_enabled(type_, true);
#else
    if (type_ == at::kCUDA) {
      prev_ = at::autocast::is_enabled();
      at::autocast::set_autocast_gpu_dtype(at::kBFloat16);
      at::autocast::set_enabled(true);
    } else {
      prev_ = at::autocast::is_cpu_enabled();
      at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
      at::autocast::set_cpu_enabled(true);
    }
#endif
  }
  ~AutocastScope() {
    if (!on_) return;
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
    at::autocast::set_autocast_enabled(type_, prev_);
#else
    if (type_ == at::kCUDA) at::autocast::set_enabled(prev_); else at::autocast::set_cpu_enabled(prev_);
#endif
    at::autocast::clear_cache();
  }

 private:
  bool on_;
  at::DeviceType type_;
  bool prev_ = false;
};

// Evaluation: forward only, each micro-batch received, computed and passed on.
std::vector<Action> eval_actions(int stage, int num_stages, int batches) {
  std::vector<Action> list;
  for (int mb = 0; mb < batches; ++mb) {
    if (stage > 0) list.push_back({stage, ActionKind::kRecvF, mb});
    list.push_back({stage, ActionKind::kForward, mb});
    if (stage + 1 < num_stages) list.push_back({stage, ActionKind::kSendF, mb});
  }
  return list;
}

}  // namespace

// The step's compute state: what a micro-batch holds between its actions.
struct PipelineExecutor::StepState {
  explicit StepState(int64_t s, Mode m) : step(s), mode(m) {}
  int64_t step;
  Mode mode;
  StepStats stats;
  double compute_s = 0;
  double eval_loss_sum = 0;
  std::map<int, at::Tensor> received;                     // mb -> received activation (F input)
  std::map<int, std::pair<at::Tensor, at::Tensor>> live;  // mb -> (input leaf, output), F to B
  std::map<int, at::Tensor> losses;                       // last stage: mb -> loss / M
  std::map<int, at::Tensor> grads_in;                     // mb -> gradient of my output
  std::map<int, at::Tensor> grads_out;                    // mb -> gradient of my input, to send
};

PipelineExecutor::PipelineExecutor(const Plan& plan, int stage, GptStage& model, AdamW& optimizer,
                                   const TokenDataset& data, comm::Communicator* comm, Schedule schedule,
                                   const OptimConfig& optim, ExecutorOptions options)
    : plan_(plan), stage_(stage), model_(model), optimizer_(optimizer), data_(data), comm_(comm),
      optim_(optim), options_(std::move(options)) {
  const int S = plan.num_stages();
  if (schedule.num_stages != S)
    throw InputError("schedule", "stages", "schedule has " + std::to_string(schedule.num_stages) +
                                               " stages, the plan has " + std::to_string(S));
  if (schedule.num_micro_batches != plan.job.micro_batches)
    throw InputError("schedule", "micro_batches", "schedule has " + std::to_string(schedule.num_micro_batches) +
                                                      " micro-batches, the job has " +
                                                      std::to_string(plan.job.micro_batches));
  if (plan.job.micro_batches > kMaxMicroBatches)
    throw InputError("job", "micro_batches", "at most " + std::to_string(kMaxMicroBatches) + " supported");
  if (S > 1 && !comm) throw Error("PipelineExecutor: a " + std::to_string(S) + "-stage plan needs a communicator");
  actions_ = schedule.stages.at(stage);
  io_ = std::make_unique<StageIO>(plan, stage, model.device(), comm, options_,
                                  options_.record_trace ? &trace_ : nullptr);
}

PipelineExecutor::~PipelineExecutor() = default;

std::string PipelineExecutor::codec_to_next() const { return io_->codec_to_next(); }
std::string PipelineExecutor::codec_to_prev() const { return io_->codec_to_prev(); }

void PipelineExecutor::span(const std::string& name, double start_us) {
  if (options_.record_trace) trace_.push_back({name, start_us, now_us() - start_us});
}

StepStats PipelineExecutor::train_step(int64_t step) {
  const auto t0 = Clock::now();
  StepState s(step, Mode::kTrain);
  s.stats.step = step;
  s.stats.lr = learning_rate(optim_, step);
  run(actions_, s);
  s.stats.compute_s = s.compute_s;
  s.stats.step_s = seconds_since(t0);
  return s.stats;
}

double PipelineExecutor::evaluate(int64_t step, int batches) {
  at::NoGradGuard no_grad;
  StepState s(step, Mode::kEval);
  run(eval_actions(stage_, plan_.num_stages(), std::min(batches, kMaxMicroBatches)), s);
  io_->finish_sends();
  std::vector<double> v = {stage_ + 1 == plan_.num_stages() ? s.eval_loss_sum / std::min(batches, kMaxMicroBatches) : 0.0};
  allreduce_sum(comm_, v, options_.comm_timeout_s);
  return v[0];
}

// The interpreter: every action in order; any error is re-thrown saying where it happened.
void PipelineExecutor::run(const std::vector<Action>& actions, StepState& s) {
  io_->begin(s.step, actions, s.mode == Mode::kTrain ? StageIO::Mode::kTrain : StageIO::Mode::kEval);
  for (size_t index = 0; index < actions.size(); ++index) {
    const Action& a = actions[index];
    try {
      io_->poll_sends();
      io_->issue_group(index, [&](const Action& send) { return tensor_to_send(send, s); });
      execute(index, a, s);
    } catch (const InputError&) {
      throw;
    } catch (const TimeoutError& e) {
      throw TimeoutError(where(a, s.step) + e.what());
    } catch (const Error& e) {
      throw Error(where(a, s.step) + e.what());
    }
  }
  if (!s.live.empty() || !io_->idle())
    throw Error("stage " + std::to_string(stage_) + ": step " + std::to_string(s.step + 1) +
                " ended with unfinished micro-batches; schedule:\n" + format_actions(actions));
}

std::string PipelineExecutor::where(const Action& a, int64_t step) const {
  return "stage " + std::to_string(stage_) + " (rank " + std::to_string(plan_.stages.at(stage_).ranks.at(0)) +
         ") at " + to_string(a) + " of step " + std::to_string(step + 1) + ": ";
}

void PipelineExecutor::execute(size_t index, const Action& a, StepState& s) {
  const int mb = a.micro_batch;
  switch (a.kind) {
    case ActionKind::kRecvF:
      s.received[mb] = io_->receive(a).set_requires_grad(s.mode == Mode::kTrain);
      break;
    case ActionKind::kRecvB:
      s.grads_in[mb] = io_->receive(a);
      break;
    case ActionKind::kForward:
      forward(a, s);
      break;
    case ActionKind::kBackward:
      backward(a, s);
      break;
    case ActionKind::kSendF:
    case ActionKind::kSendB:
      if (!io_->sent_with_group(index)) io_->send(index, tensor_to_send(a, s));
      if (a.kind == ActionKind::kSendB) s.grads_out.erase(mb);
      if (s.mode == Mode::kEval) s.live.erase(mb);
      break;
    case ActionKind::kOptimizer:
      optimizer_step(a, s);
      break;
  }
}

at::Tensor PipelineExecutor::tensor_to_send(const Action& a, StepState& s) const {
  return a.kind == ActionKind::kSendF ? s.live.at(a.micro_batch).second : s.grads_out.at(a.micro_batch);
}

void PipelineExecutor::forward(const Action& a, StepState& s) {
  const double t0 = now_us();
  const auto c0 = Clock::now();
  const int mb = a.micro_batch, B = plan_.job.micro_batch, T = plan_.job.model.seq_len;
  const bool first = stage_ == 0, last = stage_ + 1 == plan_.num_stages();
  const at::Device dev = model_.device();
  TokenBatch batch;
  if (first || last)
    batch = sample_batch(data_, s.mode == Mode::kTrain ? Split::kTrain : Split::kVal, options_.seed, s.step, mb, B, T);
  at::Tensor input;
  if (first) {
    input = at::tensor(batch.inputs, at::TensorOptions().dtype(at::kLong)).view({B, T}).to(dev);
  } else {
    input = s.received.at(mb);
    s.received.erase(mb);
  }
  at::Tensor out;
  {
    AutocastScope autocast(options_.bf16_autocast, dev);
    out = model_.forward(input);
  }
  if (last) {
    at::Tensor targets = at::tensor(batch.targets, at::TensorOptions().dtype(at::kLong)).view({B, T}).to(dev);
    at::Tensor loss = GptStage::loss(out, targets);
    if (s.mode == Mode::kEval) s.eval_loss_sum += loss.item<double>();
    else s.losses[mb] = loss / static_cast<double>(plan_.job.micro_batches);
  }
  if (s.mode == Mode::kTrain || !last) s.live[mb] = {input, out};  // evaluation: until its send
  s.compute_s += seconds_since(c0);
  if (s.mode == Mode::kTrain) {
    span("F" + std::to_string(mb), t0);
    if (options_.after_compute) options_.after_compute(s.step, a);
  }
}

void PipelineExecutor::backward(const Action& a, StepState& s) {
  const double t0 = now_us();
  const auto c0 = Clock::now();
  const int mb = a.micro_batch;
  auto& [input, out] = s.live.at(mb);
  if (stage_ + 1 == plan_.num_stages()) {
    s.losses.at(mb).backward();
  } else {
    at::Tensor g = s.grads_in.at(mb);
    s.grads_in.erase(mb);
    out.backward(g.to(out.scalar_type()));
  }
  if (stage_ > 0) s.grads_out[mb] = input.grad();  // the gradient to send back
  s.live.erase(mb);                                // activations of mb freed here
  s.compute_s += seconds_since(c0);
  span("B" + std::to_string(mb), t0);
  if (options_.after_compute) options_.after_compute(s.step, a);
}

// OPT: the step's sends finish (the next step reuses tags), one all-reduce carries the loss,
// the gradient norms and the link measurements, then clipping and AdamW.
void PipelineExecutor::optimizer_step(const Action& a, StepState& s) {
  io_->finish_sends();
  const double t0 = now_us();
  const auto c0 = Clock::now();
  StepReduction r(plan_.job.model.layers, plan_.num_stages());
  if (stage_ + 1 == plan_.num_stages())
    for (const auto& [m, l] : s.losses) r.loss += l.item<double>();
  for (const auto& [unit, sq] : unit_grad_sq_norms(model_)) r.unit_sq_norms.at(static_cast<size_t>(unit)) = sq;
  std::vector<double> v = r.pack();
  io_->fill_links(v, StepReduction::link_offset(plan_.job.model.layers));
  s.compute_s += seconds_since(c0);
  const auto r0 = Clock::now();
  try {
    allreduce_sum(comm_, v, options_.comm_timeout_s);
  } catch (const TimeoutError& e) {
    throw TimeoutError("the all-reduce of loss and gradient norms (some rank never arrived): " + std::string(e.what()));
  }
  const double allreduce_wait = seconds_since(r0);
  const auto c1 = Clock::now();
  r = StepReduction::unpack(v, plan_.job.model.layers, plan_.num_stages());
  s.stats.loss = r.loss;
  s.stats.grad_norm = r.grad_norm();
  s.stats.links = r.links;
  s.stats.wait_s = io_->wait_s() + allreduce_wait;
  io_->add_bytes(s.stats);
  optimizer_.step(s.stats.lr, clip_scale(s.stats.grad_norm, optim_.grad_clip));
  optimizer_.zero_grad();
  s.compute_s += seconds_since(c1);
  span("OPT", t0);
  (void)a;
}

// ---- the step's reduction ------------------------------------------------------------------

StepReduction::StepReduction(int layers, int stages)
    : unit_sq_norms(static_cast<size_t>(layers) + 2, 0.0), num_stages_(stages) {}

size_t StepReduction::link_offset(int layers) { return 1 + static_cast<size_t>(layers) + 2; }

std::vector<double> StepReduction::pack() const {
  std::vector<double> v(link_offset(static_cast<int>(unit_sq_norms.size()) - 2) +
                            kLinkSlots * static_cast<size_t>(std::max(num_stages_ - 1, 0)),
                        0.0);
  v[0] = loss;
  std::copy(unit_sq_norms.begin(), unit_sq_norms.end(), v.begin() + 1);
  return v;  // link slots: filled by StageIO::fill_links
}

StepReduction StepReduction::unpack(const std::vector<double>& v, int layers, int stages) {
  StepReduction r(layers, stages);
  r.loss = v.at(0);
  std::copy(v.begin() + 1, v.begin() + 1 + static_cast<std::ptrdiff_t>(r.unit_sq_norms.size()),
            r.unit_sq_norms.begin());
  const size_t link0 = link_offset(layers);
  for (int b = 0; b + 1 < stages; ++b) {
    const double* x = &v.at(link0 + kLinkSlots * static_cast<size_t>(b));
    r.links.push_back({b, b + 1, x[0], x[1], x[2]});
    r.links.push_back({b + 1, b, x[3], x[4], x[5]});
  }
  return r;
}

double StepReduction::grad_norm() const {
  std::vector<std::pair<int, double>> units;
  for (size_t u = 0; u < unit_sq_norms.size(); ++u) units.emplace_back(static_cast<int>(u), unit_sq_norms[u]);
  return global_norm(units);
}

void allreduce_sum(comm::Communicator* comm, std::vector<double>& values, double timeout_s) {
  if (comm && !values.empty()) comm->allreduce_sum(values.data(), static_cast<int>(values.size()), comm::Seconds(timeout_s));
}

}  // namespace geopipe::runtime
