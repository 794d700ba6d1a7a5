// The pipeline executor: an interpreter of this stage's action list (executor.h). The links are
// stage_io.h's; the compute and its per-micro-batch state are here; run() is the one loop, with
// a switch per action kind and one place that says where an error happened.
#include <geopipe/comm/communicator.h>
#include <geopipe/comm/group.h>
#include <geopipe/comm/nccl_transport.h>
#include <geopipe/core/error.h>
#include <geopipe/runtime/executor.h>

#include "grad_reducer.h"
#include "wait_state.h"
#include "stage_io.h"
#include "tags.h"
#include "timing.h"

#include <ATen/autocast_mode.h>
#include <torch/version.h>

#include <chrono>
#include <map>
#include <memory>

namespace geopipe::runtime {

namespace {

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

}  // namespace

// One of this rank's stages: its model and optimizer (the caller's), its links and its compute.
struct PipelineExecutor::Chunk {
  int stage = 0;
  GptStage* model = nullptr;
  AdamW* optimizer = nullptr;
  std::unique_ptr<StageIO> io;
  std::unique_ptr<StageCompute> compute;
  std::unique_ptr<GradReducer> reducer;  // replicas only
  bool prev_here = false, next_here = false;  // the neighbouring stage runs on this rank too
};

// The step's state between actions, per (stage, micro-batch). Tensors that cross ranks go
// through StageIO; those between two stages of this rank are handed over here, the same way.
struct PipelineExecutor::StepState {
  using Key = std::pair<int, int>;  // (stage, micro-batch)
  StepState(int64_t s, Mode m) : step(s), mode(m) {}
  int64_t step;
  Mode mode;
  StepStats stats;
  double compute_s = 0;
  double eval_loss_sum = 0;
  int eval_batches = 0;
  std::map<Key, at::Tensor> inputs;     // a stage's input from the previous stage on this rank
  std::map<Key, at::Tensor> grads_in;   // the gradient of a stage's output from the next stage on this rank
  std::map<Key, at::Tensor> outputs;    // a stage's output, to SEND_F
  std::map<Key, at::Tensor> grads_out;  // the gradient of a stage's input, to SEND_B
  std::map<int, at::Tensor> losses;     // last stage: mb -> loss / M
};

PipelineExecutor::PipelineExecutor(const Plan& plan, std::vector<StageChunk> chunks, const TokenDataset& data,
                                   comm::Communicator* comm, Schedule schedule, const OptimConfig& optim,
                                   ExecutorOptions options)
    : plan_(plan), rank_(comm ? comm->rank() : 0), data_(data), comm_(comm), optim_(optim),
      options_(std::move(options)) {
  const int S = plan.num_stages();
  if (schedule.num_stages != S)
    throw InputError("schedule", "stages", "schedule has " + std::to_string(schedule.num_stages) +
                                               " stages, the plan has " + std::to_string(S));
  replica_ = std::max(plan.replica_of(rank_), 0);
  replicas_ = plan.replicas();
  // The schedule is one replica's pipeline: its rank p is the position of this replica's rank
  // that runs the stages the schedule places on p.
  const int position = schedule.stage_rank.at(static_cast<size_t>(std::max(plan.stage_of_rank(rank_), 0)));
  for (int s = 0; s < S; ++s)
    if ((schedule.stage_rank.at(static_cast<size_t>(s)) == position) != (plan.rank_of(s, replica_) == rank_))
      throw InputError("schedule", "stage_rank", "the schedule runs stage " + std::to_string(s) + " on its rank " +
                                                     std::to_string(schedule.stage_rank[static_cast<size_t>(s)]) +
                                                     ", the plan (replica " + std::to_string(replica_) + ") on rank " +
                                                     std::to_string(plan.rank_of(s, replica_)));
  if ((replicas_ > 1) != (options_.replica_group != nullptr))
    throw Error("PipelineExecutor: a plan with " + std::to_string(replicas_) + " replicas needs " +
                (replicas_ > 1 ? "a replica group" : "no replica group"));
  if (schedule.num_micro_batches != plan.job.micro_batches)
    throw InputError("schedule", "micro_batches", "schedule has " + std::to_string(schedule.num_micro_batches) +
                                                      " micro-batches, the job has " +
                                                      std::to_string(plan.job.micro_batches));
  if (static_cast<int64_t>(plan.job.micro_batches) * S > kMaxMicroBatches)
    throw InputError("job", "micro_batches", "at most " + std::to_string(kMaxMicroBatches) +
                                                 " micro-batches x stages per step are supported (message tags), got " +
                                                 std::to_string(plan.job.micro_batches) + " x " + std::to_string(S));
  if (plan.world_size() > 1 && !comm) throw Error("PipelineExecutor: a multi-rank plan needs a communicator");
  actions_ = schedule.ranks.at(static_cast<size_t>(position));
  for (const StageChunk& c : chunks) {
    Chunk k;
    k.stage = c.stage;
    k.model = c.model;
    k.optimizer = c.optimizer;
    k.io = std::make_unique<StageIO>(plan, c.stage, replica_, c.model->device(), comm, options_,
                                     options_.record_trace ? &trace_ : nullptr);
    // A plan that recomputes (the planner's way of fitting the GPU's memory) is run so, whatever
    // --recompute says: its memory prediction assumes it.
    const Recompute recompute = plan.schedule.recompute ? Recompute::kFull : options_.recompute;
    k.compute = std::make_unique<StageCompute>(*c.model, recompute);
    if (options_.replica_group) {
      k.reducer = std::make_unique<GradReducer>(*c.model, c.stage, *options_.replica_group, plan.job.micro_batches,
                                                options_.shard_optimizer);
      k.compute->set_weight_grad_observer([r = k.reducer.get()](const at::Tensor& p) { r->on_accumulated(p); });
    }
    chunks_.push_back(std::move(k));
  }
  for (Chunk& k : chunks_) {
    k.prev_here = k.stage > 0 && stage_here(k.stage - 1);
    k.next_here = k.stage + 1 < S && stage_here(k.stage + 1);
  }
  start_adaptive_codecs();
}

// One controller per direction of every adaptive link between two ranks, on every rank
// (adapt_codecs): every such link with --codec adaptive, the plan's adaptive links without it;
// a forced codec (--codec int8, ...) makes every link fixed.
void PipelineExecutor::start_adaptive_codecs() {
  if (!options_.codec_forward_override.empty() || !options_.codec_backward_override.empty()) return;
  for (const LinkPlan& l : plan_.links) {
    if (plan_.stages.at(static_cast<size_t>(l.from_stage)).ranks == plan_.stages.at(static_cast<size_t>(l.to_stage)).ranks)
      continue;  // one rank: tensors pass in memory
    if (!options_.adaptive_codecs && !l.adaptive) continue;
    adaptive_.emplace(std::make_pair(l.from_stage, l.to_stage),
                      AdaptiveCodec(true, l.codec_forward, options_.adaptive));
    adaptive_.emplace(std::make_pair(l.to_stage, l.from_stage),
                      AdaptiveCodec(false, l.codec_backward, options_.adaptive));
  }
}

PipelineExecutor::~PipelineExecutor() = default;

bool PipelineExecutor::stage_here(int stage) const {
  return std::any_of(chunks_.begin(), chunks_.end(), [&](const Chunk& k) { return k.stage == stage; });
}

PipelineExecutor::Chunk& PipelineExecutor::chunk(int stage) {
  for (Chunk& k : chunks_)
    if (k.stage == stage) return k;
  throw Error("stage " + std::to_string(stage) + " does not run on rank " + std::to_string(rank_));
}

void PipelineExecutor::span(const std::string& name, double start_us) {
  if (options_.record_trace) trace_.push_back({name, start_us, now_us() - start_us});
}

StepStats PipelineExecutor::train_step(int64_t step) {
  const auto t0 = Clock::now();
  StepState s(step, Mode::kTrain);
  s.stats.step = step;
  s.stats.lr = learning_rate(optim_, step);
  for (Chunk& k : chunks_)
    if (k.reducer) k.reducer->begin_step();
  run(actions_, s);
  s.stats.compute_s = s.compute_s;
  s.stats.step_s = seconds_since(t0);
  return s.stats;
}

// Evaluation: forward only, each micro-batch through this rank's stages in order, received,
// computed and passed on (sends never block, so the order cannot deadlock).
std::vector<Action> PipelineExecutor::eval_actions(int batches) const {
  std::vector<Action> list;
  for (int mb = 0; mb < batches; ++mb)
    for (const Chunk& k : chunks_) {
      if (k.stage > 0 && !k.prev_here) list.push_back({k.stage, ActionKind::kRecvF, mb});
      list.push_back({k.stage, ActionKind::kForward, mb});
      if (k.stage + 1 < plan_.num_stages() && !k.next_here) list.push_back({k.stage, ActionKind::kSendF, mb});
    }
  return list;
}

// Replica r evaluates batches r, r + R, ... of the `batches`; the mean is over all of them.
double PipelineExecutor::evaluate(int64_t step, int batches) {
  at::NoGradGuard no_grad;
  batches = std::min(batches, replicas_ * (kMaxMicroBatches / plan_.num_stages()));  // message tags (tags.h)
  StepState s(step, Mode::kEval);
  s.eval_batches = std::max(0, (batches - replica_ + replicas_ - 1) / replicas_);
  run(eval_actions(s.eval_batches), s);
  for (Chunk& k : chunks_) k.io->finish_sends();
  std::vector<double> v = {stage_here(plan_.num_stages() - 1) ? s.eval_loss_sum / batches : 0.0};
  allreduce_sum(comm_, v, options_.comm_timeout_s);
  return v[0];
}

// The interpreter: every action in order; any error is re-thrown saying where it happened.
void PipelineExecutor::run(const std::vector<Action>& actions, StepState& s) {
  const int micro_batches = s.mode == Mode::kTrain ? plan_.job.micro_batches : s.eval_batches;
  for (Chunk& k : chunks_)
    k.io->begin(s.step, actions, s.mode == Mode::kTrain ? StageIO::Mode::kTrain : StageIO::Mode::kEval,
                micro_batches);
  if (s.mode == Mode::kTrain) {  // NCCL groups of this list (none in evaluation, which is MPI)
    nccl_groups_.clear();
    for (const auto& [first, end] : comm_groups(actions))
      for (size_t i = first; i < end; ++i)
        if (chunk(actions[i].stage).io->on_nccl(actions[i])) {
          nccl_groups_[first] = end;
          break;
        }
  }
  for (size_t index = 0; index < actions.size(); ++index) {
    const Action& a = actions[index];
    try {
      for (Chunk& k : chunks_) k.io->poll_sends();
      if (s.mode == Mode::kTrain) issue_nccl_group(index, s);
      execute(index, a, s);
    } catch (const InputError&) {
      throw;
    } catch (const TimeoutError& e) {
      throw TimeoutError(where(a, s.step) + e.what(), e.peer());
    } catch (const Error& e) {
      throw Error(where(a, s.step) + e.what());
    }
  }
  bool idle = true;
  for (const Chunk& k : chunks_) idle = idle && k.io->idle() && k.compute->micro_batches().empty();
  if (!idle)
    throw Error("rank " + std::to_string(rank_) + ": step " + std::to_string(s.step + 1) +
                " ended with unfinished micro-batches; schedule:\n" + format_actions(actions));
}

// NCCL pairs operations in issue order: a run of consecutive sends and receives is issued as one
// batch when the list reaches it (its sends' tensors exist: their compute came before).
void PipelineExecutor::issue_nccl_group(size_t index, StepState& s) {
  auto g = nccl_groups_.find(index);
  if (g == nccl_groups_.end()) return;
  comm::TransportBatch batch(*options_.nccl);
  for (size_t i = g->first; i < g->second; ++i) {
    const Action& op = actions_[i];
    Chunk& k = chunk(op.stage);
    if (!k.io->on_nccl(op)) continue;
    const bool send = op.kind == ActionKind::kSendF || op.kind == ActionKind::kSendB;
    k.io->issue(i, send ? tensor_to_send(op, s) : at::Tensor());
  }
}

std::string PipelineExecutor::where(const Action& a, int64_t step) const {
  const int stage = a.kind == ActionKind::kOptimizer ? chunks_.front().stage : a.stage;
  return "stage " + std::to_string(stage) + " (rank " + std::to_string(rank_) + ") at " + to_string(a) + " of step " +
         std::to_string(step + 1) + ": ";
}

void PipelineExecutor::execute(size_t index, const Action& a, StepState& s) {
  const StepState::Key key{a.stage, a.micro_batch};
  switch (a.kind) {
    case ActionKind::kRecvF:
    case ActionKind::kRecvB:
      break;  // posted at the step's start (MPI) or with its group (NCCL); the compute waits for it
    case ActionKind::kForward:
      forward(a, s);
      break;
    case ActionKind::kBackward:
    case ActionKind::kInputGrad:
      backward(a, s);
      break;
    case ActionKind::kWeightGrad: {
      const double t0 = now_us();
      const auto c0 = Clock::now();
      chunk(a.stage).compute->backward_weight(a.micro_batch);
      s.compute_s += seconds_since(c0);
      span(to_string(a).substr(std::to_string(a.stage).size()), t0);
      if (options_.after_compute) options_.after_compute(s.step, a);
      break;
    }
    case ActionKind::kSendF:
    case ActionKind::kSendB: {
      StageIO& io = *chunk(a.stage).io;
      if (!io.issued(index)) io.send(index, tensor_to_send(a, s));
      (a.kind == ActionKind::kSendF ? s.outputs : s.grads_out).erase(key);
      break;
    }
    case ActionKind::kOptimizer:
      optimizer_step(s);
      break;
  }
}

at::Tensor PipelineExecutor::tensor_to_send(const Action& a, StepState& s) const {
  const StepState::Key key{a.stage, a.micro_batch};
  return a.kind == ActionKind::kSendF ? s.outputs.at(key) : s.grads_out.at(key);
}

void PipelineExecutor::forward(const Action& a, StepState& s) {
  const int mb = a.micro_batch, B = plan_.job.micro_batch, T = plan_.job.model.seq_len;
  Chunk& k = chunk(a.stage);
  const bool first = a.stage == 0, last = a.stage + 1 == plan_.num_stages();
  const at::Device dev = k.model->device();
  TokenBatch batch;
  if (first || last)
    batch = sample_batch(data_, s.mode == Mode::kTrain ? Split::kTrain : Split::kVal, options_.seed, s.step,
                         global_micro_batch(mb, s), B, T);
  at::Tensor input;
  if (first) {
    input = at::tensor(batch.inputs, at::TensorOptions().dtype(at::kLong)).view({B, T}).to(dev);
  } else if (k.prev_here) {
    input = s.inputs.at({a.stage, mb});
    s.inputs.erase({a.stage, mb});
  } else {
    input = k.io->wait_recv(ActionKind::kRecvF, mb);
  }
  at::Tensor targets;
  if (last) targets = at::tensor(batch.targets, at::TensorOptions().dtype(at::kLong)).view({B, T}).to(dev);
  const double t0 = now_us();  // the compute span starts after the input arrived (its wait has its own)
  const auto c0 = Clock::now();
  at::Tensor out;
  {
    AutocastScope autocast(options_.bf16_autocast, dev);
    out = s.mode == Mode::kTrain ? k.compute->forward(mb, input, targets, static_cast<double>(plan_.job.micro_batches))
                                 : k.model->forward(input);
  }
  if (last && s.mode == Mode::kEval) out = GptStage::loss(out, targets);  // outside autocast, as in training
  s.compute_s += seconds_since(c0);
  if (last && s.mode == Mode::kEval) s.eval_loss_sum += out.item<double>();
  else if (last) s.losses[mb] = out;
  else if (k.next_here) s.inputs[{a.stage + 1, mb}] = out;
  else s.outputs[{a.stage, mb}] = out;
  if (s.mode == Mode::kTrain) {
    span("F" + std::to_string(mb), t0);
    note_activations(s);
    if (options_.after_compute) options_.after_compute(s.step, a);
  }
}

// Batches are a function of (seed, step, global micro-batch): replica r trains on micro-batches
// r M .. r M + M - 1 of the step, so R replicas see what one process running R M would.
int PipelineExecutor::global_micro_batch(int mb, const StepState& s) const {
  return s.mode == Mode::kTrain ? replica_ * plan_.job.micro_batches + mb : mb * replicas_ + replica_;
}

void PipelineExecutor::note_activations(StepState& s, int64_t rebuilding) const {
  int held = 0;
  int64_t bytes = rebuilding;
  for (const Chunk& k : chunks_) {
    held += static_cast<int>(k.compute->micro_batches().size());
    bytes += k.compute->live_bytes();
  }
  s.stats.peak_activations = std::max(s.stats.peak_activations, held);
  s.stats.peak_activation_bytes = std::max(s.stats.peak_activation_bytes, bytes);
}

// The training state is steady after the first OPT (gradients are zeroed, not freed), so the
// activation peak plus the state is the step's peak of what the tensors hold.
void PipelineExecutor::note_held(StepState& s) const {
  int64_t state = 0;
  for (const Chunk& k : chunks_) {
    for (const NamedTensor& p : k.model->named_parameters()) {
      state += static_cast<int64_t>(p.tensor.nbytes());
      if (p.tensor.grad().defined()) state += static_cast<int64_t>(p.tensor.grad().nbytes());
    }
    state += k.optimizer->state_bytes();
  }
  s.stats.peak_held_bytes = s.stats.peak_activation_bytes + state;
}

// B (every gradient) or I (the input gradient; the linear layers' weight gradients wait for W).
void PipelineExecutor::backward(const Action& a, StepState& s) {
  const int mb = a.micro_batch;
  Chunk& k = chunk(a.stage);
  at::Tensor grad_output;
  if (a.stage + 1 < plan_.num_stages()) {
    if (k.next_here) {
      grad_output = s.grads_in.at({a.stage, mb});
      s.grads_in.erase({a.stage, mb});
    } else {
      grad_output = k.io->wait_recv(ActionKind::kRecvB, mb);
    }
  }
  const double t0 = now_us();  // after the gradient arrived (its wait has its own span)
  note_activations(s, k.compute->rebuild_bytes(mb));
  const auto c0 = Clock::now();
  at::Tensor grad_input = a.kind == ActionKind::kBackward ? k.compute->backward(mb, grad_output)
                                                          : k.compute->backward_input(mb, grad_output);
  s.compute_s += seconds_since(c0);
  if (a.stage > 0) (k.prev_here ? s.grads_in[{a.stage - 1, mb}] : s.grads_out[{a.stage, mb}]) = grad_input;
  span(std::string(action_kind_name(a.kind)) + std::to_string(mb), t0);
  if (options_.after_compute) options_.after_compute(s.step, a);
}

// OPT: the step's sends finish (the next step reuses tags), the replicas average their
// gradients, one all-reduce carries the loss, the gradient norms and the link measurements, then
// clipping and AdamW on every stage here (ZeRO-1: on this replica's slices, then all-gathered).
void PipelineExecutor::optimizer_step(StepState& s) {
  for (Chunk& k : chunks_) k.io->finish_sends();
  const double t0 = now_us();
  reduce_gradients(s);
  const auto c0 = Clock::now();
  const int L = plan_.job.model.layers, S = plan_.num_stages();
  std::vector<double> v = local_reduction(s).pack();
  if (replica_ == 0)
    for (const Chunk& k : chunks_) k.io->fill_links(v, StepReduction::link_offset(L));
  s.compute_s += seconds_since(c0);
  const auto r0 = Clock::now();
  try {
    const detail::WaitMark mark(detail::kWaitingForAGroup);
    allreduce_sum(comm_, v, options_.comm_timeout_s);
  } catch (const TimeoutError& e) {
    throw TimeoutError("the all-reduce of loss and gradient norms (some rank never arrived): " + std::string(e.what()));
  }
  const double allreduce_wait = seconds_since(r0);
  const auto c1 = Clock::now();
  const StepReduction r = StepReduction::unpack(v, L, S);
  s.stats.loss = r.loss / replicas_;
  s.stats.grad_norm = r.grad_norm();
  s.stats.links = r.links;
  adapt_codecs(s, r);
  s.stats.wait_s += allreduce_wait;
  const double scale = clip_scale(s.stats.grad_norm, optim_.grad_clip);
  for (const Chunk& k : chunks_) {
    s.stats.wait_s += k.io->wait_s();
    k.io->add_bytes(s.stats);
    if (options_.shard_optimizer) {
      const std::vector<at::Tensor> grads = k.reducer->shard_grads();
      k.optimizer->step(s.stats.lr, scale, &grads);
      k.reducer->gather_parameters(options_.comm_timeout_s);
    } else {
      k.optimizer->step(s.stats.lr, scale);
    }
    // Every parameter's gradient, not only the optimizer's (ZeRO-1: the slices of this replica).
    for (const NamedTensor& p : k.model->named_parameters())
      if (p.tensor.grad().defined()) p.tensor.mutable_grad().zero_();
  }
  s.compute_s += seconds_since(c1);
  note_held(s);
  span("OPT", t0);
}

// Replicas: every bucket of every stage here completes (most of them during the backward); the
// wait is the all-reduce time the backward did not hide.
void PipelineExecutor::reduce_gradients(StepState& s) {
  for (const Chunk& k : chunks_) {
    if (!k.reducer) continue;
    try {
      const detail::WaitMark mark(detail::kWaitingForAGroup);
      s.stats.allreduce_exposed_s += k.reducer->finish(options_.comm_timeout_s);
    } catch (const TimeoutError& e) {
      throw TimeoutError("stage " + std::to_string(k.stage) + " averaging gradients over its replicas: " + e.what());
    }
    s.stats.allreduce_s += k.reducer->busy_s();
    if (!options_.record_trace) continue;
    const double shift_us = now_us() - comm::steady_now_s() * 1e6;  // steady clock -> the trace's
    for (const GradReducer::Span& sp : k.reducer->spans())
      trace_.push_back({sp.name, sp.start_s * 1e6 + shift_us, (sp.end_s - sp.start_s) * 1e6});
  }
  s.stats.wait_s += s.stats.allreduce_exposed_s;
}

// This rank's part of the step's reduction (see StepReduction).
StepReduction PipelineExecutor::local_reduction(const StepState& s) const {
  StepReduction r(plan_.job.model.layers, plan_.num_stages());
  for (const auto& [m, l] : s.losses) r.loss += l.item<double>();
  for (const Chunk& k : chunks_) {
    if (options_.shard_optimizer) {
      for (const auto& [unit, sq] : k.reducer->shard_unit_sq_norms()) r.unit_sq_norms.at(static_cast<size_t>(unit)) += sq;
    } else if (replica_ == 0) {
      for (const auto& [unit, sq] : unit_grad_sq_norms(*k.model)) r.unit_sq_norms.at(static_cast<size_t>(unit)) = sq;
    }
    if (replica_ == 0)
      r.stage_compute_s.at(static_cast<size_t>(k.stage)) = s.compute_s / static_cast<double>(chunks_.size());
  }
  return r;
}

// ---- the step's reduction ------------------------------------------------------------------

// Every rank runs every link's controller on the same all-reduced numbers, so the two ends of a
// link switch together, at this step boundary; each rank retunes only its own stages' ends.
void PipelineExecutor::adapt_codecs(StepState& s, const StepReduction& r) {
  const double period = *std::max_element(r.stage_compute_s.begin(), r.stage_compute_s.end());
  for (LinkStats& l : s.stats.links) {
    auto it = adaptive_.find({l.from_stage, l.to_stage});
    if (it == adaptive_.end()) continue;
    l.codec = it->second.codec();
    std::string reason;
    if (!it->second.observe(l.busy_s, period, &reason)) continue;
    l.codec_next = it->second.codec();
    l.codec_reason = reason;
    bool mine = false;
    for (Chunk& k : chunks_)
      if (k.stage == l.from_stage || k.stage == l.to_stage) {
        k.io->set_codec(l.from_stage, l.to_stage, l.codec_next);
        mine = true;
      }
    if (mine) span("codec " + l.name() + " " + l.codec + " -> " + l.codec_next, now_us());  // an instant in the trace
  }
}

StepReduction::StepReduction(int layers, int stages)
    : unit_sq_norms(static_cast<size_t>(layers) + 2, 0.0), stage_compute_s(static_cast<size_t>(stages), 0.0),
      num_stages_(stages) {}

size_t StepReduction::link_offset(int layers) { return 1 + static_cast<size_t>(layers) + 2; }

size_t StepReduction::compute_offset(int layers, int stages) {
  return link_offset(layers) + kLinkSlots * static_cast<size_t>(std::max(stages - 1, 0));
}

std::vector<double> StepReduction::pack() const {
  const int layers = static_cast<int>(unit_sq_norms.size()) - 2;
  std::vector<double> v(compute_offset(layers, num_stages_) + static_cast<size_t>(num_stages_), 0.0);
  v[0] = loss;
  std::copy(unit_sq_norms.begin(), unit_sq_norms.end(), v.begin() + 1);
  std::copy(stage_compute_s.begin(), stage_compute_s.end(),
            v.begin() + static_cast<std::ptrdiff_t>(compute_offset(layers, num_stages_)));
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
    LinkStats fwd, bwd;
    fwd.from_stage = bwd.to_stage = b;
    fwd.to_stage = bwd.from_stage = b + 1;
    std::tie(fwd.bytes, fwd.busy_s, fwd.wait_s) = std::make_tuple(x[0], x[1], x[2]);
    std::tie(bwd.bytes, bwd.busy_s, bwd.wait_s) = std::make_tuple(x[3], x[4], x[5]);
    r.links.push_back(fwd);
    r.links.push_back(bwd);
  }
  const size_t c0 = compute_offset(layers, stages);
  std::copy(v.begin() + static_cast<std::ptrdiff_t>(c0), v.begin() + static_cast<std::ptrdiff_t>(c0) + stages,
            r.stage_compute_s.begin());
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
