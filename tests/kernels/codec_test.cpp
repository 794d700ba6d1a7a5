// The CPU codecs (the reference the GPU kernels must match bit for bit): error bounds, stochastic
// rounding, error feedback, odd shapes, non-finite input, the wire format and corrupt buffers.
#include "codec_test.h"

#include <geopipe/kernels/device.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>

using namespace geopipe::kernels;
using namespace geopipe::kernels::test;

namespace {

const Codec kLossy[] = {Codec::kInt8Block, Codec::kFp8E4M3Block, Codec::kFp8E5M2Block, Codec::kInt4Block};
const DType kDtypes[] = {DType::kFloat32, DType::kFloat16, DType::kBFloat16};

// Half a step of the fp8 grid at y (in units of y), for the format's mantissa bits and min exponent.
float fp8_half_ulp(Codec c, float y) {
  const int mant = c == Codec::kFp8E4M3Block ? 3 : 2;
  const int emin = c == Codec::kFp8E4M3Block ? -6 : -14;
  int e;
  std::frexp(std::fabs(y), &e);  // |y| in [2^(e-1), 2^e)
  const int exp = std::max(e - 1, emin);
  return std::ldexp(0.5f, exp - mant);
}

double rel_l2(const std::vector<float>& x, const std::vector<float>& y) {
  double num = 0, den = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    num += (double(x[i]) - y[i]) * (double(x[i]) - y[i]);
    den += double(x[i]) * x[i];
  }
  return std::sqrt(num / den);
}

// Per-element check of the round-to-nearest bound for one encoded fp32 tensor [rows, row_len].
void expect_within_bound(Codec codec, int block, const HostTensor& t, const std::vector<uint8_t>& buf) {
  const std::vector<float> y = decode(buf);
  ASSERT_EQ(y.size(), t.values.size());
  const int64_t row_len = t.shape.back();
  const int64_t bpr = (row_len + block - 1) / block;
  const float qmax = codec_qmax(codec);
  for (int64_t i = 0; i < t.numel(); ++i) {
    const int64_t b = (i / row_len) * bpr + (i % row_len) / block;
    const float s = scale_of(buf, b);
    const float x = t.values[i];
    float bound;
    if (codec == Codec::kInt8Block || codec == Codec::kInt4Block)
      bound = 0.5f * s;
    else
      bound = fp8_half_ulp(codec, x / s) * s;
    bound += 4e-7f * s * qmax;  // the float32 roundings of x * inv and q * scale
    ASSERT_LE(std::fabs(x - y[i]), bound) << codec_name(codec) << " element " << i << " x=" << x << " got " << y[i]
                                          << " scale=" << s;
  }
}

}  // namespace

TEST(CodecNames, AreTheProjectNamesAndUnknownOnesAreRefused) {
  EXPECT_EQ(codec_names(), (std::vector<std::string>{"none", "int8-block", "fp8-e4m3-block", "fp8-e5m2-block", "int4-block"}));
  for (const auto& n : codec_names()) EXPECT_EQ(codec_name(codec_from_name(n)), n);
  try {
    codec_from_name("int8");
    FAIL() << "expected CodecError";
  } catch (const CodecError& e) {
    EXPECT_EQ(e.status(), Status::kBadArgument);
    EXPECT_NE(std::string(e.what()).find("int8-block"), std::string::npos) << e.what();
  }
}

TEST(WireFormat, PackedSizeComesFromCodecShapeAndDtypeAlone) {
  // int8, [2,3,300] bf16, block 128: 6 rows x 3 blocks -> 18 scales (72 -> 80 B), 1800 -> 1808 B payload
  EXPECT_EQ(packed_size({Codec::kInt8Block}, DType::kBFloat16, {2, 3, 300}), 112u + 80u + 1808u);
  // int4 block 32, [5,33]: 5 rows x 2 blocks -> 40 -> 48 B; 5 rows x 17 B = 85 -> 96 B
  EXPECT_EQ(packed_size({Codec::kInt4Block}, DType::kFloat32, {5, 33}), 112u + 48u + 96u);
  // none: the raw elements
  EXPECT_EQ(packed_size({Codec::kNone}, DType::kFloat32, {7}), 112u + 32u);
  EXPECT_EQ(packed_size({Codec::kFp8E5M2Block, 64}, DType::kFloat16, {0, 4}), 112u);
  for (Codec c : {Codec::kNone, Codec::kInt8Block, Codec::kFp8E4M3Block, Codec::kFp8E5M2Block, Codec::kInt4Block}) {
    for (DType d : kDtypes) {
      const std::vector<int64_t> shape{3, 77};
      const size_t n = packed_size({c}, d, shape);
      EXPECT_EQ(n % 16, 0u);
      const auto buf = encode({c}, make_tensor(d, shape, normal_values(3 * 77, 1)));
      WireHeader h;
      ASSERT_EQ(read_header(buf.data(), buf.size(), &h), Status::kOk);
      EXPECT_EQ(h.total_bytes, n);
      EXPECT_EQ(h.ndim, 2);
      EXPECT_EQ(h.shape[0], 3);
      EXPECT_EQ(h.shape[1], 77);
      EXPECT_EQ(h.dtype, static_cast<uint8_t>(d));
    }
  }
  EXPECT_THROW(packed_size({Codec::kInt4Block, 128}, DType::kFloat32, {4}), CodecError);
  EXPECT_THROW(packed_size({Codec::kInt8Block}, DType::kFloat32, {2, -1}), CodecError);
  EXPECT_THROW(packed_size({Codec::kInt8Block}, DType::kFloat32, std::vector<int64_t>(9, 1)), CodecError);
}

TEST(RoundToNearest, IntegerCodecsStayWithinHalfAScale) {
  for (Codec c : {Codec::kInt8Block, Codec::kInt4Block}) {
    for (int block : c == Codec::kInt4Block ? std::vector<int>{32, 64} : std::vector<int>{16, 128, 1024}) {
      const std::vector<int64_t> shape{5, 1000};  // 1000 is not a multiple of any block
      const HostTensor t = make_tensor(DType::kFloat32, shape, normal_values(5000, 42, 3.0f));
      expect_within_bound(c, block, t, encode({c, block}, t));
      const HostTensor h = make_tensor(DType::kFloat32, shape, heavy_tailed_values(5000, 43));
      expect_within_bound(c, block, h, encode({c, block}, h));
    }
  }
}

TEST(RoundToNearest, Fp8CodecsStayWithinHalfAnUlpOfTheirFormat) {
  for (Codec c : {Codec::kFp8E4M3Block, Codec::kFp8E5M2Block}) {
    const std::vector<int64_t> shape{4, 333};
    const HostTensor t = make_tensor(DType::kFloat32, shape, normal_values(4 * 333, 5, 0.01f));
    expect_within_bound(c, 128, t, encode({c}, t));
    const HostTensor h = make_tensor(DType::kFloat32, shape, heavy_tailed_values(4 * 333, 6));
    expect_within_bound(c, 128, h, encode({c}, h));
  }
}

TEST(RoundToNearest, RelativeL2ErrorPerCodecIsSmall) {
  // Reported (ctest -V shows them) and bounded by what each format can do.
  struct Case {
    Codec codec;
    double normal_bound, heavy_bound;
  };
  const Case cases[] = {{Codec::kInt8Block, 0.01, 0.02},
                        {Codec::kFp8E4M3Block, 0.04, 0.04},
                        {Codec::kFp8E5M2Block, 0.08, 0.08},
                        {Codec::kInt4Block, 0.15, 0.30}};
  const std::vector<int64_t> shape{16, 4096};
  const HostTensor normal = make_tensor(DType::kBFloat16, shape, normal_values(16 * 4096, 11));
  const HostTensor heavy = make_tensor(DType::kBFloat16, shape, heavy_tailed_values(16 * 4096, 12));
  for (const Case& c : cases) {
    const double e_normal = rel_l2(normal.values, decode(encode({c.codec}, normal)));
    const double e_heavy = rel_l2(heavy.values, decode(encode({c.codec}, heavy)));
    std::printf("relative L2 error %-15s normal %.5f  student-t(3) %.5f\n", codec_name(c.codec), e_normal, e_heavy);
    ::testing::Test::RecordProperty(std::string(codec_name(c.codec)) + "_rel_l2_normal", std::to_string(e_normal));
    ::testing::Test::RecordProperty(std::string(codec_name(c.codec)) + "_rel_l2_heavy", std::to_string(e_heavy));
    EXPECT_LT(e_normal, c.normal_bound) << codec_name(c.codec);
    EXPECT_LT(e_heavy, c.heavy_bound) << codec_name(c.codec);
    EXPECT_GT(e_normal, 0.0) << "a lossy codec that loses nothing is suspicious";
  }
  EXPECT_EQ(rel_l2(normal.values, decode(encode({Codec::kNone}, normal))), 0.0);
}

TEST(StochasticRounding, IsUnbiasedOverSeeds) {
  // Values deliberately off the grid; the mean over seeds must converge on them, while round to
  // nearest keeps a fixed bias of up to half a step (which this tolerance would catch).
  const int n = 256, trials = 2000;
  std::vector<float> x(n);
  for (int i = 0; i < n; ++i) x[i] = (i == 0 ? 1.0f : 0.37f * std::sin(0.7f * i));  // element 0 fixes absmax
  const HostTensor t = make_tensor(DType::kFloat32, {2, 128}, x);
  for (Codec c : kLossy) {
    std::vector<double> mean(n, 0.0);
    for (int s = 0; s < trials; ++s) {
      CodecSpec spec{c};
      spec.rounding = Rounding::kStochastic;
      spec.seed = 1234;
      spec.offset = static_cast<uint64_t>(s);
      const auto y = decode(encode(spec, t));
      for (int i = 0; i < n; ++i) mean[i] += y[i] / trials;
    }
    const std::vector<uint8_t> rn_buf = encode({c}, t);
    const std::vector<float> rn = decode(rn_buf);
    const int block = default_block_size(c), blocks_per_row = 128 / block;
    int rn_would_fail = 0;
    for (int i = 0; i < n; ++i) {
      const float scale = scale_of(rn_buf, (i / 128) * blocks_per_row + (i % 128) / block);
      // one SR draw lands on one of the two grid points around x, `step` apart: std <= step / 2
      const float step = c == Codec::kInt8Block || c == Codec::kInt4Block ? scale
                                                                          : 2.0f * fp8_half_ulp(c, x[i] / scale) * scale;
      const double tol = 5.0 * (step / 2.0) / std::sqrt(double(trials)) + 1e-7;
      EXPECT_NEAR(mean[i], x[i], tol) << codec_name(c) << " element " << i;
      if (std::fabs(rn[i] - x[i]) > tol) ++rn_would_fail;
    }
    EXPECT_GT(rn_would_fail, n / 4) << codec_name(c) << ": the tolerance is too loose to tell SR from RN";
  }
}

TEST(StochasticRounding, SameSeedAndOffsetGiveTheSameBitsOthersDiffer) {
  const HostTensor t = make_tensor(DType::kBFloat16, {3, 200}, normal_values(600, 9));
  CodecSpec a{Codec::kInt8Block};
  a.rounding = Rounding::kStochastic;
  a.seed = 77;
  a.offset = 5;
  CodecSpec b = a;
  b.offset = 6;
  CodecSpec c = a;
  c.seed = 78;
  EXPECT_EQ(encode(a, t), encode(a, t));
  EXPECT_NE(encode(a, t), encode(b, t));
  EXPECT_NE(encode(a, t), encode(c, t));
}

TEST(ErrorFeedback, ResidualIsExactlyWhatQuantizationLost) {
  for (Codec c : kLossy) {
    const HostTensor t = make_tensor(DType::kBFloat16, {4, 300}, normal_values(1200, 21));
    std::vector<float> residual = normal_values(1200, 22, 0.01f);
    const std::vector<float> before = residual;
    const auto buf = encode({c}, t, residual.data());
    const auto y = decode(buf);  // the decoded bf16 values
    // decode in fp32 to see the exact dequantized values: re-decode the same payload as fp32
    std::vector<uint8_t> as_f32 = buf;
    as_f32[offsetof(WireHeader, dtype)] = static_cast<uint8_t>(DType::kFloat32);
    const auto xhat = decode(as_f32);
    for (size_t i = 0; i < residual.size(); ++i) {
      const float v = t.values[i] + before[i];
      ASSERT_EQ(residual[i], v - xhat[i]) << codec_name(c) << " element " << i;
    }
  }
}

TEST(ErrorFeedback, KeepsTheSumOfSentValuesOnTrack) {
  // A constant gradient sent T times: with feedback the total sent stays within one step of
  // T * x; without it, round to nearest repeats the same error every time.
  const int T = 200;
  std::vector<float> x(64);
  for (int i = 0; i < 64; ++i) x[i] = i == 0 ? 1.0f : 0.049f * (i % 7) - 0.11f;
  const HostTensor t = make_tensor(DType::kFloat32, {64}, x);
  std::vector<float> residual(64, 0.0f);
  std::vector<double> sum_ef(64, 0.0), sum_plain(64, 0.0);
  for (int s = 0; s < T; ++s) {
    const auto ef = decode(encode({Codec::kInt4Block}, t, residual.data()));
    const auto plain = decode(encode({Codec::kInt4Block}, t));
    for (int i = 0; i < 64; ++i) {
      sum_ef[i] += ef[i];
      sum_plain[i] += plain[i];
    }
  }
  double worst_ef = 0, worst_plain = 0;
  for (int i = 0; i < 64; ++i) {
    worst_ef = std::max(worst_ef, std::fabs(sum_ef[i] - double(T) * x[i]));
    worst_plain = std::max(worst_plain, std::fabs(sum_plain[i] - double(T) * x[i]));
  }
  const double step = 1.0 / 7.0;  // absmax 1 (with small residual drift), int4
  EXPECT_LT(worst_ef, 1.5 * step);
  EXPECT_GT(worst_plain, 10 * step);
}

TEST(Shapes, EveryDtypeRoundTripsOddEmptyAndSingleElementShapes) {
  const std::vector<std::vector<int64_t>> shapes{{}, {1}, {0}, {3, 0}, {0, 5}, {1, 1}, {7}, {3, 129}, {2, 3, 257}, {5, 33}, {2, 2, 2, 2, 2, 2, 2, 3}};
  for (Codec c : {Codec::kNone, Codec::kInt8Block, Codec::kFp8E4M3Block, Codec::kFp8E5M2Block, Codec::kInt4Block}) {
    for (DType d : kDtypes) {
      for (const auto& shape : shapes) {
        const int64_t n = numel_of(shape);
        const HostTensor t = make_tensor(d, shape, normal_values(n, 31 + static_cast<uint32_t>(n)));
        const auto buf = encode({c}, t);
        WireHeader h;
        ASSERT_EQ(read_header(buf.data(), buf.size(), &h), Status::kOk);
        ASSERT_EQ(h.ndim, shape.size());
        for (size_t k = 0; k < shape.size(); ++k) ASSERT_EQ(h.shape[k], shape[k]);
        const auto y = decode(buf);
        ASSERT_EQ(static_cast<int64_t>(y.size()), n);
        float amax = 0;
        for (float v : t.values) amax = std::max(amax, std::fabs(v));
        const float qmax = c == Codec::kNone ? 1.0f : codec_qmax(c);
        // loose: one step of the coarsest grid, plus the rounding back to a 16-bit dtype
        const float tol = c == Codec::kNone ? 0.0f
                          : (c == Codec::kInt8Block || c == Codec::kInt4Block) ? amax / qmax * 0.51f + amax / 256
                                                                               : amax * 0.13f;
        for (int64_t i = 0; i < n; ++i)
          ASSERT_LE(std::fabs(y[i] - t.values[i]), tol) << codec_name(c) << " " << dtype_name(d) << " element " << i;
      }
    }
  }
}

TEST(Shapes, SingleElementIsReconstructedExactlyByIntegerCodecs) {
  // one element is its own absmax: q = +-qmax, and scale * qmax gives it back (to float rounding)
  for (Codec c : {Codec::kInt8Block, Codec::kInt4Block}) {
    const HostTensor t = make_tensor(DType::kFloat32, {1}, {-3.25f});
    EXPECT_NEAR(decode(encode({c}, t))[0], -3.25f, 1e-6f) << codec_name(c);
  }
}

TEST(Encode, IsDeterministicAndWritesEveryByte) {
  // encode() poisons the destination with 0xCD; a second run over 0x00 must give the same bytes
  const HostTensor t = make_tensor(DType::kFloat16, {3, 45}, normal_values(135, 3));
  for (Codec c : kLossy) {
    const auto a = encode({c}, t);
    std::vector<uint8_t> b(a.size(), 0x00);
    ASSERT_EQ(encode_cpu({c}, t.dtype, t.shape.data(), 2, t.data(), nullptr, b.data(), b.size()), Status::kOk);
    EXPECT_EQ(a, b) << codec_name(c);
  }
}

TEST(Encode, TinyBlocksBecomeZerosWithZeroScale) {
  std::vector<float> x(256, 0.0f);
  for (int i = 0; i < 128; ++i) x[i] = 1e-35f * (i % 3 - 1);  // first block: tiny values
  for (int i = 128; i < 256; ++i) x[i] = std::ldexp(1.0f, -140) * (i % 2);  // float32 subnormals
  const HostTensor t = make_tensor(DType::kFloat32, {256}, x);
  for (Codec c : {Codec::kInt8Block, Codec::kFp8E4M3Block, Codec::kFp8E5M2Block}) {
    const auto buf = encode({c}, t);
    EXPECT_EQ(scale_of(buf, 0), 0.0f);
    EXPECT_EQ(scale_of(buf, 1), 0.0f);
    for (float y : decode(buf)) EXPECT_EQ(y, 0.0f);
  }
  const HostTensor zeros = make_tensor(DType::kBFloat16, {2, 64}, std::vector<float>(128, 0.0f));
  for (float y : decode(encode({Codec::kInt4Block}, zeros))) EXPECT_EQ(y, 0.0f);
}

TEST(NonFinite, IsReportedAndTheBufferNeverDecodes) {
  const float inf = std::numeric_limits<float>::infinity();
  for (float bad : {std::nanf(""), inf, -inf}) {
    for (Codec c : {Codec::kNone, Codec::kInt8Block, Codec::kFp8E4M3Block, Codec::kFp8E5M2Block, Codec::kInt4Block}) {
      for (DType d : kDtypes) {
        std::vector<float> x = normal_values(300, 4);
        x[257] = bad;
        const HostTensor t = make_tensor(d, {300}, x);
        const auto buf = encode({c}, t, nullptr, Status::kNonFinite);
        WireHeader h;
        std::string why;
        EXPECT_EQ(read_header(buf.data(), buf.size(), &h, &why), Status::kNonFinite) << codec_name(c);
        EXPECT_NE(why.find("NaN or Inf"), std::string::npos) << why;
        std::vector<uint8_t> out(300 * dtype_size(d));
        EXPECT_EQ(decode_cpu(buf.data(), buf.size(), out.data(), out.size()), Status::kNonFinite);
      }
    }
  }
}

TEST(NonFinite, OverflowOfInputPlusResidualIsReported) {
  const HostTensor t = make_tensor(DType::kFloat32, {4}, {3e38f, 1.0f, 2.0f, 3.0f});
  std::vector<float> residual{3e38f, 0.0f, 0.0f, 0.0f};  // 6e38 overflows float32
  encode({Codec::kInt8Block}, t, residual.data(), Status::kNonFinite);
}

TEST(BadArguments, AreRefusedWithAStatus) {
  const HostTensor t = make_tensor(DType::kFloat32, {64}, normal_values(64, 1));
  std::vector<uint8_t> buf(4096);
  std::vector<float> residual(64, 0.0f);
  auto run = [&](CodecSpec s, float* r, size_t bytes) {
    return encode_cpu(s, t.dtype, t.shape.data(), 1, t.data(), r, buf.data(), bytes);
  };
  EXPECT_EQ(run({Codec::kInt4Block, 128}, nullptr, buf.size()), Status::kBadArgument);
  EXPECT_EQ(run({Codec::kInt8Block, 100}, nullptr, buf.size()), Status::kBadArgument);
  EXPECT_EQ(run({Codec::kNone}, residual.data(), buf.size()), Status::kBadArgument);
  EXPECT_EQ(run({Codec::kInt8Block}, nullptr, 100), Status::kBufferTooSmall);
  EXPECT_EQ(encode_cpu({}, t.dtype, t.shape.data(), 1, nullptr, nullptr, buf.data(), buf.size()), Status::kBadArgument);
  EXPECT_EQ(encode_cpu({}, static_cast<DType>(9), t.shape.data(), 1, t.data(), nullptr, buf.data(), buf.size()), Status::kBadArgument);
}

TEST(CorruptBuffers, AreRefusedWithTheReason) {
  const HostTensor t = make_tensor(DType::kBFloat16, {4, 100}, normal_values(400, 8));
  const auto good = encode({Codec::kInt8Block}, t);
  std::vector<uint8_t> out(400 * 2);
  auto expect_refused = [&](std::vector<uint8_t> buf, size_t bytes, Status want, const std::string& reason) {
    std::string why;
    EXPECT_EQ(decode_cpu(buf.data(), bytes, out.data(), out.size(), &why), want) << reason;
    EXPECT_NE(why.find(reason), std::string::npos) << "reason given: " << why;
  };
  auto with = [&](size_t offset, const void* v, size_t n) {
    std::vector<uint8_t> b = good;
    std::memcpy(b.data() + offset, v, n);
    return b;
  };
  const uint32_t bad_magic = 0x12345678;
  const uint16_t v2 = 2;
  const uint8_t codec9 = 9, ndim9 = 9, dtype7 = 7;
  const uint32_t block0 = 0, block100 = 100;
  const int64_t neg = -4, numel_wrong = 401;
  const uint64_t size_wrong = good.size() + 16;
  const float nan = std::nanf(""), negative = -1.0f;
  expect_refused(with(0, &bad_magic, 4), good.size(), Status::kCorrupt, "magic");
  expect_refused(with(offsetof(WireHeader, version), &v2, 2), good.size(), Status::kCorrupt, "version 2");
  expect_refused(with(offsetof(WireHeader, codec), &codec9, 1), good.size(), Status::kCorrupt, "codec");
  expect_refused(with(offsetof(WireHeader, dtype), &dtype7, 1), good.size(), Status::kCorrupt, "dtype");
  expect_refused(with(offsetof(WireHeader, ndim), &ndim9, 1), good.size(), Status::kCorrupt, "ndim");
  expect_refused(with(offsetof(WireHeader, block_size), &block0, 4), good.size(), Status::kCorrupt, "block size");
  expect_refused(with(offsetof(WireHeader, block_size), &block100, 4), good.size(), Status::kCorrupt, "block size");
  expect_refused(with(offsetof(WireHeader, shape), &neg, 8), good.size(), Status::kCorrupt, "shape");
  expect_refused(with(offsetof(WireHeader, numel), &numel_wrong, 8), good.size(), Status::kCorrupt, "element count");
  expect_refused(with(offsetof(WireHeader, total_bytes), &size_wrong, 8), good.size(), Status::kCorrupt, "size field");
  expect_refused(good, good.size() - 1, Status::kCorrupt, "truncated");
  expect_refused(good, 50, Status::kCorrupt, "truncated");
  expect_refused(good, 0, Status::kCorrupt, "truncated");
  expect_refused(with(sizeof(WireHeader) + 8, &nan, 4), good.size(), Status::kCorrupt, "scale of block 2");
  expect_refused(with(sizeof(WireHeader), &negative, 4), good.size(), Status::kCorrupt, "scale of block 0");
  // a destination of the wrong size is the caller's mistake, not a corrupt buffer
  std::string why;
  EXPECT_EQ(decode_cpu(good.data(), good.size(), out.data(), out.size() - 2, &why), Status::kBadArgument);
  // and the untouched buffer still decodes
  EXPECT_EQ(decode_cpu(good.data(), good.size(), out.data(), out.size(), &why), Status::kOk) << why;
}

TEST(CudaEntryPoints, ReportWhyTheyCannotRunWithoutAGpu) {
  if (cuda_device_count() > 0) GTEST_SKIP() << "a GPU is present; codec_cuda_test covers the kernels";
  const HostTensor t = make_tensor(DType::kFloat32, {16}, normal_values(16, 1));
  alignas(16) uint8_t buf[256];
  const Status st = encode_cuda({}, t.dtype, t.shape.data(), 1, t.data(), nullptr, buf, sizeof buf, nullptr);
  if (!built_with_cuda())
    EXPECT_EQ(st, Status::kNoCuda);
  else
    EXPECT_EQ(st, Status::kCudaError) << "with CUDA built in but no device, the first CUDA call must fail cleanly";
}
