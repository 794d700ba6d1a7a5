// LibTorch adapter: tensors in, wire buffers out, and back. CPU tensors go to the CPU twins; CUDA
// tensors (only when LibTorch was built with CUDA) go to the kernels on the current CUDA stream.
#include <geopipe/kernels/torch_codec.h>

#include <ATen/ATen.h>

#if defined(GEOPIPE_TORCH_HAS_CUDA) && defined(GEOPIPE_HAVE_CUDA)
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#define GEOPIPE_ADAPTER_CUDA 1
#endif

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

namespace geopipe::kernels {

namespace {

std::string shape_str(at::IntArrayRef s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

[[noreturn]] void throw_status(Status st, const std::string& what) {
  std::string msg = what + ": " + status_string(st);
#ifdef GEOPIPE_ADAPTER_CUDA
  if (st == Status::kCudaError) msg += " (" + last_cuda_error() + ")";
#endif
  throw CodecError(st, msg);
}

void check_input(const at::Tensor& x, const CodecSpec& spec) {
  if (!x.defined()) throw CodecError(Status::kBadArgument, "compress: undefined tensor");
  if (x.dim() > kMaxDims)
    throw CodecError(Status::kBadArgument, "compress: tensor has " + std::to_string(x.dim()) + " dims, at most " +
                                               std::to_string(kMaxDims) + " are supported");
  if (spec.codec != Codec::kNone && !valid_block_size(spec.codec, spec.block_size == 0 ? default_block_size(spec.codec) : spec.block_size))
    throw CodecError(Status::kBadArgument, std::string("compress: block size ") + std::to_string(spec.block_size) +
                                               " is not valid for " + codec_name(spec.codec));
  if (!x.is_cpu()) {
#ifdef GEOPIPE_ADAPTER_CUDA
    if (x.is_cuda()) return;
#endif
    throw CodecError(Status::kBadArgument, "compress: tensors on " + x.device().str() + " are not supported by this build");
  }
}

Packed compress_impl(const at::Tensor& x_in, const CodecSpec& spec, at::Tensor* residual) {
  check_input(x_in, spec);
  const DType dtype = to_codec_dtype(x_in.scalar_type());
  const at::Tensor x = x_in.contiguous();  // non-contiguous inputs: made contiguous (a copy)
  const std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  if (residual) {
    if (!residual->defined() || residual->scalar_type() != at::kFloat || residual->sizes() != x.sizes() ||
        residual->device() != x.device() || !residual->is_contiguous())
      throw CodecError(Status::kBadArgument, "compress: the error-feedback residual must be a contiguous float32 tensor of shape " +
                                                 shape_str(x.sizes()) + " on " + x.device().str());
    if (spec.codec == Codec::kNone)
      throw CodecError(Status::kBadArgument, "compress: error feedback needs a lossy codec, not \"none\"");
  }
  Packed p;
  Status st = make_header(spec, dtype, shape.data(), static_cast<int>(shape.size()), &p.header);
  if (st != Status::kOk) throw_status(st, "compress " + shape_str(x.sizes()) + " with " + codec_name(spec.codec));
  const size_t bytes = p.header.total_bytes;
  p.bytes = at::empty({static_cast<int64_t>(bytes)}, x.options().dtype(at::kByte));
  float* res = residual ? residual->data_ptr<float>() : nullptr;
  const std::string what = std::string("compress ") + dtype_name(dtype) + " " + shape_str(x.sizes()) + " with " + codec_name(spec.codec);

#ifdef GEOPIPE_ADAPTER_CUDA
  if (x.is_cuda()) {
    const c10::cuda::CUDAGuard guard(x.device());
    cudaStream_t stream = c10::cuda::getCurrentCUDAStream(x.device().index()).stream();
    st = encode_cuda(spec, dtype, shape.data(), static_cast<int>(shape.size()), x.data_ptr(), res,
                     p.bytes.data_ptr(), bytes, stream);
    if (st != Status::kOk) throw_status(st, what);
    // One synchronization to learn whether the tensor was finite before anyone sends it.
    uint32_t status = 0;
    cudaError_t e = cudaMemcpyAsync(&status, p.bytes.data_ptr<uint8_t>() + offsetof(WireHeader, status), 4,
                                    cudaMemcpyDeviceToHost, stream);
    if (e == cudaSuccess) e = cudaStreamSynchronize(stream);
    if (e != cudaSuccess) throw CodecError(Status::kCudaError, what + ": " + cudaGetErrorString(e));
    if (status != 0) throw CodecError(Status::kNonFinite, what + ": the tensor holds NaN or Inf");
    return p;
  }
#endif
  st = encode_cpu(spec, dtype, shape.data(), static_cast<int>(shape.size()), x.data_ptr(), res, p.bytes.data_ptr(), bytes);
  if (st == Status::kNonFinite) throw CodecError(st, what + ": the tensor holds NaN or Inf");
  if (st != Status::kOk) throw_status(st, what);
  return p;
}

}  // namespace

DType to_codec_dtype(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return DType::kFloat32;
    case at::kHalf: return DType::kFloat16;
    case at::kBFloat16: return DType::kBFloat16;
    default:
      throw CodecError(Status::kBadArgument, std::string("codecs take float32, float16 or bfloat16 tensors, not ") +
                                                 c10::toString(t));
  }
}

at::ScalarType to_torch_dtype(DType d) {
  switch (d) {
    case DType::kFloat32: return at::kFloat;
    case DType::kFloat16: return at::kHalf;
    case DType::kBFloat16: return at::kBFloat16;
  }
  throw CodecError(Status::kBadArgument, "unknown codec dtype");
}

size_t packed_size(const CodecSpec& spec, at::ScalarType dtype, at::IntArrayRef shape) {
  return packed_size(spec, to_codec_dtype(dtype), std::vector<int64_t>(shape.begin(), shape.end()));
}

Packed compress(const at::Tensor& x, const CodecSpec& spec) { return compress_impl(x, spec, nullptr); }

Packed compress(const at::Tensor& x, const CodecSpec& spec, at::Tensor& residual) {
  return compress_impl(x, spec, &residual);
}

namespace {

// Decodes `bytes_in` on `target`'s kind of device (moving the bytes there first), into `*into` when
// given (checked against the header) or into a new tensor.
at::Tensor decode_impl(const at::Tensor& bytes_in, c10::Device target, at::Tensor* into) {
  if (!bytes_in.defined() || bytes_in.scalar_type() != at::kByte || bytes_in.dim() != 1)
    throw CodecError(Status::kBadArgument, "decompress: expected a 1-D uint8 tensor of wire bytes");
  at::Tensor bytes = bytes_in.contiguous();
  if (target.is_cpu() && !bytes.is_cpu()) bytes = bytes.cpu();
#ifdef GEOPIPE_ADAPTER_CUDA
  if (target.is_cuda() && bytes.device() != target) bytes = bytes.to(target);
  if (bytes.is_cuda() && reinterpret_cast<uintptr_t>(bytes.data_ptr()) % 16 != 0) bytes = bytes.clone();
#endif
#ifdef GEOPIPE_ADAPTER_CUDA
  const bool supported = (bytes.is_cpu() && target.is_cpu()) || (bytes.is_cuda() && target.is_cuda());
#else
  const bool supported = bytes.is_cpu() && target.is_cpu();
#endif
  if (!supported)
    throw CodecError(Status::kBadArgument, "decompress: device " + target.str() + " is not supported by this build");
  const size_t n = static_cast<size_t>(bytes.numel());

  WireHeader h;
  std::string why;
  if (bytes.is_cpu()) {
    const Status st = read_header(bytes.data_ptr(), n, &h, &why);
    if (st != Status::kOk) throw CodecError(st, "decompress: " + why);
  } else {
#ifdef GEOPIPE_ADAPTER_CUDA
    // the header is validated on the host: one small copy and a stream synchronization
    const c10::cuda::CUDAGuard guard(bytes.device());
    cudaStream_t stream = c10::cuda::getCurrentCUDAStream(bytes.device().index()).stream();
    if (n < sizeof(WireHeader))
      throw CodecError(Status::kCorrupt, "decompress: truncated buffer: " + std::to_string(n) + " bytes");
    cudaError_t e = cudaMemcpyAsync(&h, bytes.data_ptr(), sizeof h, cudaMemcpyDeviceToHost, stream);
    if (e == cudaSuccess) e = cudaStreamSynchronize(stream);
    if (e != cudaSuccess) throw CodecError(Status::kCudaError, std::string("decompress: ") + cudaGetErrorString(e));
    const Status st = validate_header(h, &why);
    if (st != Status::kOk) throw CodecError(st, "decompress: " + why);
    if (n < h.total_bytes)
      throw CodecError(Status::kCorrupt, "decompress: truncated buffer: " + std::to_string(n) + " bytes, the header says " +
                                             std::to_string(h.total_bytes));
#endif
  }
  const std::vector<int64_t> shape(h.shape, h.shape + h.ndim);
  const at::ScalarType dtype = to_torch_dtype(static_cast<DType>(h.dtype));
  at::Tensor out;
  if (into) {
    if (!into->defined() || into->sizes() != at::IntArrayRef(shape) || into->scalar_type() != dtype ||
        into->device() != target || !into->is_contiguous())
      throw CodecError(Status::kBadArgument, std::string("decompress_into: the buffer holds a ") + dtype_name(static_cast<DType>(h.dtype)) +
                                                 " tensor of shape " + shape_str(shape) + "; the output must be a contiguous tensor of that shape and dtype on " +
                                                 target.str());
    out = *into;
  } else {
    out = at::empty(shape, at::TensorOptions().dtype(dtype).device(target));
  }
  Status st;
  if (bytes.is_cpu()) {
    st = decode_cpu(bytes.data_ptr(), n, out.data_ptr(), static_cast<size_t>(out.nbytes()), &why);
    if (st != Status::kOk) throw CodecError(st, "decompress: " + why);
    return out;
  }
#ifdef GEOPIPE_ADAPTER_CUDA
  const c10::cuda::CUDAGuard guard(bytes.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream(bytes.device().index()).stream();
  st = decode_cuda(h, bytes.data_ptr(), out.data_ptr(), static_cast<size_t>(out.nbytes()), stream);
  if (st != Status::kOk) throw_status(st, "decompress");
#endif
  return out;
}

}  // namespace

at::Tensor decompress(const at::Tensor& bytes, c10::optional<c10::Device> device) {
  return decode_impl(bytes, device ? *device : (bytes.defined() ? bytes.device() : c10::Device(c10::kCPU)), nullptr);
}

void decompress_into(const at::Tensor& bytes, at::Tensor& out) {
  if (!out.defined()) throw CodecError(Status::kBadArgument, "decompress_into: undefined output tensor");
  decode_impl(bytes, out.device(), &out);
}

at::Tensor decompress(const Packed& p, c10::optional<c10::Device> device) { return decompress(p.bytes, device); }

}  // namespace geopipe::kernels
