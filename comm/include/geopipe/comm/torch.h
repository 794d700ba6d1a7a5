// LibTorch adapter (target geopipe_comm_torch, the only comm code that includes LibTorch):
// send and receive at::Tensor through any Transport. The header's element type and shape are
// taken from the tensor; the request keeps the tensor alive until it completes.
// CPU tensors go straight from their storage. CUDA tensors on the MPI backend go through
// staging.h on the current CUDA stream (pinned host buffers, or the device pointer itself when
// Open MPI is CUDA-aware, mpi_cuda_aware()); on NCCL they stay on the GPU.
#pragma once

#include <geopipe/comm/communicator.h>
#include <geopipe/comm/transport.h>

#include <ATen/ATen.h>

namespace geopipe::comm {

// A header describing `tensor` (codec "none", elem_type and shape from the tensor).
MessageHeader tensor_header(const at::Tensor& tensor, MessageKind kind, int stage, int micro_batch,
                            uint64_t job = 0);

// Sends `tensor` (made contiguous if needed). `header`'s elem_type and shape are overwritten
// from the tensor when its codec is "none".
Request isend_tensor(Transport& transport, const at::Tensor& tensor, int peer, int tag,
                     MessageHeader header);
// Receives into `out` (pre-allocated, contiguous). `expect` gets out's elem_type and shape
// unless it sets them itself. When the request completes, `out` holds the tensor.
Request irecv_tensor(Transport& transport, const at::Tensor& out, int peer, int tag,
                     Expect expect = {});
// The tensor described by a received header (codec "none") from its payload bytes (copied).
at::Tensor tensor_from_message(const MessageHeader& header, const std::vector<uint8_t>& payload);

}  // namespace geopipe::comm
