// A stage's links in one step (stage_io.h).
#include "stage_io.h"
#include "wait_state.h"

#include "tags.h"
#include "timing.h"

#include <geopipe/comm/communicator.h>
#include <geopipe/comm/nccl_transport.h>
#include <geopipe/comm/router.h>
#include <geopipe/comm/torch.h>
#include <geopipe/core/error.h>
#include <geopipe/kernels/torch_codec.h>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <thread>

namespace geopipe::runtime {

namespace {

std::string secs(double s) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%g s", s);
  return buf;
}

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

bool is_recv(ActionKind k) { return k == ActionKind::kRecvF || k == ActionKind::kRecvB; }

std::string pick_codec(const std::string& plan_codec, const std::string& override_codec) {
  return override_codec.empty() || override_codec == "plan" ? plan_codec : override_codec;
}

}  // namespace

uint64_t job_id_of(const std::string& name) { return std::stoull(fnv1a_hex(name), nullptr, 16); }

StageIO::StageIO(const Plan& plan, int stage, int replica, at::Device device, comm::Communicator* comm,
                 const ExecutorOptions& options, std::vector<TraceSpan>* trace)
    : plan_(plan), stage_(stage), replica_(replica), device_(device), comm_(comm), options_(options), trace_(trace),
      job_id_(job_id_of(plan.job.name)) {
  const std::string& of = options_.codec_forward_override;
  const std::string& ob = options_.codec_backward_override;
  if (const LinkPlan* l = plan.link_between(stage, stage + 1)) {
    codec_fwd_ = pick_codec(l->codec_forward, of);
    codec_in_bwd_ = pick_codec(l->codec_backward, ob);
  }
  if (const LinkPlan* l = plan.link_between(stage - 1, stage)) {
    codec_in_fwd_ = pick_codec(l->codec_forward, of);
    codec_bwd_ = pick_codec(l->codec_backward, ob);
  }
  for (const std::string& c : {codec_fwd_, codec_bwd_, codec_in_fwd_, codec_in_bwd_}) {
    kernels::Codec parsed;
    if (c != "none" && !kernels::parse_codec(c, &parsed))
      throw InputError("--codec", "codec", "unknown codec \"" + c + "\"");
  }
  if (!comm) return;
  // Backend per neighbour: comm's Router decides (same region + GPU tensors + NCCL -> NCCL; the
  // plan's "mpi" forces MPI; a "nccl" it cannot follow stays on MPI with the reason, warned here).
  router_ = std::make_unique<comm::Router>(*comm, options_.nccl, device.is_cuda());
  for (int s : {stage - 1, stage + 1}) {
    const LinkPlan* l = s < stage ? plan.link_between(s, stage) : plan.link_between(stage, s);
    if (!l) continue;
    const std::string why_not = router_->follow_plan(peer_rank(s), l->transport);
    if (!why_not.empty()) spdlog::warn("stage {}: the plan's link to stage {} says nccl, but {}; using MPI", stage, s, why_not);
  }
  const int S = plan.num_stages();
  nccl_next_ = stage + 1 < S && router_->backend_for(peer_rank(stage + 1)) == comm::Backend::kNccl;
  nccl_prev_ = stage > 0 && router_->backend_for(peer_rank(stage - 1)) == comm::Backend::kNccl;
}

StageIO::~StageIO() = default;

int StageIO::neighbour(const Action& a) const {
  return a.kind == ActionKind::kSendF || a.kind == ActionKind::kRecvB ? stage_ + 1 : stage_ - 1;
}

bool StageIO::link_on_nccl(int stage) const {
  return mode_ == Mode::kTrain && (stage > stage_ ? nccl_next_ : nccl_prev_);
}

bool StageIO::on_nccl(const Action& a) const {
  return a.stage == stage_ && (is_recv(a.kind) || a.kind == ActionKind::kSendF || a.kind == ActionKind::kSendB) &&
         link_on_nccl(neighbour(a));
}

comm::Transport& StageIO::transport(int stage) {
  if (mode_ == Mode::kEval) return *comm_;  // evaluation traffic stays on MPI
  return router_->to(peer_rank(stage));
}

const std::string& StageIO::codec_of(const Action& a) const {
  static const std::string none = "none";
  if (mode_ == Mode::kEval) return none;
  switch (a.kind) {
    case ActionKind::kSendF: return codec_fwd_;
    case ActionKind::kSendB: return codec_bwd_;
    case ActionKind::kRecvF: return codec_in_fwd_;
    default: return codec_in_bwd_;
  }
}

int StageIO::tag_of(const Action& a) const {
  const bool fwd = a.kind == ActionKind::kSendF || a.kind == ActionKind::kRecvF;
  const int boundary = std::min(stage_, neighbour(a));
  const int base = mode_ == Mode::kEval ? kTagEval : fwd ? kTagForward : kTagBackward;
  return message_tag(base, boundary, micro_batches_, a.micro_batch);
}

void StageIO::span(const std::string& name, double start_us) const {
  if (trace_ && mode_ == Mode::kTrain) trace_->push_back({name, start_us, now_us() - start_us});
}

double StageIO::since_start() const { return std::chrono::duration<double>(Clock::now() - start_).count(); }

// The wire codec's parameters: the dither of stochastic rounding differs per step, micro-batch
// and direction, and both ends compute the same spec.
static kernels::CodecSpec codec_spec(const std::string& name, uint64_t seed, int64_t step, int M, int mb, bool gradient) {
  kernels::CodecSpec spec;
  spec.codec = kernels::codec_from_name(name);
  spec.seed = seed;
  spec.offset = static_cast<uint64_t>(step) * 2 * M + 2 * mb + (gradient ? 1 : 0);
  return spec;
}

void StageIO::begin(int64_t step, const std::vector<Action>& actions, Mode mode, int micro_batches) {
  step_ = step;
  mode_ = mode;
  micro_batches_ = micro_batches;
  actions_ = &actions;
  start_ = Clock::now();
  recvs_.clear();
  sends_.clear();
  busy_next_.clear();
  busy_prev_.clear();
  wait_prev_s_ = wait_next_s_ = send_wait_s_ = 0;
  fwd_raw_ = fwd_wire_ = bwd_raw_ = bwd_wire_ = 0;
  issued_.assign(actions.size(), false);
  for (const Action& a : actions)  // every MPI receive now, so a neighbour's send never waits for us
    if (a.stage == stage_ && is_recv(a.kind) && !on_nccl(a)) post(a);
}

void StageIO::set_codec(int from_stage, int to_stage, const std::string& codec) {
  if (from_stage == stage_ && to_stage == stage_ + 1) codec_fwd_ = codec;
  else if (from_stage == stage_ + 1 && to_stage == stage_) codec_in_bwd_ = codec;
  else if (from_stage == stage_ && to_stage == stage_ - 1) codec_bwd_ = codec;
  else if (from_stage == stage_ - 1 && to_stage == stage_) codec_in_fwd_ = codec;
  else throw Error("stage " + std::to_string(stage_) + " is not an end of the link " + std::to_string(from_stage) +
                   " -> " + std::to_string(to_stage));
}

void StageIO::post(const Action& a) {
  const bool fwd = a.kind == ActionKind::kRecvF;
  const int from = neighbour(a);
  const std::string& codec = codec_of(a);
  const std::vector<int64_t> shape = {plan_.job.micro_batch, plan_.job.model.seq_len, plan_.job.model.d_model};
  comm::Expect expect;
  expect.stage = from;
  expect.micro_batch = a.micro_batch;
  expect.kind = fwd ? comm::MessageKind::kActivation : comm::MessageKind::kGradient;
  expect.shape = shape;
  expect.elem_type = comm::ElemType::kFloat32;
  expect.codec = codec;
  expect.job = job_id_;
  // NCCL receives land on the GPU and need the exact size (packed_size is exact); MPI ones in host memory.
  const at::Device where = link_on_nccl(from) ? device_ : at::Device(at::kCPU);
  Posted p;
  if (codec == "none") {
    p.buffer = at::empty(shape, at::TensorOptions().dtype(at::kFloat).device(where));
    p.request = comm::irecv_tensor(transport(from), p.buffer, peer_rank(from), tag_of(a), expect);
  } else {
    const kernels::CodecSpec spec =
        codec_spec(codec, options_.seed, step_, plan_.job.micro_batches, a.micro_batch, !fwd);
    const size_t cap = kernels::packed_size(spec, at::kFloat, shape);
    p.buffer = at::empty({static_cast<int64_t>(cap)}, at::TensorOptions().dtype(at::kByte).device(where));
    p.request = transport(from).irecv(p.buffer.data_ptr(), cap, peer_rank(from), tag_of(a), expect);
    p.compressed = true;
  }
  recvs_[{a.kind, a.micro_batch}] = std::move(p);
}

void StageIO::issue(size_t index, const at::Tensor& tensor) {
  const Action& op = (*actions_).at(index);
  if (is_recv(op.kind)) post(op);
  else send_now(op, tensor);
  issued_.at(index) = true;
}

void StageIO::poll_sends() {
  for (auto& f : sends_)
    if (f.end_s < 0 && f.request.test()) f.end_s = since_start();
}

// Waits on a posted receive; while this step's sends are in flight, polls them too (every
// 200 us), so their completion times (the links' busy time) are not hidden behind this wait. The
// last part of the timeout (at least min(1 s, timeout / 4)) is one blocking wait, which reports
// comm's own detail.
void StageIO::wait_posted(Posted& p, const Action& recv) {
  const int from = neighbour(recv);
  const comm::Seconds timeout(options_.comm_timeout_s);
  const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(timeout);
  const auto poll_until =
      deadline - std::chrono::duration_cast<Clock::duration>(std::min(comm::Seconds(1.0), timeout / 4));
  auto sends_in_flight = [&] {
    return std::any_of(sends_.begin(), sends_.end(), [](const InFlight& f) { return f.end_s < 0; });
  };
  try {
    const detail::WaitMark mark(peer_rank(from));
    poll_sends();
    while (sends_in_flight() && Clock::now() < poll_until && !p.request.test()) {
      std::this_thread::sleep_for(std::chrono::microseconds(200));
      poll_sends();
    }
    p.request.wait(std::max(comm::Seconds(0), comm::Seconds(deadline - Clock::now())));
  } catch (const TimeoutError& e) {
    std::string also;
    for (const auto& f : sends_)
      if (f.end_s < 0)
        also = " (this step's sends to stage " + std::to_string(f.forward ? stage_ + 1 : stage_ - 1) +
               " have not finished either)";
    throw TimeoutError(to_string(recv) + " waited " + secs(options_.comm_timeout_s) + " for stage " +
                           std::to_string(from) + " (rank " + std::to_string(peer_rank(from)) + ")" + also + ": " +
                           e.what(),
                       peer_rank(from));
  } catch (const Error& e) {  // a bad message: checksum, header, size
    throw Error(to_string(recv) + " received a bad message from stage " + std::to_string(from) + " (rank " +
                std::to_string(peer_rank(from)) + "); the step is abandoned, no optimizer step taken: " + e.what());
  }
}

at::Tensor StageIO::wait_recv(ActionKind recv_kind, int mb) {
  const double t0 = now_us();
  const auto w0 = Clock::now();
  const Action recv{stage_, recv_kind, mb};
  auto it = recvs_.find({recv_kind, mb});
  if (it == recvs_.end()) throw Error("no " + to_string(recv) + " was posted (the schedule lacks it, or names it twice)");
  const int from = neighbour(recv);
  wait_posted(it->second, recv);
  Posted& p = it->second;
  at::Tensor out = p.buffer;
  if (p.compressed)
    out = kernels::decompress(p.buffer.narrow(0, 0, static_cast<int64_t>(p.request.header().payload_bytes)));
  const double waited = std::chrono::duration<double>(Clock::now() - w0).count();
  (from < stage_ ? wait_prev_s_ : wait_next_s_) += waited;
  span(std::string(action_kind_name(recv_kind)) + std::to_string(mb) + " wait", t0);
  recvs_.erase(it);
  return out.to(device_);
}

void StageIO::send(size_t index, const at::Tensor& tensor) { send_now((*actions_)[index], tensor); }

void StageIO::send_now(const Action& a, const at::Tensor& tensor) {
  const double t0 = now_us();
  const bool fwd = a.kind == ActionKind::kSendF;
  const int to = neighbour(a);
  const std::string& codec = codec_of(a);
  at::Tensor x = tensor.detach().to(at::kFloat).contiguous();
  comm::MessageHeader h = comm::tensor_header(x, fwd ? comm::MessageKind::kActivation : comm::MessageKind::kGradient,
                                              stage_, a.micro_batch, job_id_);
  (fwd ? fwd_raw_ : bwd_raw_) += static_cast<uint64_t>(x.numel()) * sizeof(float);
  uint64_t& wire = fwd ? fwd_wire_ : bwd_wire_;
  const double start_s = since_start();
  if (codec == "none") {
    sends_.push_back({comm::isend_tensor(transport(to), x, peer_rank(to), tag_of(a), h), fwd, start_s});
    wire += static_cast<uint64_t>(x.numel()) * sizeof(float);
  } else {
    kernels::Packed packed =
        kernels::compress(x, codec_spec(codec, options_.seed, step_, plan_.job.micro_batches, a.micro_batch, !fwd));
    at::Tensor bytes = link_on_nccl(to) ? packed.bytes.contiguous() : packed.bytes.to(at::kCPU).contiguous();
    h.codec = codec;
    comm::Request r = transport(to).isend(bytes.data_ptr(), static_cast<size_t>(bytes.numel()), peer_rank(to),
                                          tag_of(a), h);
    r.keep_alive(std::make_shared<at::Tensor>(bytes));
    sends_.push_back({r, fwd, start_s});
    wire += static_cast<uint64_t>(bytes.numel());
  }
  span(std::string(action_kind_name(a.kind)) + std::to_string(a.micro_batch), t0);
}

void StageIO::finish_sends() {
  const double t0 = now_us();
  const auto w0 = Clock::now();
  // One at a time, in the order sent (a link is a FIFO): each end time is when it finished.
  const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(comm::Seconds(options_.comm_timeout_s));
  for (auto& f : sends_) {
    if (f.end_s < 0) {
      try {
        const detail::WaitMark mark(peer_rank(f.forward ? stage_ + 1 : stage_ - 1));
        f.request.wait(std::max(comm::Seconds(0), comm::Seconds(deadline - Clock::now())));
      } catch (const TimeoutError& e) {
        const int to = f.forward ? stage_ + 1 : stage_ - 1;
        throw TimeoutError("waited " + secs(options_.comm_timeout_s) + " for its send to stage " + std::to_string(to) +
                               " (rank " + std::to_string(peer_rank(to)) + ") to finish: " + e.what(),
                           peer_rank(to));
      }
      f.end_s = since_start();
    }
    (f.forward ? busy_next_ : busy_prev_).emplace_back(f.start_s, f.end_s);
  }
  sends_.clear();
  send_wait_s_ += std::chrono::duration<double>(Clock::now() - w0).count();
  span("send wait", t0);
}

void StageIO::fill_links(std::vector<double>& v, size_t link0) const {
  const int S = plan_.num_stages();
  if (stage_ + 1 < S) {  // boundary stage -> stage+1: I send activations, receive gradients
    double* b = &v[link0 + 6 * static_cast<size_t>(stage_)];
    b[0] = static_cast<double>(fwd_wire_);
    b[1] = busy_time(busy_next_);
    b[5] = wait_next_s_;
  }
  if (stage_ > 0) {  // boundary stage-1 -> stage: I receive activations, send gradients
    double* b = &v[link0 + 6 * static_cast<size_t>(stage_ - 1)];
    b[2] = wait_prev_s_;
    b[3] = static_cast<double>(bwd_wire_);
    b[4] = busy_time(busy_prev_);
  }
}

void StageIO::add_bytes(StepStats& st) const {
  st.fwd_raw += fwd_raw_;
  st.fwd_wire += fwd_wire_;
  st.bwd_raw += bwd_raw_;
  st.bwd_wire += bwd_wire_;
}

}  // namespace geopipe::runtime
