// GPU staging through pinned host memory (staging.h): a device buffer round-trips through the
// stager and through a self-send on the MPI backend. Skips without a GPU (and then checks that
// the stager refuses to start instead of touching CUDA further).
#include <geopipe/comm/communicator.h>
#include <geopipe/comm/staging.h>
#include <geopipe/core/error.h>
#include <geopipe/kernels/device.h>

#include <gtest/gtest.h>

#if GEOPIPE_HAVE_CUDA
#include <cuda_runtime.h>
#endif

#include <cstdint>
#include <cstring>
#include <vector>

using namespace geopipe;
using namespace geopipe::comm;

namespace {

std::vector<uint8_t> pattern(size_t n, unsigned seed) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(i * 131 + seed);
  return v;
}

}  // namespace

TEST(HostStager, RefusesToStartWithoutAGpu) {
  if (kernels::cuda_device_count() > 0) GTEST_SKIP() << "a GPU is present";
  EXPECT_THROW(HostStager stager(0), Error);
}

TEST(HostStager, DeviceBufferRoundTripsThroughPinnedMemoryAndReusesIt) {
  if (kernels::cuda_device_count() == 0) GTEST_SKIP() << kernels::cuda_describe();
#if GEOPIPE_HAVE_CUDA
  const size_t n = (5u << 20) + 3;
  const std::vector<uint8_t> host = pattern(n, 7);
  void *src = nullptr, *dst = nullptr;
  ASSERT_EQ(cudaMalloc(&src, n), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&dst, n), cudaSuccess);
  cudaStream_t caller = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&caller, cudaStreamNonBlocking), cudaSuccess);
  // The producer runs on the caller's stream: the stager must order its copy after it.
  ASSERT_EQ(cudaMemcpyAsync(src, host.data(), n, cudaMemcpyHostToDevice, caller), cudaSuccess);
  HostStager stager(0, 64u << 20);
  {
    BufferPool::Lease staged = stager.copy_to_host(src, n, caller);
    ASSERT_GE(staged.capacity(), n);
    EXPECT_EQ(std::memcmp(staged.data(), host.data(), n), 0);
    stager.copy_to_device(dst, staged.data(), n, caller);
    std::vector<uint8_t> back(n, 0);
    // Queued on the caller's stream after the stager's copy (the stream waits on its event).
    ASSERT_EQ(cudaMemcpyAsync(back.data(), dst, n, cudaMemcpyDeviceToHost, caller), cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(caller), cudaSuccess);
    EXPECT_EQ(back, host);
  }
  { BufferPool::Lease again = stager.copy_to_host(src, n / 2, caller); }
  EXPECT_EQ(stager.pool_stats().allocations, 1u);
  EXPECT_EQ(stager.pool_stats().reuses, 1u);
  EXPECT_TRUE(is_device_pointer(src));
  cudaStreamDestroy(caller);
  cudaFree(src);
  cudaFree(dst);
#endif
}

TEST(HostStager, DeviceBufferRoundTripsThroughASelfSendOnMpi) {
  if (kernels::cuda_device_count() == 0) GTEST_SKIP() << kernels::cuda_describe();
#if GEOPIPE_HAVE_CUDA
  CommOptions o;
  o.region = "local";
  o.emulate = EmulateMode::kNone;
  Communicator comm(o);
  const int me = comm.rank();
  cudaStream_t caller = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&caller, cudaStreamNonBlocking), cudaSuccess);
  // One inline-sized and one chunked message, sent back to back: order and content must hold.
  for (size_t n : {size_t{1000}, size_t{(3u << 20) + 17}}) {
    const std::vector<uint8_t> host = pattern(n, static_cast<unsigned>(n));
    void *src = nullptr, *dst = nullptr;
    ASSERT_EQ(cudaMalloc(&src, n), cudaSuccess);
    ASSERT_EQ(cudaMalloc(&dst, n), cudaSuccess);
    ASSERT_EQ(cudaMemcpyAsync(src, host.data(), n, cudaMemcpyHostToDevice, caller), cudaSuccess);
    MessageHeader h;
    h.kind = MessageKind::kActivation;
    h.micro_batch = 4;
    Expect e;
    e.micro_batch = 4;
    Request recv = irecv_device(comm, 0, dst, n, me, 2, e, caller);
    Request send = isend_device(comm, 0, src, n, me, 2, h, caller);
    send.wait(Seconds(60));
    recv.wait(Seconds(60));
    EXPECT_EQ(recv.header().payload_bytes, n);
    EXPECT_EQ(recv.header().micro_batch, 4);
    std::vector<uint8_t> back(n, 0);
    ASSERT_EQ(cudaMemcpyAsync(back.data(), dst, n, cudaMemcpyDeviceToHost, caller), cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(caller), cudaSuccess);
    EXPECT_EQ(back, host) << "size " << n << (mpi_cuda_aware() ? " (CUDA-aware MPI)" : " (staged)");
    send = Request();
    recv = Request();
    cudaFree(src);
    cudaFree(dst);
  }
  cudaStreamDestroy(caller);
#endif
}
