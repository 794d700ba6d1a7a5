// LibTorch adapter over the codec C API (target geopipe_kernels_torch).
//
//   Packed p = compress(activation, {Codec::kInt8Block});     // on the tensor's device
//   comm.send(p.bytes) ... at::Tensor bytes = comm.recv(packed_size(spec, dtype, shape))
//   at::Tensor x = decompress(bytes);                          // validated; same shape/dtype
//
// CPU tensors use the CPU twins. CUDA tensors (only when LibTorch itself has CUDA) use the kernels
// on the current CUDA stream of the tensor's device; compress then synchronizes that stream once to
// read the non-finite flag, so a diverged tensor is reported before it is sent.
// Non-contiguous inputs are made contiguous (a copy), not rejected.
#pragma once

#include <geopipe/kernels/codec.h>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/util/Optional.h>

#include <cstdint>
#include <vector>

namespace geopipe::kernels {

struct Packed {
  at::Tensor bytes;   // 1-D uint8, exactly packed_size() bytes, 16-byte aligned, on the input's device
  WireHeader header;  // host copy of the header written into `bytes`

  int64_t nbytes() const { return bytes.defined() ? bytes.numel() : 0; }
  std::vector<int64_t> shape() const { return {header.shape, header.shape + header.ndim}; }
};

// float32, float16 and bfloat16 are supported; anything else throws CodecError(kBadArgument).
DType to_codec_dtype(at::ScalarType t);
at::ScalarType to_torch_dtype(DType d);
size_t packed_size(const CodecSpec& spec, at::ScalarType dtype, at::IntArrayRef shape);

// Throws CodecError: kNonFinite when x holds NaN/Inf, kBadArgument for unsupported dtypes/devices.
Packed compress(const at::Tensor& x, const CodecSpec& spec);
// Error feedback: `residual` is a float32 tensor of x's shape on x's device (start with zeros); it
// is added to x before quantizing and replaced by what the quantization lost, in the same pass.
Packed compress(const at::Tensor& x, const CodecSpec& spec, at::Tensor& residual);

// Decodes a wire buffer (1-D uint8, CPU or CUDA). Validates the header (magic, version, sizes,
// truncation, non-finite flag, scales) and throws CodecError(kCorrupt/kNonFinite) with the reason.
// The result has the original shape and dtype, on `device` (default: the buffer's device).
at::Tensor decompress(const at::Tensor& bytes, c10::optional<c10::Device> device = c10::nullopt);
at::Tensor decompress(const Packed& p, c10::optional<c10::Device> device = c10::nullopt);
// The same into an existing contiguous tensor (e.g. the runtime's receive buffer) of the header's
// shape and dtype; decoded on `out`'s device. Throws CodecError(kBadArgument) on a mismatch.
void decompress_into(const at::Tensor& bytes, at::Tensor& out);

}  // namespace geopipe::kernels
