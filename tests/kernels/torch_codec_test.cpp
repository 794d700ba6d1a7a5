// The LibTorch adapter: tensors of every supported dtype through compress/decompress, the shapes
// the runtime sends ([micro_batch, seq_len, d_model]), non-contiguous inputs (made contiguous),
// errors as CodecError, and the CUDA path (skipped without a GPU or without LibTorch CUDA).
#include <geopipe/kernels/device.h>
#include <geopipe/kernels/numeric.h>
#include <geopipe/kernels/torch_codec.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

using namespace geopipe::kernels;

namespace {

at::Tensor randn(std::vector<int64_t> shape, at::ScalarType t = at::kFloat, uint64_t seed = 1) {
  auto gen = at::detail::createCPUGenerator(seed);
  return at::randn(shape, gen, at::TensorOptions().dtype(at::kFloat)).to(t);
}

template <class F>
Status status_of(F&& f) {
  try {
    f();
  } catch (const CodecError& e) {
    return e.status();
  }
  return Status::kOk;
}

}  // namespace

TEST(TorchCodec, RoundTripKeepsShapeDtypeAndStaysWithinTheCodecError) {
  for (at::ScalarType t : {at::kFloat, at::kHalf, at::kBFloat16}) {
    for (const char* name : {"none", "int8-block", "fp8-e4m3-block", "fp8-e5m2-block", "int4-block"}) {
      const at::Tensor x = randn({2, 16, 96}, t);
      const CodecSpec spec{codec_from_name(name)};
      const Packed p = compress(x, spec);
      EXPECT_EQ(static_cast<size_t>(p.nbytes()), packed_size(spec, t, x.sizes())) << name;
      EXPECT_EQ(p.shape(), x.sizes().vec());
      EXPECT_EQ(reinterpret_cast<uintptr_t>(p.bytes.data_ptr()) % 16, 0u);
      const at::Tensor y = decompress(p);
      ASSERT_EQ(y.scalar_type(), t);
      ASSERT_EQ(y.sizes(), x.sizes());
      const double rel = (y.to(at::kFloat) - x.to(at::kFloat)).norm().item<double>() / x.to(at::kFloat).norm().item<double>();
      const double bound = std::string(name) == "none" ? 0.0 : std::string(name) == "int4-block" ? 0.2 : 0.08;
      EXPECT_LE(rel, bound) << name << " " << c10::toString(t);
    }
  }
}

TEST(TorchCodec, AdapterBytesEqualTheCApiBytes) {
  const at::Tensor x = randn({3, 200}, at::kBFloat16);
  const CodecSpec spec{Codec::kInt8Block};
  const Packed p = compress(x, spec);
  std::vector<uint8_t> direct(packed_size(spec, DType::kBFloat16, {3, 200}));
  const int64_t shape[] = {3, 200};
  ASSERT_EQ(encode_cpu(spec, DType::kBFloat16, shape, 2, x.data_ptr(), nullptr, direct.data(), direct.size()), Status::kOk);
  ASSERT_EQ(static_cast<size_t>(p.nbytes()), direct.size());
  EXPECT_EQ(std::memcmp(p.bytes.data_ptr(), direct.data(), direct.size()), 0);
}

TEST(TorchCodec, NonContiguousInputIsMadeContiguous) {
  const at::Tensor base = randn({64, 48});
  const at::Tensor xt = base.t();  // [48, 64], not contiguous
  ASSERT_FALSE(xt.is_contiguous());
  const at::Tensor a = decompress(compress(xt, {Codec::kInt8Block}));
  const at::Tensor b = decompress(compress(xt.contiguous(), {Codec::kInt8Block}));
  EXPECT_TRUE(at::equal(a, b));
  const at::Tensor sliced = base.slice(1, 1, 40);  // offset storage, strided rows
  EXPECT_TRUE(at::equal(decompress(compress(sliced, {Codec::kFp8E4M3Block})),
                        decompress(compress(sliced.contiguous(), {Codec::kFp8E4M3Block}))));
}

TEST(TorchCodec, EmptyZeroDimAndSingleElementTensors) {
  for (const char* name : {"none", "int8-block", "int4-block"}) {
    const CodecSpec spec{codec_from_name(name)};
    const at::Tensor e = at::empty({0, 64});
    EXPECT_EQ(decompress(compress(e, spec)).sizes(), e.sizes());
    const at::Tensor s = at::scalar_tensor(2.5);
    const at::Tensor ys = decompress(compress(s.to(at::kFloat), spec));
    EXPECT_EQ(ys.dim(), 0);
    EXPECT_NEAR(ys.item<float>(), 2.5f, 1e-6f);
    const at::Tensor one = at::full({1}, -0.75f);
    EXPECT_NEAR(decompress(compress(one, spec)).item<float>(), -0.75f, 1e-6f);
  }
}

TEST(TorchCodec, ErrorFeedbackUpdatesTheResidualTensor) {
  const at::Tensor x = randn({4, 256});
  at::Tensor residual = at::zeros({4, 256});
  const at::Tensor y = decompress(compress(x, {Codec::kInt4Block}, residual));
  EXPECT_TRUE(at::allclose(residual, x - y, 0, 0)) << "residual must be exactly x - dequantized";
  at::Tensor wrong = at::zeros({4, 255});
  EXPECT_EQ(status_of([&] { compress(x, {Codec::kInt4Block}, wrong); }), Status::kBadArgument);
  at::Tensor r2 = at::zeros({4, 256});
  EXPECT_EQ(status_of([&] { compress(x, {Codec::kNone}, r2); }), Status::kBadArgument);
}

TEST(TorchCodec, NonFiniteTensorThrowsNonFinite) {
  at::Tensor x = randn({8, 128});
  x[3][77] = std::nanf("");
  try {
    compress(x, {Codec::kInt8Block});
    FAIL() << "expected CodecError";
  } catch (const CodecError& e) {
    EXPECT_EQ(e.status(), Status::kNonFinite);
    EXPECT_NE(std::string(e.what()).find("NaN or Inf"), std::string::npos) << e.what();
  }
  x[3][77] = INFINITY;
  EXPECT_EQ(status_of([&] { compress(x.to(at::kBFloat16), {Codec::kNone}); }), Status::kNonFinite);
}

TEST(TorchCodec, UnsupportedDtypesAndBadBlocksAreRefused) {
  EXPECT_EQ(status_of([&] { compress(at::ones({4}, at::kDouble), {Codec::kInt8Block}); }), Status::kBadArgument);
  EXPECT_EQ(status_of([&] { compress(at::ones({4}, at::kInt), {Codec::kInt8Block}); }), Status::kBadArgument);
  EXPECT_EQ(status_of([&] { compress(at::ones({4}), {Codec::kInt4Block, 128}); }), Status::kBadArgument);
}

TEST(TorchCodec, DecompressIntoFillsAnExistingTensorAndChecksIt) {
  const at::Tensor x = randn({2, 8, 256}, at::kBFloat16);
  const Packed p = compress(x, {Codec::kFp8E4M3Block});
  at::Tensor out = at::full({2, 8, 256}, 7.0, at::TensorOptions().dtype(at::kBFloat16));
  decompress_into(p.bytes, out);
  EXPECT_TRUE(at::equal(out, decompress(p)));
  at::Tensor wrong_dtype = at::empty({2, 8, 256});
  EXPECT_EQ(status_of([&] { decompress_into(p.bytes, wrong_dtype); }), Status::kBadArgument);
  at::Tensor wrong_shape = at::empty({2, 8, 255}, at::TensorOptions().dtype(at::kBFloat16));
  EXPECT_EQ(status_of([&] { decompress_into(p.bytes, wrong_shape); }), Status::kBadArgument);
}

TEST(TorchCodec, CorruptOrTruncatedBytesThrowCorrupt) {
  const Packed p = compress(randn({4, 300}), {Codec::kFp8E5M2Block});
  const at::Tensor truncated = p.bytes.slice(0, 0, p.nbytes() - 1);
  try {
    decompress(truncated);
    FAIL() << "expected CodecError";
  } catch (const CodecError& e) {
    EXPECT_EQ(e.status(), Status::kCorrupt);
    EXPECT_NE(std::string(e.what()).find("truncated"), std::string::npos) << e.what();
  }
  at::Tensor bad = p.bytes.clone();
  bad[0] = 0;  // magic
  EXPECT_EQ(status_of([&] { decompress(bad); }), Status::kCorrupt);
  EXPECT_EQ(status_of([&] { decompress(at::zeros({200}, at::kFloat)); }), Status::kBadArgument);
}

TEST(TorchCodec, ConversionsAgreeWithLibTorchRounding) {
  // Our bf16/fp16 rounding (used on both CPU and GPU) is LibTorch's round-to-nearest-even.
  std::mt19937 gen(3);
  std::uniform_int_distribution<uint32_t> bits;
  for (int i = 0; i < 200000; ++i) {
    const float f = num::bits_f32(bits(gen));
    if (!std::isfinite(f)) continue;
    ASSERT_EQ(num::f32_to_bf16(f), c10::BFloat16(f).x) << f;
    ASSERT_EQ(num::f32_to_f16(f), c10::Half(f).x) << f;
  }
}

TEST(TorchCodec, CudaTensorsUseTheKernelsAndMatchTheCpuTwin) {
  if (cuda_device_count() == 0) GTEST_SKIP() << cuda_describe();
  if (!at::hasCUDA()) GTEST_SKIP() << "LibTorch without CUDA";
  for (const char* name : {"int8-block", "fp8-e4m3-block", "fp8-e5m2-block", "int4-block"}) {
    const at::Tensor x = randn({2, 128, 512}, at::kBFloat16, 17);
    const CodecSpec spec{codec_from_name(name)};
    const Packed cpu = compress(x, spec);
    const Packed gpu = compress(x.cuda(), spec);
    EXPECT_TRUE(gpu.bytes.is_cuda());
    EXPECT_TRUE(at::equal(cpu.bytes, gpu.bytes.cpu())) << name;
    const at::Tensor y = decompress(gpu.bytes);
    EXPECT_TRUE(y.is_cuda());
    EXPECT_TRUE(at::equal(y.cpu(), decompress(cpu.bytes))) << name;
    EXPECT_TRUE(at::equal(decompress(cpu.bytes, c10::Device(c10::kCUDA, 0)).cpu(), decompress(cpu.bytes)));
  }
}
