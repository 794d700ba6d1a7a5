// The CUDA caching allocator's peak (device_allocator_peak_bytes): what geopipe-pipeline-bench
// compares with the plan's predicted memory on a GPU rank. Runs on a GPU (scripts/gpu-check.sh);
// elsewhere only the CPU answer is checked and the GPU test skips saying why.
#include <geopipe/runtime/trainer.h>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

TEST(DeviceMemory, ACpuDeviceHasNoAllocatorPeak) {
  EXPECT_FALSE(geopipe::runtime::device_allocator_peak_bytes(at::Device(at::kCPU)).has_value());
}

TEST(DeviceMemory, TheCudaAllocatorsPeakCountsATensorAfterItIsFreed) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device visible to LibTorch";
  const at::Device gpu(at::kCUDA, 0);
  const auto before = geopipe::runtime::device_allocator_peak_bytes(gpu);
  ASSERT_TRUE(before.has_value()) << "LibTorch has CUDA but geopipe was built without its allocator statistics";
  constexpr int64_t kFloats = 64 << 20;  // 256 MiB, more than anything held before
  {
    at::Tensor t = at::ones({kFloats}, at::TensorOptions().device(gpu));
    EXPECT_EQ(t.numel(), kFloats);
  }
  const auto after = geopipe::runtime::device_allocator_peak_bytes(gpu);
  ASSERT_TRUE(after.has_value());
  EXPECT_GE(*after, *before);
  EXPECT_GE(*after, kFloats * 4);  // the peak stays after the tensor is gone
  // A reset starts the peak over from what is allocated now: the freed tensor no longer counts.
  geopipe::runtime::reset_device_allocator_peak(gpu);
  const auto reset = geopipe::runtime::device_allocator_peak_bytes(gpu);
  ASSERT_TRUE(reset.has_value());
  EXPECT_LT(*reset, kFloats * 4);
}
