// Bit-exact number formats and arithmetic shared by the CUDA kernels and the CPU twins.
//
// Every function here is compiled once for the host and once for the device from this same text,
// and only uses operations whose IEEE-754 result is fully specified: integer ops on bit patterns,
// and single float multiply/add/subtract/divide rounded to nearest even. Two things could still
// make host and device differ, and both are ruled out:
//   * contraction of a*b+c into one FMA (one rounding instead of two): on the device every float
//     op goes through the __fmul_rn/__fadd_rn/__fsub_rn/__fdiv_rn intrinsics, which the compiler
//     never contracts (and the .cu files are compiled with -fmad=false as a second guard); the CPU
//     side is compiled with -ffp-contract=off;
//   * fast-math (approximate division, flush-to-zero): never enabled for these files; the device
//     division is __fdiv_rn (IEEE), the host one is the plain IEEE division.
// Conversions (bf16, fp16, fp8) are done on bit patterns by the functions below on both sides,
// not by compiler intrinsics, so they are identical by construction.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define GEOPIPE_HD __host__ __device__ __forceinline__
#elif defined(__GNUC__)
#define GEOPIPE_HD inline __attribute__((always_inline))  // inlined into the vectorized CPU loops
#else
#define GEOPIPE_HD inline
#endif

namespace geopipe::kernels::num {

GEOPIPE_HD uint32_t f32_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
#endif
}

GEOPIPE_HD float bits_f32(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, 4);
  return f;
#endif
}

// ---- single IEEE operations, round to nearest even, never contracted -------------------------
GEOPIPE_HD float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
GEOPIPE_HD float add_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
GEOPIPE_HD float sub_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}
GEOPIPE_HD float div_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}

// Round to nearest even integer for |y| < 2^22 (all our quantized values): adding and removing
// 1.5 * 2^23 leaves no fraction bits, and both adds are exact IEEE operations on either side.
GEOPIPE_HD float round_half_even_small(float y) {
  const float magic = 12582912.0f;  // 1.5 * 2^23
  return sub_rn(add_rn(y, magic), magic);
}

// floor for |y| < 2^31, exact: truncate toward zero, step down when that went up.
GEOPIPE_HD float floor_small(float y) {
  const float t = static_cast<float>(static_cast<int32_t>(y));
  return t > y ? t - 1.0f : t;  // t - 1 is exact for these magnitudes
}

// Shift right by s (1..31) rounding to nearest, ties to even.
GEOPIPE_HD uint32_t shift_rne(uint32_t m, uint32_t s) {
  return (m + ((1u << (s - 1)) - 1u) + ((m >> s) & 1u)) >> s;
}

// ---- bfloat16 / float16 <-> float32 ----------------------------------------------------------
GEOPIPE_HD float bf16_to_f32(uint16_t h) { return bits_f32(static_cast<uint32_t>(h) << 16); }

GEOPIPE_HD uint16_t f32_to_bf16(float f) {
  uint32_t u = f32_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

GEOPIPE_HD float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t e = (h >> 10) & 0x1fu;
  const uint32_t m = h & 0x3ffu;
  if (e == 0x1f) return bits_f32(sign | 0x7f800000u | (m << 13));
  if (e == 0) {  // subnormal (or zero): m * 2^-24, exact in float32
    const float v = mul_rn(static_cast<float>(m), 5.9604644775390625e-08f);
    return bits_f32(sign | f32_bits(v));
  }
  return bits_f32(sign | ((e + 112u) << 23) | (m << 13));
}

GEOPIPE_HD uint16_t f32_to_f16(float f) {
  const uint32_t u = f32_bits(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);  // NaN
  if (a >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // >= 65520 rounds to Inf
  if (a >= 0x38800000u) {                                               // normal: >= 2^-14
    const uint32_t r = a - (112u << 23);
    return static_cast<uint16_t>(sign | shift_rne(r, 13));
  }
  // subnormal in fp16: value / 2^-24, rounded
  const uint32_t e = a >> 23;
  const uint32_t m = e ? ((a & 0x7fffffu) | 0x800000u) : (a & 0x7fffffu);
  const uint32_t s = 126u - (e ? e : 1u);
  if (s >= 25u) return sign;
  return static_cast<uint16_t>(sign | shift_rne(m, s));
}

// ---- OCP FP8 (E4M3: bias 7, max 448, no Inf; E5M2: bias 15, max 57344, IEEE-like) --------------
// Encoding of a finite float, round to nearest even (or stochastic with `rnd`), saturating at the
// largest finite value. Non-finite inputs never reach here (they are rejected before encoding).
template <int kMant, int kBias, uint32_t kMaxCode>
GEOPIPE_HD uint8_t f32_to_fp8(float f, bool stochastic, uint32_t rnd) {
  // Both paths are computed and one is selected (no branches, so CPU loops vectorize); every
  // shift amount is kept in [1, 31] so that the unused path is well defined too.
  const uint32_t u = f32_bits(f);
  const uint32_t sign = (u >> 24) & 0x80u;
  const uint32_t a = u & 0x7fffffffu;
  const uint32_t min_normal = static_cast<uint32_t>(127 - kBias + 1) << 23;

  // normal in fp8: re-bias the exponent, drop 23 - kMant mantissa bits (a carry moves the exponent)
  constexpr uint32_t sn = 23 - kMant;
  const uint32_t r = a - (static_cast<uint32_t>(127 - kBias) << 23);
  uint32_t qn = stochastic ? (r + (rnd & ((1u << sn) - 1u))) >> sn : shift_rne(r, sn);
  qn = qn > kMaxCode ? kMaxCode : qn;

  // below the smallest normal: code = value / 2^(1 - bias - mant), an fp8 subnormal (or the
  // smallest normal when it rounds up, which has exactly that code)
  const uint32_t e = a >> 23;
  const uint32_t m = e ? ((a & 0x7fffffu) | 0x800000u) : (a & 0x7fffffu);
  const int32_t ss = (151 - kBias - kMant) - static_cast<int32_t>(e ? e : 1u);
  const uint32_t sc = static_cast<uint32_t>(ss < 1 ? 1 : (ss > 31 ? 31 : ss));
  const uint32_t qs = stochastic ? (ss >= 32 ? 0u : (m + (rnd & ((1u << sc) - 1u))) >> sc)
                                 : (ss >= 25 ? 0u : shift_rne(m, sc));

  return static_cast<uint8_t>(sign | (a >= min_normal ? qn : qs));
}

template <int kMant, int kBias, bool kIeeeSpecials>
GEOPIPE_HD float fp8_to_f32(uint8_t c) {
  const uint32_t sign = static_cast<uint32_t>(c & 0x80u) << 24;
  const uint32_t e = (c & 0x7fu) >> kMant;
  const uint32_t m = c & ((1u << kMant) - 1u);
  if (e == 0) {
    const float v = mul_rn(static_cast<float>(m), bits_f32(static_cast<uint32_t>(127 + 1 - kBias - kMant) << 23));
    return bits_f32(sign | f32_bits(v));
  }
  if (kIeeeSpecials) {
    if (e == (1u << (7 - kMant)) - 1u) return bits_f32(sign | 0x7f800000u | (m << (23 - kMant)));  // Inf/NaN
  } else if ((c & 0x7fu) == 0x7fu) {
    return bits_f32(sign | 0x7fc00000u);  // E4M3 NaN
  }
  return bits_f32(sign | ((e + static_cast<uint32_t>(127 - kBias)) << 23) | (m << (23 - kMant)));
}

GEOPIPE_HD uint8_t f32_to_e4m3(float f, bool sr = false, uint32_t rnd = 0) { return f32_to_fp8<3, 7, 0x7eu>(f, sr, rnd); }
GEOPIPE_HD uint8_t f32_to_e5m2(float f, bool sr = false, uint32_t rnd = 0) { return f32_to_fp8<2, 15, 0x7bu>(f, sr, rnd); }
GEOPIPE_HD float e4m3_to_f32(uint8_t c) { return fp8_to_f32<3, 7, false>(c); }
GEOPIPE_HD float e5m2_to_f32(uint8_t c) { return fp8_to_f32<2, 15, true>(c); }

// ---- Philox4x32-10 (Salmon et al., SC'11; the Random123 / cuRAND generator) --------------------
struct Philox4 {
  uint32_t v[4];
};

GEOPIPE_HD void mulhilo32(uint32_t a, uint32_t b, uint32_t* hi, uint32_t* lo) {
  const uint64_t p = static_cast<uint64_t>(a) * static_cast<uint64_t>(b);
  *hi = static_cast<uint32_t>(p >> 32);
  *lo = static_cast<uint32_t>(p);
}

GEOPIPE_HD Philox4 philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1) {
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {
      k0 += 0x9E3779B9u;
      k1 += 0xBB67AE85u;
    }
    uint32_t hi0, lo0, hi1, lo1;
    mulhilo32(0xD2511F53u, c0, &hi0, &lo0);
    mulhilo32(0xCD9E8D57u, c2, &hi1, &lo1);
    const uint32_t n0 = hi1 ^ c1 ^ k0;
    const uint32_t n2 = hi0 ^ c3 ^ k1;
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
  }
  return Philox4{{c0, c1, c2, c3}};
}

// The 32 random bits of flat element `i` for (seed, offset): counter = (i / 4, offset), key =
// seed, word i % 4. Every element has its own bits, independent of how the work is split.
GEOPIPE_HD Philox4 philox_for_group(uint64_t seed, uint64_t offset, uint64_t group) {
  return philox4x32_10(static_cast<uint32_t>(group), static_cast<uint32_t>(group >> 32),
                       static_cast<uint32_t>(offset), static_cast<uint32_t>(offset >> 32),
                       static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
}

// A uniform float in [0, 1) from 24 random bits (exact).
GEOPIPE_HD float uniform01(uint32_t bits) { return mul_rn(static_cast<float>(bits >> 8), 5.9604644775390625e-08f); }

// ---- block scale and per-element quantization (codec-specific) -------------------------------
struct BlockScale {
  float scale;  // stored on the wire; dequantized = decode(q) * scale
  float inv;    // qmax / absmax, what the input is multiplied by
};

// absmax_bits: bit pattern of the block's largest |x| (finite). Tiny blocks encode as zeros.
GEOPIPE_HD BlockScale block_scale(uint32_t absmax_bits, float qmax) {
  if (absmax_bits < 0x0D800000u) return BlockScale{0.0f, 0.0f};  // < 2^-100 (kTinyAbsmax)
  const float amax = bits_f32(absmax_bits);
  return BlockScale{div_rn(amax, qmax), div_rn(qmax, amax)};
}

// Integer codecs, round to nearest: y = x * inv, q = round(y), read straight from the bits of
// y + 1.5 * 2^23 (the sum's low mantissa bits hold round(y) in two's complement). No clamp is
// needed: |x| <= absmax, so |y| <= qmax * (1 + 2^-23)^2 < qmax + 0.5 and |q| <= qmax.
GEOPIPE_HD int32_t quantize_int_rn(float y) {
  return static_cast<int32_t>(f32_bits(add_rn(y, 12582912.0f)) - 0x4B400000u);
}

// Stochastic: q = floor(y + u), u uniform in [0, 1) from 24 random bits, clamped to [-qmax, qmax]
// (y may exceed qmax by a few ulps, and y + u can then reach qmax + 1).
GEOPIPE_HD int32_t quantize_int_sr(float y, uint32_t rnd, int32_t qmax) {
  const int32_t q = static_cast<int32_t>(floor_small(add_rn(y, uniform01(rnd))));
  return q > qmax ? qmax : (q < -qmax ? -qmax : q);
}

GEOPIPE_HD int32_t quantize_int(float x, float inv, float qmax, bool stochastic, uint32_t rnd) {
  const float y = mul_rn(x, inv);
  return stochastic ? quantize_int_sr(y, rnd, static_cast<int32_t>(qmax)) : quantize_int_rn(y);
}

GEOPIPE_HD float dequantize_int(int32_t q, float scale) { return mul_rn(static_cast<float>(q), scale); }

}  // namespace geopipe::kernels::num
