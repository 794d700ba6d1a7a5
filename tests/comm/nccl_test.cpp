// NCCL backend: one rank sends to itself on its GPU, in one batch, and a one-rank replica group
// runs its collectives (NCCL refuses two ranks on one device, so these are the tests a one-GPU
// machine can run). Skip without a GPU. The Router and refusal tests run everywhere.
#include <geopipe/comm/communicator.h>
#include <geopipe/comm/group.h>
#include <geopipe/comm/nccl_transport.h>
#include <geopipe/comm/router.h>
#include <geopipe/core/error.h>
#include <geopipe/kernels/device.h>

#include <gtest/gtest.h>

#if GEOPIPE_HAVE_NCCL
#include <cuda_runtime.h>
#endif

#include <memory>
#include <vector>

using namespace geopipe;
using namespace geopipe::comm;

namespace {
CommOptions options() {
  CommOptions o;
  o.region = "local";
  o.emulate = EmulateMode::kNone;
  return o;
}
}  // namespace

TEST(NcclTransport, RankSendsToItselfOnTheGpu) {
  if (kernels::cuda_device_count() == 0 || !NcclTransport::available())
    GTEST_SKIP() << kernels::cuda_describe();
#if GEOPIPE_HAVE_NCCL
  Communicator comm(options());
  NcclTransport nccl(comm, 0);
  const int me = comm.rank();
  ASSERT_TRUE(nccl.reaches(me));
  const size_t n = (3u << 20) + 5;
  std::vector<uint8_t> host(n), back(n, 0);
  for (size_t i = 0; i < n; ++i) host[i] = static_cast<uint8_t>(i * 31 + 7);
  void *src = nullptr, *dst = nullptr;
  ASSERT_EQ(cudaMalloc(&src, n), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&dst, n), cudaSuccess);
  MessageHeader h;
  h.kind = MessageKind::kActivation;
  h.micro_batch = 3;
  Expect e;
  e.micro_batch = 3;
  // The transfer is ordered after the compute stream's work, and the copy back after the
  // transfer, by events only (no device-wide synchronisation).
  cudaStream_t compute = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&compute, cudaStreamNonBlocking), cudaSuccess);
  ASSERT_EQ(cudaMemcpyAsync(src, host.data(), n, cudaMemcpyHostToDevice, compute), cudaSuccess);
  nccl.set_compute_stream(compute);
  Request send, recv;
  {
    TransportBatch batch(nccl);  // a self-send must be grouped with its receive
    send = nccl.isend(src, n, me, 1, h);
    recv = nccl.irecv(dst, n, me, 1, e);
  }
  NcclTransport::stream_wait(recv, compute);
  ASSERT_EQ(cudaMemcpyAsync(back.data(), dst, n, cudaMemcpyDeviceToHost, compute), cudaSuccess);
  send.wait(Seconds(60));
  recv.wait(Seconds(60));
  ASSERT_EQ(cudaStreamSynchronize(compute), cudaSuccess);
  EXPECT_EQ(recv.header().micro_batch, 3);
  EXPECT_EQ(recv.header().payload_bytes, n);
  EXPECT_EQ(back, host);
  nccl.set_compute_stream(nullptr);
  cudaStreamDestroy(compute);
  cudaFree(src);
  cudaFree(dst);
#endif
}

TEST(NcclTransport, RefusesToStartWithoutAGpuAndSaysWhy) {
  if (NcclTransport::available()) GTEST_SKIP() << "a GPU is present";
  Communicator comm(options());
  try {
    NcclTransport nccl(comm, 0);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_TRUE(msg.find("no CUDA device") != std::string::npos ||
                msg.find("no NCCL") != std::string::npos)
        << msg;
  }
}

// The stage replicas' gradient path on GPUs (runtime/src/grad_reducer.h): a group of one rank
// (one GPU: NCCL refuses two ranks on one device) runs all-reduce, reduce-scatter and all-gather
// on device buffers; with one member each returns its input, so every byte is checked.
TEST(NcclGroup, OneRankGroupRunsItsCollectivesOnTheGpu) {
  if (kernels::cuda_device_count() == 0 || !NcclTransport::available())
    GTEST_SKIP() << kernels::cuda_describe();
#if GEOPIPE_HAVE_NCCL
  Communicator comm(options());
  MpiGroup mpi(comm, 0, 0, "stage 0 replicas (ranks 0)");
  std::unique_ptr<ProcessGroup> group = make_nccl_group(mpi, 0);
  EXPECT_TRUE(group->on_gpu());
  EXPECT_EQ(group->size(), 1);
  const size_t n = (1u << 22) + 3;  // 16 MB: a bucket's size
  std::vector<float> host(n), back(n, 0.f);
  for (size_t i = 0; i < n; ++i) host[i] = static_cast<float>(i % 1000) * 0.25f - 7.f;
  float *data = nullptr, *shard = nullptr, *gathered = nullptr;
  ASSERT_EQ(cudaMalloc(&data, n * sizeof(float)), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&shard, n * sizeof(float)), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&gathered, n * sizeof(float)), cudaSuccess);
  // On the legacy stream, where LibTorch computes gradients: the group orders itself after it.
  ASSERT_EQ(cudaMemcpyAsync(data, host.data(), n * sizeof(float), cudaMemcpyHostToDevice, nullptr), cudaSuccess);
  group->allreduce_sum(data, n, "bucket 0").wait(Seconds(60));
  group->reduce_scatter_sum(data, shard, n, "bucket 0").wait(Seconds(60));
  GroupRequest last = group->allgather(shard, gathered, n, "bucket 0");
  last.wait(Seconds(60));
  EXPECT_GT(last.completed_at(), 0.0);
  ASSERT_EQ(cudaMemcpy(back.data(), gathered, n * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(back, host);
  group.reset();
  cudaFree(data);
  cudaFree(shard);
  cudaFree(gathered);
#endif
}

TEST(NcclGroup, RefusesToStartWithoutAGpuNamingTheGroup) {
  if (NcclTransport::available()) GTEST_SKIP() << "a GPU is present";
  Communicator comm(options());
  MpiGroup mpi(comm, 0, 0, "stage 0 replicas (ranks 0)");
  try {
    make_nccl_group(mpi, 0);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("group stage 0 replicas (ranks 0): "), std::string::npos) << msg;
    EXPECT_TRUE(msg.find("NCCL needs a CUDA device, none is visible on rank 0") != std::string::npos ||
                msg.find("built without NCCL") != std::string::npos)
        << msg;
  }
}

TEST(Router, SendsEverythingThroughMpiWithoutNccl) {
  Communicator comm(options());
  Router router(comm, nullptr, /*tensors_on_gpu=*/true);
  for (int peer = 0; peer < comm.size(); ++peer) {
    EXPECT_EQ(router.backend_for(peer), Backend::kMpi);
    EXPECT_EQ(&router.to(peer), static_cast<Transport*>(&comm));
  }
  // A plan that says nccl falls back to MPI here, and the Router says why.
  EXPECT_EQ(router.follow_plan(0, "nccl"), "NCCL is not available here");
  EXPECT_EQ(router.backend_for(0), Backend::kMpi);
  EXPECT_EQ(router.follow_plan(0, "mpi"), "");
  EXPECT_THROW(router.follow_plan(0, "carrier-pigeon"), InputError);
  EXPECT_THROW(router.backend_for(comm.size()), Error);
}

TEST(Router, FollowsThePlanOnCpuTensorsWithMpiAndSaysWhy) {
  Communicator comm(options());
  Router router(comm, nullptr, /*tensors_on_gpu=*/false);
  EXPECT_EQ(router.follow_plan(0, "nccl"), "this stage runs on the CPU");
  EXPECT_EQ(router.backend_for(0), Backend::kMpi);
  EXPECT_THROW(router.follow_plan(comm.size(), "mpi"), Error);
}

TEST(Router, CreatesNcclOnlyForAPlanThatAsksForItOnTheGpu) {
  EXPECT_FALSE(Router::needs_nccl({"mpi", "mpi"}, /*tensors_on_gpu=*/true));
  EXPECT_FALSE(Router::needs_nccl({}, true));
  EXPECT_FALSE(Router::needs_nccl({"mpi", "nccl"}, /*tensors_on_gpu=*/false));
  EXPECT_EQ(Router::needs_nccl({"mpi", "nccl"}, true), NcclTransport::available());
}
