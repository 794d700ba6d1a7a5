#include <geopipe/comm/torch.h>

#include <geopipe/comm/staging.h>
#include <geopipe/core/error.h>

#if defined(GEOPIPE_TORCH_HAS_CUDA) && defined(GEOPIPE_HAVE_CUDA)
#include <c10/cuda/CUDAStream.h>
#define GEOPIPE_ADAPTER_CUDA 1
#endif

#include <cstring>

namespace geopipe::comm {

namespace {

// Throws geopipe::Error for types the header cannot describe.
ElemType elem_type_of(at::ScalarType type) {
  switch (type) {
    case at::kByte: return ElemType::kUInt8;
    case at::kChar: return ElemType::kInt8;
    case at::kInt: return ElemType::kInt32;
    case at::kLong: return ElemType::kInt64;
    case at::kHalf: return ElemType::kFloat16;
    case at::kBFloat16: return ElemType::kBFloat16;
    case at::kFloat: return ElemType::kFloat32;
    case at::kDouble: return ElemType::kFloat64;
    default: break;
  }
  throw Error(std::string("comm: tensors of type ") + c10::toString(type) + " cannot be sent");
}

at::ScalarType scalar_type_of(ElemType type) {
  switch (type) {
    case ElemType::kUInt8: return at::kByte;
    case ElemType::kInt8: return at::kChar;
    case ElemType::kInt32: return at::kInt;
    case ElemType::kInt64: return at::kLong;
    case ElemType::kFloat16: return at::kHalf;
    case ElemType::kBFloat16: return at::kBFloat16;
    case ElemType::kFloat32: return at::kFloat;
    case ElemType::kFloat64: return at::kDouble;
  }
  throw Error("comm: unknown element type");
}

}  // namespace

MessageHeader tensor_header(const at::Tensor& tensor, MessageKind kind, int stage, int micro_batch,
                            uint64_t job) {
  MessageHeader h;
  h.job = job;
  h.stage = stage;
  h.micro_batch = micro_batch;
  h.kind = kind;
  h.elem_type = elem_type_of(tensor.scalar_type());
  h.shape.assign(tensor.sizes().begin(), tensor.sizes().end());
  return h;
}

namespace {

size_t tensor_bytes(const at::Tensor& t) { return static_cast<size_t>(t.numel()) * t.element_size(); }

// A CUDA tensor on the MPI backend goes through isend_device/irecv_device (staging.h): pinned
// host buffers on the stager's stream, or the device pointer itself when MPI is CUDA-aware.
bool via_mpi_device_path(const Transport& transport, const at::Tensor& t) {
  return t.is_cuda() && transport.backend() == Backend::kMpi;
}

#ifdef GEOPIPE_ADAPTER_CUDA
void* current_stream(const at::Tensor& t) {
  return c10::cuda::getCurrentCUDAStream(t.device().index()).stream();
}
#else
// LibTorch with CUDA but geopipe built without it: the synchronous fallback below stages
// through a plain host tensor (tensor.to(kCPU) and copy_ on completion).
bool needs_host_staging(const Transport& transport, const at::Tensor& t) {
  return via_mpi_device_path(transport, t) && !mpi_cuda_aware();
}

// A receive into host memory whose data is copied into the (GPU) destination on completion.
class StagedRecv final : public RequestState {
 public:
  StagedRecv(Request inner, at::Tensor host, at::Tensor out)
      : inner_(std::move(inner)), host_(std::move(host)), out_(std::move(out)) {}
  bool test() override {
    if (copied_) return true;
    if (!inner_.test()) return false;
    out_.copy_(host_);
    copied_ = true;
    return true;
  }
  void wait(Seconds timeout) override {
    if (copied_) return;
    inner_.wait(timeout);
    out_.copy_(host_);
    copied_ = true;
  }
  void cancel() override { inner_.cancel(); }
  const MessageHeader& header() const override { return inner_.header(); }
  std::vector<uint8_t>& payload() override { return inner_.payload(); }
  std::string describe() const override { return inner_.describe() + " (staged through host)"; }
  Seconds default_timeout() const override { return inner_.state()->default_timeout(); }

 private:
  Request inner_;
  at::Tensor host_, out_;
  bool copied_ = false;
};
#endif

}  // namespace

Request isend_tensor(Transport& transport, const at::Tensor& tensor, int peer, int tag,
                     MessageHeader header) {
  at::Tensor t = tensor.contiguous();
  if (header.codec == "none") {
    header.elem_type = elem_type_of(t.scalar_type());
    header.shape.assign(t.sizes().begin(), t.sizes().end());
  }
#ifdef GEOPIPE_ADAPTER_CUDA
  if (via_mpi_device_path(transport, t)) {
    // Ordered after the work queued so far on the current stream (the producer of `t`).
    Request request = isend_device(transport, t.device().index(), t.data_ptr(), tensor_bytes(t), peer,
                                   tag, header, current_stream(t));
    request.keep_alive(std::make_shared<at::Tensor>(t));
    return request;
  }
#else
  if (needs_host_staging(transport, t)) t = t.to(at::kCPU);
#endif
  Request request = transport.isend(t.data_ptr(), tensor_bytes(t), peer, tag, header);
  request.keep_alive(std::make_shared<at::Tensor>(t));
  return request;
}

Request irecv_tensor(Transport& transport, const at::Tensor& out, int peer, int tag, Expect expect) {
  if (!out.is_contiguous())
    throw Error("irecv_tensor: the destination tensor must be contiguous (rank " +
                std::to_string(transport.rank()) + " <- rank " + std::to_string(peer) + ", tag " +
                std::to_string(tag) + ")");
  if (!expect.elem_type) expect.elem_type = elem_type_of(out.scalar_type());
  if (!expect.shape) expect.shape = std::vector<int64_t>(out.sizes().begin(), out.sizes().end());
#ifdef GEOPIPE_ADAPTER_CUDA
  if (via_mpi_device_path(transport, out)) {
    // Once the request completes, work queued on the current stream sees the data.
    Request request = irecv_device(transport, out.device().index(), out.data_ptr(), tensor_bytes(out),
                                   peer, tag, expect, current_stream(out));
    request.keep_alive(std::make_shared<at::Tensor>(out));
    return request;
  }
#else
  if (needs_host_staging(transport, out)) {
    at::Tensor host = at::empty(out.sizes(), out.options().device(at::kCPU));
    Request inner = transport.irecv(host.data_ptr(), tensor_bytes(host), peer, tag, expect);
    return Request(std::make_shared<StagedRecv>(std::move(inner), host, out));
  }
#endif
  Request request = transport.irecv(out.data_ptr(), tensor_bytes(out), peer, tag, expect);
  request.keep_alive(std::make_shared<at::Tensor>(out));
  return request;
}

at::Tensor tensor_from_message(const MessageHeader& header, const std::vector<uint8_t>& payload) {
  if (header.codec != "none")
    throw Error("tensor_from_message: payload is encoded with codec '" + header.codec +
                "'; decode it with the kernels codec first");
  const size_t want = static_cast<size_t>(header.numel()) * elem_type_bytes(header.elem_type);
  if (payload.size() != want)
    throw Error("tensor_from_message: " + std::to_string(payload.size()) + " payload bytes for " +
                header.describe() + " (" + std::to_string(want) + " expected)");
  at::Tensor t = at::empty(header.shape, at::TensorOptions().dtype(scalar_type_of(header.elem_type)));
  if (want) std::memcpy(t.data_ptr(), payload.data(), want);
  return t;
}

}  // namespace geopipe::comm
