// GPU kernels against the CPU twins, bit for bit: wire buffers (header, scales, payload, padding),
// error-feedback residuals and dequantized tensors. Fresh random inputs each run (the seed is
// printed on failure); device outputs are poisoned before every run. Skips without a GPU.
#include "codec_test.h"

#include <geopipe/kernels/device.h>

#ifdef GEOPIPE_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

#include <cstdio>
#include <random>
#include <string>

using namespace geopipe::kernels;
using namespace geopipe::kernels::test;

#ifdef GEOPIPE_HAVE_CUDA
namespace {

#define CUDA_OK(expr)                                                              \
  do {                                                                             \
    const cudaError_t e_ = (expr);                                                 \
    ASSERT_EQ(e_, cudaSuccess) << #expr << ": " << cudaGetErrorString(e_);         \
  } while (0)

struct DeviceBuffer {
  void* p = nullptr;
  size_t n = 0;
  explicit DeviceBuffer(size_t bytes) : n(bytes) {
    if (cudaMalloc(&p, bytes < 16 ? 16 : bytes) != cudaSuccess) p = nullptr;
  }
  ~DeviceBuffer() {
    if (p) cudaFree(p);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  uint8_t* bytes() const { return static_cast<uint8_t*>(p); }
};

struct Case {
  Codec codec;
  int block;
  DType dtype;
  std::vector<int64_t> shape;
  Rounding rounding;
  bool feedback;
  bool misaligned;  // source pointer one element past a 16-byte boundary: the scalar path
};

std::string describe(const Case& c, uint32_t seed) {
  std::string s = std::string(codec_name(c.codec)) + "/" + std::to_string(c.block) + " " + dtype_name(c.dtype) + " [";
  for (size_t i = 0; i < c.shape.size(); ++i) s += (i ? "," : "") + std::to_string(c.shape[i]);
  s += "]";
  if (c.rounding == Rounding::kStochastic) s += " stochastic";
  if (c.feedback) s += " feedback";
  if (c.misaligned) s += " misaligned";
  return s + " seed " + std::to_string(seed);
}

void run_case(const Case& c, uint32_t seed) {
  SCOPED_TRACE(describe(c, seed));
  const int64_t n = numel_of(c.shape);
  const HostTensor t = make_tensor(c.dtype, c.shape, heavy_tailed_values(n, seed));
  CodecSpec spec{c.codec, c.block, c.rounding, 0x9e3779b97f4a7c15ull ^ seed, 1234567ull + seed};
  const int nd = static_cast<int>(c.shape.size());
  const size_t bytes = packed_size(spec, c.dtype, c.shape);
  const size_t esize = dtype_size(c.dtype);

  // CPU reference
  std::vector<float> res_cpu = normal_values(n, seed + 1, 0.02f);
  std::vector<uint8_t> buf_cpu(bytes, 0);
  ASSERT_EQ(encode_cpu(spec, c.dtype, c.shape.data(), nd, t.data(), c.feedback ? res_cpu.data() : nullptr, buf_cpu.data(), bytes),
            Status::kOk);

  // GPU
  const size_t shift = c.misaligned ? esize : 0;
  DeviceBuffer src(t.raw.size() + 16), dst(bytes), res(static_cast<size_t>(n) * 4);
  ASSERT_TRUE(src.p && dst.p && res.p);
  CUDA_OK(cudaMemcpy(src.bytes() + shift, t.raw.data(), t.raw.size(), cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemset(dst.p, 0xCD, bytes));
  std::vector<float> res_gpu_in = normal_values(n, seed + 1, 0.02f);
  CUDA_OK(cudaMemcpy(res.p, res_gpu_in.data(), static_cast<size_t>(n) * 4, cudaMemcpyHostToDevice));
  ASSERT_EQ(encode_cuda(spec, c.dtype, c.shape.data(), nd, src.bytes() + shift, c.feedback ? static_cast<float*>(res.p) : nullptr,
                        dst.p, bytes, nullptr),
            Status::kOk)
      << last_cuda_error();
  CUDA_OK(cudaDeviceSynchronize());
  std::vector<uint8_t> buf_gpu(bytes);
  CUDA_OK(cudaMemcpy(buf_gpu.data(), dst.p, bytes, cudaMemcpyDeviceToHost));
  for (size_t i = 0; i < bytes; ++i) ASSERT_EQ(buf_gpu[i], buf_cpu[i]) << "wire byte " << i << " of " << bytes;
  if (c.feedback) {
    std::vector<float> res_gpu(static_cast<size_t>(n));
    CUDA_OK(cudaMemcpy(res_gpu.data(), res.p, static_cast<size_t>(n) * 4, cudaMemcpyDeviceToHost));
    for (int64_t i = 0; i < n; ++i)
      ASSERT_EQ(num::f32_bits(res_gpu[i]), num::f32_bits(res_cpu[i])) << "residual " << i;
  }

  // decode on both sides
  std::vector<uint8_t> out_cpu(static_cast<size_t>(n) * esize);
  std::string why;
  ASSERT_EQ(decode_cpu(buf_cpu.data(), bytes, out_cpu.data(), out_cpu.size(), &why), Status::kOk) << why;
  WireHeader h;
  ASSERT_EQ(read_header(buf_cpu.data(), bytes, &h, &why), Status::kOk) << why;
  DeviceBuffer out(out_cpu.size() + 16);
  ASSERT_TRUE(out.p);
  CUDA_OK(cudaMemset(out.p, 0xCD, out_cpu.size() + 16));
  ASSERT_EQ(decode_cuda(h, dst.p, out.bytes() + shift, out_cpu.size(), nullptr), Status::kOk) << last_cuda_error();
  CUDA_OK(cudaDeviceSynchronize());
  std::vector<uint8_t> out_gpu(out_cpu.size());
  CUDA_OK(cudaMemcpy(out_gpu.data(), out.bytes() + shift, out_gpu.size(), cudaMemcpyDeviceToHost));
  for (size_t i = 0; i < out_gpu.size(); ++i) ASSERT_EQ(out_gpu[i], out_cpu[i]) << "decoded byte " << i;
}

uint32_t fresh_seed() {
  std::random_device rd;
  return rd();
}

}  // namespace
#endif

TEST(CudaCodec, KernelsMatchTheCpuTwinsBitForBit) {
  if (cuda_device_count() == 0) GTEST_SKIP() << cuda_describe();
#ifdef GEOPIPE_HAVE_CUDA
  const uint32_t seed = fresh_seed();
  std::printf("seed %u\n", seed);
  const std::vector<std::vector<int64_t>> shapes{{1}, {7}, {3, 129}, {2, 3, 257}, {5, 33}, {4, 4096}, {2, 1000}, {1, 1024, 160}};
  int cases = 0;
  for (Codec codec : {Codec::kNone, Codec::kInt8Block, Codec::kFp8E4M3Block, Codec::kFp8E5M2Block, Codec::kInt4Block}) {
    std::vector<int> blocks{default_block_size(codec)};
    if (codec == Codec::kInt4Block) blocks.push_back(64);
    if (codec == Codec::kInt8Block) blocks = {16, 128, 1024};
    for (int block : blocks)
      for (DType dtype : {DType::kFloat32, DType::kFloat16, DType::kBFloat16})
        for (const auto& shape : shapes)
          for (Rounding r : {Rounding::kNearest, Rounding::kStochastic})
            for (bool feedback : {false, true})
              for (bool misaligned : {false, true}) {
                if (codec == Codec::kNone && (feedback || r == Rounding::kStochastic)) continue;
                run_case({codec, block, dtype, shape, r, feedback, misaligned}, seed + static_cast<uint32_t>(cases++));
                if (::testing::Test::HasFatalFailure()) return;
              }
  }
  std::printf("%d cases bit-identical\n", cases);
#endif
}

TEST(CudaCodec, NonFiniteInputIsFlaggedInTheBuffer) {
  if (cuda_device_count() == 0) GTEST_SKIP() << cuda_describe();
#ifdef GEOPIPE_HAVE_CUDA
  for (Codec codec : {Codec::kNone, Codec::kInt8Block, Codec::kFp8E4M3Block, Codec::kInt4Block}) {
    std::vector<float> x = normal_values(1000, 5);
    x[999] = std::nanf("");
    const HostTensor t = make_tensor(DType::kBFloat16, {1000}, x);
    const size_t bytes = packed_size({codec}, t.dtype, t.shape);
    DeviceBuffer src(t.raw.size()), dst(bytes);
    CUDA_OK(cudaMemcpy(src.p, t.raw.data(), t.raw.size(), cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemset(dst.p, 0xCD, bytes));
    ASSERT_EQ(encode_cuda({codec}, t.dtype, t.shape.data(), 1, src.p, nullptr, dst.p, bytes, nullptr), Status::kOk);
    std::vector<uint8_t> buf(bytes);
    CUDA_OK(cudaMemcpy(buf.data(), dst.p, bytes, cudaMemcpyDeviceToHost));
    WireHeader h;
    EXPECT_EQ(read_header(buf.data(), bytes, &h), Status::kNonFinite) << codec_name(codec);
  }
#endif
}

TEST(CudaCodec, EmptyTensorStillGetsAHeader) {
  if (cuda_device_count() == 0) GTEST_SKIP() << cuda_describe();
#ifdef GEOPIPE_HAVE_CUDA
  const std::vector<int64_t> shape{0, 128};
  const size_t bytes = packed_size({Codec::kInt8Block}, DType::kBFloat16, shape);
  DeviceBuffer dst(bytes);
  CUDA_OK(cudaMemset(dst.p, 0xCD, bytes));
  ASSERT_EQ(encode_cuda({Codec::kInt8Block}, DType::kBFloat16, shape.data(), 2, nullptr, nullptr, dst.p, bytes, nullptr), Status::kOk);
  std::vector<uint8_t> buf(bytes);
  CUDA_OK(cudaMemcpy(buf.data(), dst.p, bytes, cudaMemcpyDeviceToHost));
  WireHeader h;
  ASSERT_EQ(read_header(buf.data(), bytes, &h), Status::kOk);
  EXPECT_EQ(h.numel, 0);
  EXPECT_EQ(h.shape[1], 128);
#endif
}
