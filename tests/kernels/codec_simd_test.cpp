// The AVX2 loops of the CPU twins against the portable loops (the reference), byte for byte: wire
// buffers and decoded tensors for every codec and dtype, row tails, tiny and subnormal blocks,
// NaN/Inf, every fp8 code and int8/int4 byte, the fp8 encoder on every bfloat16 value and on the
// rounding ties of every fp8 step, and the non-temporal stores used for very large outputs.
// Skipped where the CPU has no AVX2.
#include "codec_test.h"
#include "codec_cpu_simd.h"  // the AVX2 block loops themselves, for their streaming-store variant

#include <cmath>
#include <limits>
#include <random>
#include <string>

using namespace geopipe::kernels;
using namespace geopipe::kernels::test;

namespace {

const Codec kLossy[] = {Codec::kInt8Block, Codec::kFp8E4M3Block, Codec::kFp8E5M2Block, Codec::kInt4Block};
const DType kDtypes[] = {DType::kFloat32, DType::kFloat16, DType::kBFloat16};

// Puts the process back on the automatic choice whatever a test did.
class SimdTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!cpu_avx2_available()) GTEST_SKIP() << "this CPU (or build) has no AVX2 loops";
  }
  void TearDown() override { set_cpu_path(CpuPath::kAuto); }
};

struct Encoded {
  Status status;
  std::vector<uint8_t> bytes;
};

Encoded encode_with(CpuPath path, const CodecSpec& spec, const HostTensor& t) {
  EXPECT_TRUE(set_cpu_path(path));
  const size_t bytes = packed_size(spec, t.dtype, t.shape);
  Encoded e{Status::kOk, std::vector<uint8_t>(bytes, 0xCD)};
  e.status = encode_cpu(spec, t.dtype, t.shape.data(), static_cast<int>(t.shape.size()), t.data(), nullptr, e.bytes.data(),
                        e.bytes.size());
  return e;
}

std::vector<uint8_t> decode_with(CpuPath path, const std::vector<uint8_t>& buf) {
  EXPECT_TRUE(set_cpu_path(path));
  WireHeader h;
  EXPECT_EQ(read_header(buf.data(), buf.size(), &h), Status::kOk);
  const Layout L = layout_of(h);
  std::vector<uint8_t> raw(static_cast<size_t>(L.numel) * dtype_size(static_cast<DType>(h.dtype)), 0xCD);
  std::string why;
  EXPECT_EQ(decode_cpu(buf.data(), buf.size(), raw.data(), raw.size(), &why), Status::kOk) << why;
  return raw;
}

size_t first_difference(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i)
    if (a[i] != b[i]) return i;
  return a.size() == b.size() ? std::string::npos : std::min(a.size(), b.size());
}

// Encodes with both loops, expects equal buffers and equal statuses, and (when encoded) equal
// decoded tensors from both loops.
void expect_same(const CodecSpec& spec, const HostTensor& t, const std::string& what) {
  const Encoded p = encode_with(CpuPath::kPortable, spec, t);
  const Encoded v = encode_with(CpuPath::kAvx2, spec, t);
  ASSERT_EQ(p.status, v.status) << what;
  ASSERT_EQ(first_difference(p.bytes, v.bytes), std::string::npos) << what << ": wire buffers differ";
  if (p.status != Status::kOk) return;
  const auto dp = decode_with(CpuPath::kPortable, p.bytes);
  const auto dv = decode_with(CpuPath::kAvx2, p.bytes);
  ASSERT_EQ(first_difference(dp, dv), std::string::npos) << what << ": decoded tensors differ";
}

// Values whose blocks span many magnitudes: each run of 16 elements scaled by 2^k, k in [-150, 110],
// so some blocks are tiny (encoded as zeros), some hold float32/float16 subnormals, some are huge.
std::vector<float> wide_range_values(int64_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::uniform_int_distribution<int> k(-150, 110);
  std::vector<float> v(static_cast<size_t>(n));
  int e = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (i % 16 == 0) e = k(gen);
    v[i] = std::ldexp(d(gen), e);
    if (!std::isfinite(v[i])) v[i] = 0.0f;
  }
  return v;
}

size_t layout_payload_offset(Codec c, const HostTensor& t) {
  Layout L;
  EXPECT_EQ(compute_layout({c}, t.dtype, t.shape.data(), static_cast<int>(t.shape.size()), &L), Status::kOk);
  return L.payload_offset;
}

}  // namespace

TEST(CpuPath, PortableCanAlwaysBeChosenAndAvx2OnlyWhereAvailable) {
  EXPECT_TRUE(set_cpu_path(CpuPath::kPortable));
  EXPECT_EQ(cpu_path(), CpuPath::kPortable);
  EXPECT_EQ(set_cpu_path(CpuPath::kAvx2), cpu_avx2_available());
  EXPECT_EQ(cpu_path(), cpu_avx2_available() ? CpuPath::kAvx2 : CpuPath::kPortable);
  EXPECT_TRUE(set_cpu_path(CpuPath::kAuto));
  EXPECT_EQ(cpu_path(), cpu_avx2_available() ? CpuPath::kAvx2 : CpuPath::kPortable);
  EXPECT_STREQ(cpu_path_name(CpuPath::kAvx2), "avx2");
}

TEST_F(SimdTest, Avx2LoopsEqualPortableLoopsOnRandomTensorsWithRowTails) {
  // rows that are whole blocks, rows with a tail block, rows shorter than one block, odd rows (int4)
  const std::vector<std::vector<int64_t>> shapes{{4, 256}, {3, 129}, {2, 3, 257}, {5, 1000}, {7, 33}, {9, 31}, {1, 4096}, {64}, {2, 65}};
  uint32_t seed = 100;
  for (Codec c : kLossy) {
    for (DType d : kDtypes) {
      for (const auto& shape : shapes) {
        const int64_t n = numel_of(shape);
        const std::string what = std::string(codec_name(c)) + " " + dtype_name(d) + " numel " + std::to_string(n);
        expect_same({c}, make_tensor(d, shape, normal_values(n, ++seed)), what + " normal");
        expect_same({c}, make_tensor(d, shape, heavy_tailed_values(n, ++seed)), what + " heavy-tailed");
        expect_same({c}, make_tensor(d, shape, wide_range_values(n, ++seed)), what + " wide range");
      }
    }
  }
}

TEST_F(SimdTest, Avx2LoopsEqualPortableLoopsForEveryBlockSize) {
  for (Codec c : kLossy) {
    const std::vector<int> sizes = c == Codec::kInt4Block ? std::vector<int>{32, 64} : std::vector<int>{16, 32, 64, 256, 1024};
    for (int block : sizes) {
      for (DType d : kDtypes) {
        CodecSpec spec{c};
        spec.block_size = block;
        const std::vector<int64_t> shape{3, 2 * block + 17};
        const std::string what = std::string(codec_name(c)) + " block " + std::to_string(block) + " " + dtype_name(d);
        expect_same(spec, make_tensor(d, shape, wide_range_values(numel_of(shape), 7u + static_cast<uint32_t>(block))), what);
      }
    }
  }
}

TEST_F(SimdTest, NonFiniteBlocksAreReportedAndSkippedAlike) {
  const float inf = std::numeric_limits<float>::infinity();
  for (float bad : {std::nanf(""), inf, -inf}) {
    for (int64_t at : {0, 127, 128, 300, 1023}) {
      std::vector<float> v = normal_values(4 * 256, 5);
      v[static_cast<size_t>(at)] = bad;
      for (Codec c : kLossy) {
        for (DType d : kDtypes) {
          const HostTensor t = make_tensor(d, {4, 256}, v);
          const std::string what = std::string(codec_name(c)) + " " + dtype_name(d) + " bad at " + std::to_string(at);
          const Encoded p = encode_with(CpuPath::kPortable, {c}, t);
          const Encoded x = encode_with(CpuPath::kAvx2, {c}, t);
          EXPECT_EQ(p.status, Status::kNonFinite) << what;
          EXPECT_EQ(x.status, Status::kNonFinite) << what;
          EXPECT_EQ(first_difference(p.bytes, x.bytes), std::string::npos) << what;
        }
      }
    }
  }
}

TEST_F(SimdTest, Fp8EncoderEqualsPortableOnEveryBfloat16AndEveryRoundingTie) {
  // A block whose absmax is exactly qmax has scale = inv = 1, so y = x: the encoder sees the values
  // themselves. Each block: qmax first, then 127 test values of magnitude <= qmax (both signs).
  for (Codec c : {Codec::kFp8E4M3Block, Codec::kFp8E5M2Block}) {
    const float qmax = codec_qmax(c);
    const int mant = c == Codec::kFp8E4M3Block ? 3 : 2;
    std::vector<float> tests;
    for (uint32_t h = 0; h < 0x10000u; ++h) {  // every bfloat16
      const float f = num::bf16_to_f32(static_cast<uint16_t>(h));
      if (std::fabs(f) <= qmax) tests.push_back(f);
    }
    const uint32_t sn = 23u - static_cast<uint32_t>(mant);  // fp8 normal: 23 - mant bits dropped
    for (uint32_t e = 0; e < 255u; ++e) {  // the tie of every fp8 step (normal and subnormal) and its neighbours
      for (uint32_t m = 0; m < (1u << mant); ++m) {
        for (uint32_t s = 1; s <= 23u; ++s) {  // s == sn: a normal step; smaller or larger: other exponents' steps
          const uint32_t tie = (e << 23) | (m << sn) | (1u << (s - 1));
          for (int delta : {-1, 0, 1}) {
            const float f = num::bits_f32(tie + static_cast<uint32_t>(delta));
            if (std::isfinite(f) && std::fabs(f) <= qmax) {
              tests.push_back(f);
              tests.push_back(-f);
            }
          }
        }
      }
    }
    std::vector<float> v;
    for (size_t i = 0; i < tests.size(); ++i) {
      if (v.size() % 128 == 0) v.push_back(qmax);
      v.push_back(tests[i]);
    }
    while (v.size() % 128 != 0) v.push_back(0.0f);
    expect_same({c}, make_tensor(DType::kFloat32, {static_cast<int64_t>(v.size() / 128), 128}, v),
                std::string(codec_name(c)) + " every bfloat16 and tie");
  }
}

TEST_F(SimdTest, DecodersEqualPortableOnEveryPayloadByte) {
  // a valid buffer whose payload is overwritten with every byte value (fp8: every code, NaN and Inf
  // codes included; int8: -128 too; int4: every nibble pair) under ordinary, huge and subnormal scales
  const float scales[] = {1.0f, 0.37f, 3.0e38f, 1.0e-40f, 0.0f};
  for (Codec c : kLossy) {
    for (DType d : kDtypes) {
      const int64_t row_len = c == Codec::kInt4Block ? 512 + 64 : 256 + 128;  // 256 codes (int4: byte pairs) per row
      std::vector<uint8_t> buf = encode_with(CpuPath::kPortable, {c}, make_tensor(d, {5, row_len}, normal_values(5 * row_len, 9))).bytes;
      WireHeader h;
      ASSERT_EQ(read_header(buf.data(), buf.size(), &h), Status::kOk);
      const Layout L = layout_of(h);
      for (int64_t b = 0; b < L.num_blocks; ++b) std::memcpy(&buf[L.scales_offset + b * 4], &scales[b % 5], 4);
      for (size_t i = 0; i < L.payload_bytes; ++i) buf[L.payload_offset + i] = static_cast<uint8_t>(i * 7 + i / 256);
      const auto dp = decode_with(CpuPath::kPortable, buf);
      const auto dv = decode_with(CpuPath::kAvx2, buf);
      EXPECT_EQ(first_difference(dp, dv), std::string::npos) << codec_name(c) << " " << dtype_name(d);
    }
  }
}

TEST_F(SimdTest, StreamingStoresWriteTheSameBytesAsOrdinaryStores) {
  // encode_cpu streams only outputs of >= simd::kStreamBytes; the block loops are called directly here
  // with 64-byte aligned buffers so both store kinds run on a small tensor
  const int64_t nblocks = 24;
  for (Codec c : kLossy) {
    const int B = default_block_size(c);
    for (DType d : kDtypes) {
      const HostTensor t = make_tensor(d, {nblocks * B}, wide_range_values(nblocks * B, 77));
      const size_t payload = static_cast<size_t>(c == Codec::kInt4Block ? nblocks * B / 2 : nblocks * B);
      const size_t out_bytes = static_cast<size_t>(nblocks * B) * dtype_size(d);
      std::vector<uint8_t> mem(4 * 64 + 2 * payload + 2 * out_bytes + 64, 0xCD);
      uint8_t* base = mem.data() + (64 - reinterpret_cast<uintptr_t>(mem.data()) % 64) % 64;
      uint8_t* q[2] = {base, base + ((payload + 63) / 64) * 64};
      uint8_t* y[2] = {q[1] + ((payload + 63) / 64) * 64, q[1] + ((payload + 63) / 64) * 64 + ((out_bytes + 63) / 64) * 64};
      std::vector<float> scales[2] = {std::vector<float>(nblocks), std::vector<float>(nblocks)};
      bool nonfinite[2];  // float16 holds Inf where the wide range overflows it: those blocks are skipped
      for (int k = 0; k < 2; ++k) {
        nonfinite[k] = simd::encode_blocks_avx2(c, d, t.data(), nblocks, B, codec_qmax(c), scales[k].data(), q[k], k == 1);
        simd::decode_blocks_avx2(c, d, scales[k].data(), q[k], y[k], nblocks, B, k == 1);
      }
      const std::string what = std::string(codec_name(c)) + " " + dtype_name(d);
      EXPECT_EQ(nonfinite[0], d == DType::kFloat16) << what;
      EXPECT_EQ(nonfinite[1], nonfinite[0]) << what;
      EXPECT_EQ(scales[0], scales[1]) << what;
      EXPECT_EQ(std::memcmp(q[0], q[1], payload), 0) << what << ": payloads differ";
      EXPECT_EQ(std::memcmp(y[0], y[1], out_bytes), 0) << what << ": decoded tensors differ";
      // and the portable loops agree with what the block loops wrote
      const Encoded p = encode_with(CpuPath::kPortable, {c}, t);
      EXPECT_EQ(std::memcmp(p.bytes.data() + layout_payload_offset(c, t), q[1], payload), 0) << what;
    }
  }
}
