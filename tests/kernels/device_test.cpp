#include <geopipe/kernels/device.h>

#include <gtest/gtest.h>

// Detection must answer on every machine: no GPU, no driver, or a real device.
TEST(Device, DetectionNeverCrashesAndIsConsistent) {
  const int n = geopipe::kernels::cuda_device_count();
  EXPECT_GE(n, 0);
  const std::string what = geopipe::kernels::cuda_describe();
  EXPECT_FALSE(what.empty());
  if (!geopipe::kernels::built_with_cuda()) {
    EXPECT_EQ(n, 0);
  }
  if (n == 0)
    EXPECT_NE(what.find("no GPU"), std::string::npos) << what;
  else
    EXPECT_NE(what.find("GPU(s)"), std::string::npos) << what;
}

TEST(Device, CudaDeviceIsUsableWhenPresent) {
  if (geopipe::kernels::cuda_device_count() == 0) GTEST_SKIP() << "no GPU: " << geopipe::kernels::cuda_describe();
  EXPECT_NE(geopipe::kernels::cuda_describe().find("sm_"), std::string::npos);
}
