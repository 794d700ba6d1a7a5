// CPU twins of the CUDA codec kernels: the same per-element arithmetic (numeric.h), so buffers,
// residuals and dequantized values are bit-identical to the GPU's. This file is compiled with
// -ffp-contract=off (see kernels/CMakeLists.txt): a fused multiply-add would round once where the
// device rounds twice. Loops are written per codec/dtype so the compiler can vectorize them; on
// CPUs with AVX2, whole blocks of round-to-nearest encoding without error feedback, and decoding,
// run the explicit AVX2 loops of codec_cpu_avx2.cpp instead (identical bytes, tested against these).
#include <geopipe/kernels/codec.h>
#include <geopipe/kernels/numeric.h>

#include "codec_cpu_simd.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <cstring>

#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__) && !defined(GEOPIPE_NO_CPU_CLONES)
#define GEOPIPE_CPU_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define GEOPIPE_CPU_CLONES
#endif
#if defined(__GNUC__)
#define GEOPIPE_CPU_INLINE inline __attribute__((always_inline))
#else
#define GEOPIPE_CPU_INLINE inline
#endif

namespace geopipe::kernels {

namespace {

using namespace num;

// ---- loading and storing the three input dtypes -------------------------------------------
struct F32 {
  using T = float;
  static constexpr DType kDType = DType::kFloat32;
  static float load(float v) { return v; }
  static float store(float v) { return v; }
};
struct BF16 {
  using T = uint16_t;
  static constexpr DType kDType = DType::kBFloat16;
  static float load(uint16_t v) { return bf16_to_f32(v); }
  static uint16_t store(float v) { return f32_to_bf16(v); }
};
struct F16 {
  using T = uint16_t;
  static constexpr DType kDType = DType::kFloat16;
  static float load(uint16_t v) { return f16_to_f32(v); }
  static uint16_t store(float v) { return f32_to_f16(v); }
};

struct Work {
  Layout L;
  float qmax;
  uint64_t seed, offset;
  float* scales;
  uint8_t* payload;
  float* residual;
  bool avx2 = false;  // whole blocks of round-to-nearest without error feedback go to the AVX2 loops
  bool nonfinite = false;
};

// Random bits of flat element i (Philox word i % 4 of counter group i / 4), cached per group.
struct RandomBits {
  uint64_t seed, offset;
  uint64_t group = ~uint64_t{0};
  Philox4 r{};
  uint32_t at(uint64_t i) {
    if ((i >> 2) != group) {
      group = i >> 2;
      r = philox_for_group(seed, offset, group);
    }
    return r.v[i & 3];
  }
};

// One block: v = x (+ residual), absmax, scale, quantize, optional new residual. Two passes over
// the block (it stays in L1): the absmax, then v is recomputed (the same exact add) and quantized.
// kN: the block length when known at compile time (full blocks of the default sizes), else 0.
template <class In, Codec C, bool SR, bool EF, int kN>
GEOPIPE_CPU_INLINE void encode_block(Work& w, const typename In::T* src, int64_t row, int64_t c0, int64_t b) {
  const Layout& L = w.L;
  const int n = kN ? kN : static_cast<int>(std::min<int64_t>(L.block_size, L.row_len - c0));
  const int64_t base = row * L.row_len + c0;
  const typename In::T* x = src + base;
  float* res = EF ? w.residual + base : nullptr;
  auto value = [&](int j) {
    const float f = In::load(x[j]);
    return EF ? add_rn(f, res[j]) : f;
  };

  // |v| as bits: a signed max is enough (bit 31 cleared) and vectorizes well; Inf/NaN sort last
  int32_t amax = 0;
  for (int j = 0; j < n; ++j) {
    const int32_t a = static_cast<int32_t>(f32_bits(value(j)) & 0x7fffffffu);
    amax = a > amax ? a : amax;
  }
  if (amax >= 0x7f800000) {  // NaN or Inf somewhere in the block: never encoded
    w.nonfinite = true;
    return;
  }
  const BlockScale s = block_scale(static_cast<uint32_t>(amax), w.qmax);
  w.scales[b] = s.scale;
  RandomBits rng{w.seed, w.offset};

  if (C == Codec::kInt8Block) {
    int8_t* q = reinterpret_cast<int8_t*>(w.payload) + base;
    if (!SR && !EF) {  // the common case, kept simple enough to vectorize
      for (int j = 0; j < n; ++j) q[j] = static_cast<int8_t>(quantize_int_rn(mul_rn(In::load(x[j]), s.inv)));
      return;
    }
    for (int j = 0; j < n; ++j) {
      const float v = value(j);
      const uint32_t rnd = SR ? rng.at(static_cast<uint64_t>(base + j)) : 0u;
      const int32_t qi = quantize_int(v, s.inv, 127.0f, SR, rnd);
      q[j] = static_cast<int8_t>(qi);
      if (EF) res[j] = sub_rn(v, dequantize_int(qi, s.scale));
    }
  } else if (C == Codec::kInt4Block) {
    uint8_t* q = w.payload + row * ((L.row_len + 1) / 2) + c0 / 2;  // c0 is even (block 32/64)
    if (!SR && !EF) {  // pairs; the low nibble of round(y)'s bits is q & 0xf
      const int pairs = n / 2;
      for (int p = 0; p < pairs; ++p) {
        const int32_t q0 = quantize_int_rn(mul_rn(In::load(x[2 * p]), s.inv));
        const int32_t q1 = quantize_int_rn(mul_rn(In::load(x[2 * p + 1]), s.inv));
        q[p] = static_cast<uint8_t>((q0 & 0xf) | ((q1 & 0xf) << 4));
      }
      if (n & 1) q[pairs] = static_cast<uint8_t>(quantize_int_rn(mul_rn(In::load(x[n - 1]), s.inv)) & 0xf);
      return;
    }
    for (int j = 0; j < n; j += 2) {
      const float v0 = value(j);
      const uint32_t r0 = SR ? rng.at(static_cast<uint64_t>(base + j)) : 0u;
      const int32_t q0 = quantize_int(v0, s.inv, 7.0f, SR, r0);
      int32_t q1 = 0;
      if (j + 1 < n) {
        const float v1 = value(j + 1);
        const uint32_t r1 = SR ? rng.at(static_cast<uint64_t>(base + j + 1)) : 0u;
        q1 = quantize_int(v1, s.inv, 7.0f, SR, r1);
        if (EF) res[j + 1] = sub_rn(v1, dequantize_int(q1, s.scale));
      }
      if (EF) res[j] = sub_rn(v0, dequantize_int(q0, s.scale));
      q[j / 2] = static_cast<uint8_t>((q0 & 0xf) | ((q1 & 0xf) << 4));
    }
  } else {  // fp8
    uint8_t* q = w.payload + base;
    if (!SR && !EF) {
      for (int j = 0; j < n; ++j) {
        const float y = mul_rn(In::load(x[j]), s.inv);
        q[j] = C == Codec::kFp8E4M3Block ? f32_to_e4m3(y) : f32_to_e5m2(y);
      }
      return;
    }
    for (int j = 0; j < n; ++j) {
      const float v = value(j);
      const uint32_t rnd = SR ? rng.at(static_cast<uint64_t>(base + j)) : 0u;
      const float y = mul_rn(v, s.inv);
      const uint8_t c = C == Codec::kFp8E4M3Block ? f32_to_e4m3(y, SR, rnd) : f32_to_e5m2(y, SR, rnd);
      q[j] = c;
      if (EF) {
        const float d = C == Codec::kFp8E4M3Block ? e4m3_to_f32(c) : e5m2_to_f32(c);
        res[j] = sub_rn(v, mul_rn(d, s.scale));
      }
    }
  }
}

template <class In, Codec C, bool SR, bool EF>
GEOPIPE_CPU_INLINE void encode_all(Work& w, const void* src) {
  const auto* x = static_cast<const typename In::T*>(src);
  const int64_t B = w.L.block_size;
  const int64_t full = w.L.row_len / B * B;  // columns covered by full blocks
  int64_t b = 0;
  for (int64_t row = 0; row < w.L.rows; ++row) {
    int64_t c0 = 0;
    if (!SR && !EF && w.avx2 && full > 0) {
      const int64_t base = row * w.L.row_len;
      uint8_t* q = w.payload + (C == Codec::kInt4Block ? row * ((w.L.row_len + 1) / 2) : base);
      const bool stream = w.L.payload_bytes >= simd::kStreamBytes;
      if (simd::encode_blocks_avx2(C, In::kDType, x + base, full / B, static_cast<int>(B), w.qmax, w.scales + b, q, stream))
        w.nonfinite = true;
      b += full / B;
      c0 = full;
    }
    if (B == 128) {
      for (; c0 < full; c0 += B, ++b) encode_block<In, C, SR, EF, 128>(w, x, row, c0, b);
    } else if (B == 32) {
      for (; c0 < full; c0 += B, ++b) encode_block<In, C, SR, EF, 32>(w, x, row, c0, b);
    }
    for (; c0 < w.L.row_len; c0 += B, ++b) encode_block<In, C, SR, EF, 0>(w, x, row, c0, b);
  }
}

template <class In, Codec C>
GEOPIPE_CPU_INLINE void encode_rounding(Work& w, const void* src, bool sr) {
  if (sr) {
    if (w.residual) encode_all<In, C, true, true>(w, src); else encode_all<In, C, true, false>(w, src);
  } else {
    if (w.residual) encode_all<In, C, false, true>(w, src); else encode_all<In, C, false, false>(w, src);
  }
}

template <class In>
GEOPIPE_CPU_INLINE void encode_codec(Work& w, Codec c, const void* src, bool sr) {
  switch (c) {
    case Codec::kInt8Block: encode_rounding<In, Codec::kInt8Block>(w, src, sr); break;
    case Codec::kFp8E4M3Block: encode_rounding<In, Codec::kFp8E4M3Block>(w, src, sr); break;
    case Codec::kFp8E5M2Block: encode_rounding<In, Codec::kFp8E5M2Block>(w, src, sr); break;
    case Codec::kInt4Block: encode_rounding<In, Codec::kInt4Block>(w, src, sr); break;
    case Codec::kNone: break;
  }
}

template <class In>
bool all_finite(const void* src, int64_t n) {
  const auto* x = static_cast<const typename In::T*>(src);
  uint32_t amax = 0;
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t a = f32_bits(In::load(x[i])) & 0x7fffffffu;
    amax = a > amax ? a : amax;
  }
  return amax < 0x7f800000u;
}

// ---- decoding ------------------------------------------------------------------------------
struct Fp8Tables {
  std::array<float, 256> e4m3, e5m2;
  Fp8Tables() {
    for (int c = 0; c < 256; ++c) {
      e4m3[c] = e4m3_to_f32(static_cast<uint8_t>(c));
      e5m2[c] = e5m2_to_f32(static_cast<uint8_t>(c));
    }
  }
};
const Fp8Tables& fp8_tables() {
  static const Fp8Tables t;
  return t;
}

template <class Out, Codec C, int kN>
GEOPIPE_CPU_INLINE void decode_block(const Layout& L, const float* lut, const float* scales, const uint8_t* payload,
                                     typename Out::T* out, int64_t row, int64_t c0, int64_t b) {
  const int n = kN ? kN : static_cast<int>(std::min<int64_t>(L.block_size, L.row_len - c0));
  const int64_t base = row * L.row_len + c0;
  const float scale = scales[b];
  typename Out::T* y = out + base;
  if (C == Codec::kInt8Block) {
    const int8_t* q = reinterpret_cast<const int8_t*>(payload) + base;
    for (int j = 0; j < n; ++j) y[j] = Out::store(dequantize_int(q[j], scale));
  } else if (C == Codec::kInt4Block) {
    const uint8_t* q = payload + row * ((L.row_len + 1) / 2) + c0 / 2;
    const int pairs = n / 2;
    for (int p = 0; p < pairs; ++p) {  // sign-extend each nibble
      const int32_t lo = static_cast<int32_t>(static_cast<uint32_t>(q[p]) << 28) >> 28;
      const int32_t hi = static_cast<int32_t>(static_cast<uint32_t>(q[p]) << 24) >> 28;
      y[2 * p] = Out::store(dequantize_int(lo, scale));
      y[2 * p + 1] = Out::store(dequantize_int(hi, scale));
    }
    if (n & 1) y[n - 1] = Out::store(dequantize_int(static_cast<int32_t>(static_cast<uint32_t>(q[pairs]) << 28) >> 28, scale));
  } else {
    const uint8_t* q = payload + base;
    for (int j = 0; j < n; ++j) y[j] = Out::store(mul_rn(lut[q[j]], scale));
  }
}

template <class Out, Codec C>
GEOPIPE_CPU_INLINE void decode_all(const Layout& L, const float* scales, const uint8_t* payload, void* dst, bool avx2) {
  auto* out = static_cast<typename Out::T*>(dst);
  const float* lut = C == Codec::kFp8E4M3Block ? fp8_tables().e4m3.data() : fp8_tables().e5m2.data();
  const int64_t B = L.block_size;
  const int64_t full = L.row_len / B * B;
  int64_t b = 0;
  for (int64_t row = 0; row < L.rows; ++row) {
    int64_t c0 = 0;
    if (avx2 && full > 0) {
      const int64_t base = row * L.row_len;
      const uint8_t* q = payload + (C == Codec::kInt4Block ? row * ((L.row_len + 1) / 2) : base);
      const bool stream = static_cast<size_t>(L.numel) * sizeof(typename Out::T) >= simd::kStreamBytes;
      simd::decode_blocks_avx2(C, Out::kDType, scales + b, q, out + base, full / B, static_cast<int>(B), stream);
      b += full / B;
      c0 = full;
    }
    if (B == 128) {
      for (; c0 < full; c0 += B, ++b) decode_block<Out, C, 128>(L, lut, scales, payload, out, row, c0, b);
    } else if (B == 32) {
      for (; c0 < full; c0 += B, ++b) decode_block<Out, C, 32>(L, lut, scales, payload, out, row, c0, b);
    }
    for (; c0 < L.row_len; c0 += B, ++b) decode_block<Out, C, 0>(L, lut, scales, payload, out, row, c0, b);
  }
}

template <class Out>
GEOPIPE_CPU_INLINE void decode_codec(Codec c, const Layout& L, const float* scales, const uint8_t* payload, void* dst,
                                     bool avx2) {
  switch (c) {
    case Codec::kInt8Block: decode_all<Out, Codec::kInt8Block>(L, scales, payload, dst, avx2); break;
    case Codec::kFp8E4M3Block: decode_all<Out, Codec::kFp8E4M3Block>(L, scales, payload, dst, avx2); break;
    case Codec::kFp8E5M2Block: decode_all<Out, Codec::kFp8E5M2Block>(L, scales, payload, dst, avx2); break;
    case Codec::kInt4Block: decode_all<Out, Codec::kInt4Block>(L, scales, payload, dst, avx2); break;
    case Codec::kNone: break;
  }
}

// One entry point per dtype, compiled twice on x86-64 (AVX2 and baseline SSE2) and picked at
// load time. Everything above is inlined into them, so the loops vectorize for the ISA at hand.
// Vector float ops are the same IEEE operations as scalar ones, and contraction stays off, so
// both clones (and the GPU) give identical bits.
GEOPIPE_CPU_CLONES void encode_f32(Work& w, Codec c, const void* src, bool sr) { encode_codec<F32>(w, c, src, sr); }
GEOPIPE_CPU_CLONES void encode_f16(Work& w, Codec c, const void* src, bool sr) { encode_codec<F16>(w, c, src, sr); }
GEOPIPE_CPU_CLONES void encode_bf16(Work& w, Codec c, const void* src, bool sr) { encode_codec<BF16>(w, c, src, sr); }
GEOPIPE_CPU_CLONES void decode_f32(Codec c, const Layout& L, const float* s, const uint8_t* p, void* d, bool avx2) { decode_codec<F32>(c, L, s, p, d, avx2); }
GEOPIPE_CPU_CLONES void decode_f16(Codec c, const Layout& L, const float* s, const uint8_t* p, void* d, bool avx2) { decode_codec<F16>(c, L, s, p, d, avx2); }
GEOPIPE_CPU_CLONES void decode_bf16(Codec c, const Layout& L, const float* s, const uint8_t* p, void* d, bool avx2) { decode_codec<BF16>(c, L, s, p, d, avx2); }

std::atomic<CpuPath> g_cpu_path{CpuPath::kAuto};

bool use_avx2() {
  const CpuPath p = g_cpu_path.load(std::memory_order_relaxed);
  return p == CpuPath::kAvx2 || (p == CpuPath::kAuto && simd::avx2_available());
}

}  // namespace

bool cpu_avx2_available() { return simd::avx2_available(); }

bool set_cpu_path(CpuPath path) {
  if (path == CpuPath::kAvx2 && !simd::avx2_available()) return false;
  if (path != CpuPath::kAuto && path != CpuPath::kPortable && path != CpuPath::kAvx2) return false;
  g_cpu_path.store(path, std::memory_order_relaxed);
  return true;
}

CpuPath cpu_path() { return use_avx2() ? CpuPath::kAvx2 : CpuPath::kPortable; }

const char* cpu_path_name(CpuPath path) {
  switch (path) {
    case CpuPath::kAuto: return "auto";
    case CpuPath::kPortable: return "portable";
    case CpuPath::kAvx2: return "avx2";
  }
  return "?";
}

Status encode_cpu(const CodecSpec& spec, DType dtype, const int64_t* shape, int ndim, const void* src,
                  float* residual, void* dst, size_t dst_bytes) {
  WireHeader h;
  Status st = make_header(spec, dtype, shape, ndim, &h);
  if (st != Status::kOk) return st;
  if (spec.rounding != Rounding::kNearest && spec.rounding != Rounding::kStochastic) return Status::kBadArgument;
  const Layout L = layout_of(h);
  if (dst == nullptr || (L.numel > 0 && src == nullptr)) return Status::kBadArgument;
  if (residual != nullptr && spec.codec == Codec::kNone) return Status::kBadArgument;  // nothing is lost to feed back
  if (dst_bytes < L.total_bytes) return Status::kBufferTooSmall;

  auto* out = static_cast<uint8_t*>(dst);
  // zero the padding after the scales and after the payload, so equal tensors give equal bytes
  std::memset(out + L.scales_offset + L.scales_bytes, 0, L.payload_offset - L.scales_offset - L.scales_bytes);
  std::memset(out + L.payload_offset + L.payload_bytes, 0, L.total_bytes - L.payload_offset - L.payload_bytes);

  bool nonfinite = false;
  if (spec.codec == Codec::kNone) {
    switch (dtype) {
      case DType::kFloat32: nonfinite = !all_finite<F32>(src, L.numel); break;
      case DType::kFloat16: nonfinite = !all_finite<F16>(src, L.numel); break;
      case DType::kBFloat16: nonfinite = !all_finite<BF16>(src, L.numel); break;
    }
    if (!nonfinite && L.payload_bytes > 0) std::memcpy(out + L.payload_offset, src, L.payload_bytes);
  } else {
    Work w;
    w.L = L;
    w.qmax = codec_qmax(spec.codec);
    w.seed = spec.seed;
    w.offset = spec.offset;
    w.scales = reinterpret_cast<float*>(out + L.scales_offset);
    w.payload = out + L.payload_offset;
    w.residual = residual;
    w.avx2 = use_avx2();
    const bool sr = spec.rounding == Rounding::kStochastic;
    switch (dtype) {
      case DType::kFloat32: encode_f32(w, spec.codec, src, sr); break;
      case DType::kFloat16: encode_f16(w, spec.codec, src, sr); break;
      case DType::kBFloat16: encode_bf16(w, spec.codec, src, sr); break;
    }
    nonfinite = w.nonfinite;
  }
  h.status = nonfinite ? 1u : 0u;
  std::memcpy(out, &h, sizeof h);
  return nonfinite ? Status::kNonFinite : Status::kOk;
}

Status decode_cpu(const void* buf, size_t bytes, void* dst, size_t dst_bytes, std::string* why) {
  WireHeader h;
  const Status st = read_header(buf, bytes, &h, why);
  if (st != Status::kOk) return st;
  const Layout L = layout_of(h);
  const auto dtype = static_cast<DType>(h.dtype);
  if (dst_bytes != static_cast<size_t>(L.numel) * dtype_size(dtype)) {
    if (why) *why = "destination holds " + std::to_string(dst_bytes) + " bytes, the tensor needs " +
                    std::to_string(static_cast<size_t>(L.numel) * dtype_size(dtype));
    return Status::kBadArgument;
  }
  if (L.numel > 0 && dst == nullptr) return Status::kBadArgument;
  const auto* in = static_cast<const uint8_t*>(buf);
  const auto codec = static_cast<Codec>(h.codec);
  if (codec == Codec::kNone) {
    if (L.payload_bytes > 0) std::memcpy(dst, in + L.payload_offset, L.payload_bytes);
    return Status::kOk;
  }
  // copied out so a buffer at any alignment decodes
  std::vector<float> scales(static_cast<size_t>(L.num_blocks));
  if (L.scales_bytes > 0) std::memcpy(scales.data(), in + L.scales_offset, L.scales_bytes);
  for (int64_t b = 0; b < L.num_blocks; ++b) {
    const uint32_t u = f32_bits(scales[b]);
    if (u >= 0x7f800000u) {  // negative, Inf or NaN: no encoder writes that
      if (why) *why = "scale of block " + std::to_string(b) + " is negative or not finite";
      return Status::kCorrupt;
    }
  }
  const uint8_t* payload = in + L.payload_offset;
  const bool avx2 = use_avx2();
  switch (dtype) {
    case DType::kFloat32: decode_f32(codec, L, scales.data(), payload, dst, avx2); break;
    case DType::kFloat16: decode_f16(codec, L, scales.data(), payload, dst, avx2); break;
    case DType::kBFloat16: decode_bf16(codec, L, scales.data(), payload, dst, avx2); break;
  }
  return Status::kOk;
}

}  // namespace geopipe::kernels
