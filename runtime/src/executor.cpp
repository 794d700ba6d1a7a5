#include <geopipe/comm/communicator.h>
#include <geopipe/comm/router.h>
#include <geopipe/comm/torch.h>
#include <geopipe/core/error.h>
#include <geopipe/kernels/torch_codec.h>
#include <geopipe/runtime/executor.h>

#include "tags.h"

#include <ATen/autocast_mode.h>
#include <spdlog/spdlog.h>
#include <torch/version.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <optional>
#include <thread>

namespace geopipe::runtime {

namespace {

using Clock = std::chrono::steady_clock;

double now_us() {
  return static_cast<double>(
      std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch())
          .count());
}

uint64_t job_id_of(const std::string& name) { return std::stoull(fnv1a_hex(name), nullptr, 16); }

std::string secs(double s) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%g s", s);
  return buf;
}

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Length of the union of [start, end] intervals: the time a link had something in flight.
double busy_time(std::vector<std::pair<double, double>> spans) {
  if (spans.empty()) return 0;
  std::sort(spans.begin(), spans.end());
  double total = 0, open = spans[0].first, close = spans[0].second;
  for (const auto& [a, b] : spans) {
    if (a > close) {  // a gap: the link was idle
      total += close - open;
      open = a;
    }
    close = std::max(close, b);
  }
  return total + close - open;
}


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

// Per-step state: posted receives, in-flight sends, live activations.
struct PipelineExecutor::Impl {
  struct Posted {
    comm::Request request;
    at::Tensor buffer;  // decoded tensor (codec none) or the wire bytes (compressed)
    bool compressed = false;
  };
  std::map<std::pair<ActionKind, int>, Posted> recvs;
  struct InFlight {
    comm::Request request;
    bool forward = true;            // to the next stage (activation) or the previous (gradient)
    double start_s = 0, end_s = -1; // seconds since the step began; end < 0: not seen complete
  };
  std::vector<InFlight> sends;
  std::map<int, std::pair<at::Tensor, at::Tensor>> live;  // mb -> (input leaf, output)
  std::map<int, at::Tensor> losses;                       // last stage: mb -> loss / M
  std::map<int, at::Tensor> received;                     // mb -> received activation (F input)
  std::map<int, at::Tensor> grads_in;                     // mb -> gradient of my output
  std::map<int, at::Tensor> grads_out;                    // mb -> gradient of my input, to send
};

void allreduce_sum(comm::Communicator* comm, std::vector<double>& values, double timeout_s) {
  if (comm && !values.empty()) comm->allreduce_sum(values.data(), static_cast<int>(values.size()), comm::Seconds(timeout_s));
}

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
  auto pick = [&](const std::string& plan_codec, const std::string& override_codec) {
    if (override_codec.empty() || override_codec == "plan") return plan_codec;
    return override_codec;
  };
  const std::string& of = options_.codec_forward_override;
  const std::string& ob = options_.codec_backward_override;
  if (const LinkPlan* l = plan.link_between(stage, stage + 1)) {
    codec_fwd_ = pick(l->codec_forward, of);
    codec_in_bwd_ = pick(l->codec_backward, ob);
  }
  if (const LinkPlan* l = plan.link_between(stage - 1, stage)) {
    codec_in_fwd_ = pick(l->codec_forward, of);
    codec_bwd_ = pick(l->codec_backward, ob);
  }
  // Backend per neighbour: comm's Router decides (same region + GPU tensors + NCCL -> NCCL), and
  // applies the plan's transport: "mpi" forces MPI; "nccl" where NCCL cannot reach the peer
  // falls back to MPI with a warning (a GPU plan tried on CPU).
  if (comm) {
    router_ = std::make_unique<comm::Router>(*comm, options_.nccl, model.device().is_cuda());
    for (int s : {stage - 1, stage + 1}) {
      const LinkPlan* l = s < stage ? plan.link_between(s, stage) : plan.link_between(stage, s);
      if (!l) continue;
      const int peer_rank = plan.stages.at(s).ranks.at(0);
      if (const std::string why = router_->follow_plan(peer_rank, l->transport); !why.empty())
        spdlog::warn("stage {}: the plan's link to stage {} says nccl, but {}; using MPI", stage, s, why);
    }
    nccl_next_ = stage + 1 < S && router_->backend_for(plan.stages[stage + 1].ranks.at(0)) == comm::Backend::kNccl;
    nccl_prev_ = stage > 0 && router_->backend_for(plan.stages[stage - 1].ranks.at(0)) == comm::Backend::kNccl;
  }
  // NCCL: each run of consecutive sends and receives with an NCCL operation is one group.
  if (nccl_prev_ || nccl_next_)
    for (const auto& [begin, end] : comm_groups(actions_))
      for (size_t i = begin; i < end; ++i) {
        const ActionKind k = actions_[i].kind;
        const bool to_next = k == ActionKind::kSendF || k == ActionKind::kRecvB;
        if (to_next ? nccl_next_ : nccl_prev_) {
          nccl_groups_[begin] = end;
          break;
        }
      }
  for (const std::string& c : {codec_fwd_, codec_bwd_, codec_in_fwd_, codec_in_bwd_}) {
    kernels::Codec parsed;
    if (c != "none" && !kernels::parse_codec(c, &parsed))
      throw InputError("--codec", "codec", "unknown codec \"" + c + "\"");
  }
}

PipelineExecutor::~PipelineExecutor() = default;

StepStats PipelineExecutor::train_step(int64_t step) {
  const auto t_step = Clock::now();
  const int S = plan_.num_stages(), M = plan_.job.micro_batches;
  const int B = plan_.job.micro_batch, T = plan_.job.model.seq_len, C = plan_.job.model.d_model;
  const bool first = stage_ == 0, last = stage_ == S - 1;
  const at::Device dev = model_.device();
  const comm::Seconds timeout(options_.comm_timeout_s);
  const std::vector<int64_t> act_shape = {B, T, C};
  const uint64_t job_id = job_id_of(plan_.job.name);
  StepStats st;
  st.step = step;
  st.lr = learning_rate(optim_, step);
  Impl I;

  auto peer = [&](int s) { return plan_.stages.at(s).ranks.at(0); };
  auto span = [&](const std::string& name, double start_us) {
    if (options_.record_trace) trace_.push_back({name, start_us, now_us() - start_us});
  };
  auto codec_spec = [&](const std::string& name, int mb, bool gradient) {
    kernels::CodecSpec spec;
    spec.codec = kernels::codec_from_name(name);
    spec.seed = options_.seed;
    spec.offset = static_cast<uint64_t>(step) * 2 * M + 2 * mb + (gradient ? 1 : 0);
    return spec;
  };

  // The transport of the link to stage s (a neighbour), and whether it is NCCL.
  auto is_nccl = [&](int s) { return s > stage_ ? nccl_next_ : nccl_prev_; };
  auto transport = [&](int s) -> comm::Transport& { return router_->to(peer(s)); };
  auto post_recv = [&](const Action& a) {
    const bool fwd = a.kind == ActionKind::kRecvF;
    const int from = fwd ? stage_ - 1 : stage_ + 1;
    const int src = peer(from);
    const int tag = (fwd ? kTagForward : kTagBackward) + a.micro_batch;
    const std::string& codec = fwd ? codec_in_fwd_ : codec_in_bwd_;
    comm::Expect expect;
    expect.stage = from;
    expect.micro_batch = a.micro_batch;
    expect.kind = fwd ? comm::MessageKind::kActivation : comm::MessageKind::kGradient;
    expect.shape = act_shape;
    expect.elem_type = comm::ElemType::kFloat32;
    expect.codec = codec;
    expect.job = job_id;
    // NCCL receives land on the GPU and need the exact size (packed_size is exact); MPI ones in host memory.
    const at::Device where = is_nccl(from) ? dev : at::Device(at::kCPU);
    Impl::Posted p;
    if (codec == "none") {
      p.buffer = at::empty(act_shape, at::TensorOptions().dtype(at::kFloat).device(where));
      p.request = comm::irecv_tensor(transport(from), p.buffer, src, tag, expect);
    } else {
      const size_t cap = kernels::packed_size(codec_spec(codec, a.micro_batch, !fwd), at::kFloat, act_shape);
      p.buffer = at::empty({static_cast<int64_t>(cap)}, at::TensorOptions().dtype(at::kByte).device(where));
      p.request = transport(from).irecv(p.buffer.data_ptr(), cap, src, tag, expect);
      p.compressed = true;
    }
    I.recvs[{a.kind, a.micro_batch}] = std::move(p);
  };

  // Post every MPI receive of the step now; NCCL ones are issued with their group (below).
  for (const Action& a : actions_) {
    if (a.kind != ActionKind::kRecvF && a.kind != ActionKind::kRecvB) continue;
    if (!is_nccl(a.kind == ActionKind::kRecvF ? stage_ - 1 : stage_ + 1)) post_recv(a);
  }

  double wait_from_prev = 0, wait_from_next = 0;
  // Marks sends seen complete (their end time: now, to within one action).
  auto poll_sends = [&] {
    for (auto& f : I.sends)
      if (f.end_s < 0 && f.request.test()) f.end_s = seconds_since(t_step);
  };
  auto sends_in_flight = [&] {
    for (const auto& f : I.sends)
      if (f.end_s < 0) return true;
    return false;
  };

  auto wait_recv = [&](ActionKind kind, int mb) -> at::Tensor {
    const double t0 = now_us();
    const auto w0 = Clock::now();
    Impl::Posted& p = I.recvs.at({kind, mb});
    const int from = kind == ActionKind::kRecvF ? stage_ - 1 : stage_ + 1;
    try {
      // While this step's sends are in flight, poll them too (every 200 us), so their completion
      // times (the links' busy time) are not hidden behind this wait; the last part of the
      // timeout (at least min(1 s, timeout / 4)) is one blocking wait, which reports comm's detail.
      const auto deadline = w0 + std::chrono::duration_cast<Clock::duration>(timeout);
      const auto poll_until = deadline - std::chrono::duration_cast<Clock::duration>(
                                             std::min(comm::Seconds(1.0), timeout / 4));
      poll_sends();
      while (sends_in_flight() && Clock::now() < poll_until && !p.request.test()) {
        std::this_thread::sleep_for(std::chrono::microseconds(200));
        poll_sends();
      }
      p.request.wait(std::max(comm::Seconds(0), comm::Seconds(deadline - Clock::now())));
    } catch (const TimeoutError& e) {
      std::string also;
      for (const auto& f : I.sends)
        if (f.end_s < 0) also = " (this step's sends to stage " + std::to_string(f.forward ? stage_ + 1 : stage_ - 1) +
                                " have not finished either)";
      throw TimeoutError("stage " + std::to_string(stage_) + " (rank " + std::to_string(peer(stage_)) + ") waited " +
                         secs(options_.comm_timeout_s) + " at " + to_string({stage_, kind, mb}) +
                         " of step " + std::to_string(step + 1) + " for stage " + std::to_string(from) + " (rank " +
                         std::to_string(peer(from)) + ")" + also + ": " + e.what());
    } catch (const Error& e) {  // a bad message: checksum, header, size
      throw Error("stage " + std::to_string(stage_) + " (rank " + std::to_string(peer(stage_)) +
                  ") received a bad message at " + to_string({stage_, kind, mb}) + " of step " +
                  std::to_string(step + 1) + " from stage " + std::to_string(from) + " (rank " +
                  std::to_string(peer(from)) + "); the step is abandoned, no optimizer step taken: " + e.what());
    }
    at::Tensor out = p.buffer;
    if (p.compressed) out = kernels::decompress(p.buffer.narrow(0, 0, static_cast<int64_t>(p.request.header().payload_bytes)));
    const double waited = seconds_since(w0);
    st.wait_s += waited;
    (kind == ActionKind::kRecvF ? wait_from_prev : wait_from_next) += waited;
    span(std::string(action_kind_name(kind)) + std::to_string(mb) + " wait", t0);
    I.recvs.erase({kind, mb});
    return out.to(dev);
  };

  auto send = [&](bool fwd, int mb, const at::Tensor& tensor) {
    const double t0 = now_us();
    const int to = fwd ? stage_ + 1 : stage_ - 1;
    const int dst = peer(to);
    const int tag = (fwd ? kTagForward : kTagBackward) + mb;
    const std::string& codec = fwd ? codec_fwd_ : codec_bwd_;
    const bool gpu_link = is_nccl(to);  // NCCL: the bytes stay on the GPU
    at::Tensor x = tensor.detach().to(at::kFloat).contiguous();
    comm::MessageHeader h = comm::tensor_header(x, fwd ? comm::MessageKind::kActivation : comm::MessageKind::kGradient,
                                                stage_, mb, job_id);
    uint64_t& raw = fwd ? st.fwd_raw : st.bwd_raw;
    uint64_t& wire = fwd ? st.fwd_wire : st.bwd_wire;
    raw += static_cast<uint64_t>(x.numel()) * sizeof(float);
    const double start_s = seconds_since(t_step);
    if (codec == "none") {
      I.sends.push_back({comm::isend_tensor(transport(to), x, dst, tag, h), fwd, start_s});
      wire += static_cast<uint64_t>(x.numel()) * sizeof(float);
    } else {
      kernels::Packed packed = kernels::compress(x, codec_spec(codec, mb, !fwd));
      at::Tensor bytes = gpu_link ? packed.bytes.contiguous() : packed.bytes.to(at::kCPU).contiguous();
      h.codec = codec;
      comm::Request r = transport(to).isend(bytes.data_ptr(), static_cast<size_t>(bytes.numel()), dst, tag, h);
      r.keep_alive(std::make_shared<at::Tensor>(bytes));
      I.sends.push_back({r, fwd, start_s});
      wire += static_cast<uint64_t>(bytes.numel());
    }
    span(std::string(fwd ? "SEND_F" : "SEND_B") + std::to_string(mb), t0);
  };
  // The tensor a SEND action sends (its compute has run).
  auto send_action = [&](const Action& a) {
    if (a.kind == ActionKind::kSendF) {
      send(true, a.micro_batch, I.live.at(a.micro_batch).second);
    } else {
      send(false, a.micro_batch, I.grads_out.at(a.micro_batch));
      I.grads_out.erase(a.micro_batch);
    }
  };
  auto action_peer = [&](const Action& a) {
    return a.kind == ActionKind::kSendF || a.kind == ActionKind::kRecvB ? stage_ + 1 : stage_ - 1;
  };
  std::vector<bool> issued(actions_.size(), false);  // SENDs already issued with their NCCL group

  double compute_s = 0;
  for (size_t index = 0; index < actions_.size(); ++index) {
    const Action& a = actions_[index];
    const int mb = a.micro_batch;
    poll_sends();
    if (auto g = nccl_groups_.find(index); g != nccl_groups_.end()) {
      comm::TransportBatch group(transport(nccl_next_ ? stage_ + 1 : stage_ - 1));  // one NCCL group
      for (size_t i = g->first; i < g->second; ++i) {
        const Action& op = actions_[i];
        if (!is_nccl(action_peer(op))) continue;
        if (op.kind == ActionKind::kRecvF || op.kind == ActionKind::kRecvB) post_recv(op);
        else send_action(op);
        issued[i] = true;
      }
    }
    switch (a.kind) {
      case ActionKind::kRecvF:
        I.received[mb] = wait_recv(a.kind, mb).set_requires_grad(true);
        break;
      case ActionKind::kRecvB:
        I.grads_in[mb] = wait_recv(a.kind, mb);
        break;
      case ActionKind::kForward: {
        const double t0 = now_us();
        const auto c0 = Clock::now();
        at::Tensor input;
        TokenBatch batch;
        if (first || last) batch = sample_batch(data_, Split::kTrain, options_.seed, step, mb, B, T);
        if (first) {
          input = at::tensor(batch.inputs, at::TensorOptions().dtype(at::kLong)).view({B, T}).to(dev);
        } else {
          input = I.received.at(mb);
          I.received.erase(mb);
        }
        at::Tensor out;
        {
          AutocastScope autocast(options_.bf16_autocast, dev);
          out = model_.forward(input);
        }
        if (last) {
          at::Tensor targets = at::tensor(batch.targets, at::TensorOptions().dtype(at::kLong)).view({B, T}).to(dev);
          I.losses[mb] = GptStage::loss(out, targets) / static_cast<double>(M);
        }
        I.live[mb] = {input, out};
        compute_s += seconds_since(c0);
        span("F" + std::to_string(mb), t0);
        if (options_.after_compute) options_.after_compute(step, a);
        break;
      }
      case ActionKind::kSendF:
        if (!issued[index]) send_action(a);
        break;
      case ActionKind::kBackward: {
        const double t0 = now_us();
        const auto c0 = Clock::now();
        auto& [input, out] = I.live.at(mb);
        if (last) {
          I.losses.at(mb).backward();
        } else {
          at::Tensor g = I.grads_in.at(mb);
          I.grads_in.erase(mb);
          out.backward(g.to(out.scalar_type()));
        }
        if (!first) I.grads_out[mb] = input.grad();  // the gradient to send back
        I.live.erase(mb);                           // activations of mb freed here
        compute_s += seconds_since(c0);
        span("B" + std::to_string(mb), t0);
        if (options_.after_compute) options_.after_compute(step, a);
        break;
      }
      case ActionKind::kSendB:
        if (!issued[index]) send_action(a);
        break;
      case ActionKind::kOptimizer: {
        // Sends must complete before the next step reuses tags; their buffers are ours.
        const auto w0 = Clock::now();
        const double tw = now_us();
        // One at a time, in the order sent (a link is a FIFO): each end time is when it finished.
        const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(timeout);
        std::vector<std::pair<double, double>> busy_next, busy_prev;
        for (auto& f : I.sends) {
          if (f.end_s < 0) {
            try {
              f.request.wait(std::max(comm::Seconds(0), comm::Seconds(deadline - Clock::now())));
            } catch (const TimeoutError& e) {
              const int to = f.forward ? stage_ + 1 : stage_ - 1;
              throw TimeoutError("stage " + std::to_string(stage_) + " (rank " + std::to_string(peer(stage_)) +
                                 ") waited " + secs(options_.comm_timeout_s) + " before " +
                                 to_string({stage_, ActionKind::kOptimizer, 0}) + " of step " + std::to_string(step + 1) +
                                 " for its send to stage " + std::to_string(to) + " (rank " + std::to_string(peer(to)) +
                                 ") to finish: " + e.what());
            }
            f.end_s = seconds_since(t_step);
          }
          (f.forward ? busy_next : busy_prev).emplace_back(f.start_s, f.end_s);
        }
        I.sends.clear();
        st.wait_s += seconds_since(w0);
        span("send wait", tw);
        const double t0 = now_us();
        const auto c0 = Clock::now();
        // Loss (last stage), per-unit squared gradient norms and the links' measurements (each
        // stage fills its own slots), one all-reduce for all.
        const int L = plan_.job.model.layers;
        const size_t link0 = static_cast<size_t>(L) + 3;  // 6 slots per stage boundary b
        std::vector<double> v(link0 + 6 * static_cast<size_t>(S - 1), 0.0);
        if (last)
          for (const auto& [m, l] : I.losses) v[0] += l.item<double>();
        for (const auto& [unit, sq] : unit_grad_sq_norms(model_)) v[1 + unit] = sq;
        if (!last) {  // boundary stage_ -> stage_+1: I send activations, receive gradients
          double* b = &v[link0 + 6 * static_cast<size_t>(stage_)];
          b[0] = static_cast<double>(st.fwd_wire);
          b[1] = busy_time(busy_next);
          b[5] = wait_from_next;
        }
        if (!first) {  // boundary stage_-1 -> stage_: I receive activations, send gradients
          double* b = &v[link0 + 6 * static_cast<size_t>(stage_ - 1)];
          b[2] = wait_from_prev;
          b[3] = static_cast<double>(st.bwd_wire);
          b[4] = busy_time(busy_prev);
        }
        compute_s += seconds_since(c0);
        const auto r0 = Clock::now();
        try {
          allreduce_sum(comm_, v, options_.comm_timeout_s);
        } catch (const TimeoutError& e) {
          throw TimeoutError("stage " + std::to_string(stage_) + " (rank " + std::to_string(peer(stage_)) + ") waited " +
                             secs(options_.comm_timeout_s) + " at " + to_string(a) + " of step " +
                             std::to_string(step + 1) + " for the all-reduce of loss and gradient norms (some rank "
                             "never arrived): " + e.what());
        }
        st.wait_s += seconds_since(r0);
        const auto c1 = Clock::now();
        st.loss = v[0];
        std::vector<std::pair<int, double>> units;
        for (int u = 0; u <= L + 1; ++u) units.emplace_back(u, v[1 + u]);
        st.grad_norm = global_norm(units);
        for (int b = 0; b + 1 < S; ++b) {
          const double* x = &v[link0 + 6 * static_cast<size_t>(b)];
          st.links.push_back({b, b + 1, x[0], x[1], x[2]});
          st.links.push_back({b + 1, b, x[3], x[4], x[5]});
        }
        optimizer_.step(st.lr, clip_scale(st.grad_norm, optim_.grad_clip));
        optimizer_.zero_grad();
        compute_s += seconds_since(c1);
        span("OPT", t0);
        break;
      }
    }
  }
  if (!I.live.empty() || !I.recvs.empty())
    throw Error("stage " + std::to_string(stage_) + ": step " + std::to_string(step) +
                " ended with unfinished micro-batches; schedule:\n" + format_actions(actions_));
  st.compute_s = compute_s;
  st.step_s = seconds_since(t_step);
  return st;
}

double PipelineExecutor::evaluate(int64_t step, int batches) {
  at::NoGradGuard no_grad;
  const int S = plan_.num_stages();
  const int B = plan_.job.micro_batch, T = plan_.job.model.seq_len, C = plan_.job.model.d_model;
  const bool first = stage_ == 0, last = stage_ == S - 1;
  const at::Device dev = model_.device();
  const comm::Seconds timeout(options_.comm_timeout_s);
  const uint64_t job_id = job_id_of(plan_.job.name);
  if (batches > kMaxMicroBatches) batches = kMaxMicroBatches;
  std::vector<comm::Request> sends;
  double loss_sum = 0;
  for (int mb = 0; mb < batches; ++mb) {
    TokenBatch batch;
    if (first || last) batch = sample_batch(data_, Split::kVal, options_.seed, step, mb, B, T);
    at::Tensor x;
    if (first) {
      x = at::tensor(batch.inputs, at::TensorOptions().dtype(at::kLong)).view({B, T}).to(dev);
    } else {
      at::Tensor buf = at::empty({B, T, C}, at::TensorOptions().dtype(at::kFloat));
      comm::Expect e;
      e.stage = stage_ - 1;
      e.micro_batch = mb;
      e.job = job_id;
      comm::irecv_tensor(*comm_, buf, plan_.stages[stage_ - 1].ranks[0], kTagEval + mb, e).wait(timeout);
      x = buf.to(dev);
    }
    at::Tensor out;
    {
      AutocastScope autocast(options_.bf16_autocast, dev);
      out = model_.forward(x);
    }
    if (last) {
      at::Tensor targets = at::tensor(batch.targets, at::TensorOptions().dtype(at::kLong)).view({B, T}).to(dev);
      loss_sum += GptStage::loss(out, targets).item<double>();
    } else {
      at::Tensor y = out.to(at::kFloat).to(at::kCPU).contiguous();
      sends.push_back(comm::isend_tensor(*comm_, y, plan_.stages[stage_ + 1].ranks[0], kTagEval + mb,
                                         comm::tensor_header(y, comm::MessageKind::kActivation, stage_, mb, job_id)));
    }
  }
  comm::wait_all(sends, timeout);
  std::vector<double> v = {last ? loss_sum / batches : 0.0};
  allreduce_sum(comm_, v, options_.comm_timeout_s);
  return v[0];
}

}  // namespace geopipe::runtime
