// AVX2 loops of the CPU twins: the same integer and IEEE float operations as numeric.h, eight
// lanes at a time, so every byte equals the portable loops' (and the GPU's). What each step mirrors:
//   * absmax: a max over the magnitude bits, done on the 16-bit patterns for bf16/fp16 (|x| and its
//     bit pattern sort alike, and bf16 -> fp32 is a 16-bit shift);
//   * q = round(x * inv): one IEEE multiply, then the bits of y + 1.5 * 2^23 (quantize_int_rn);
//   * fp8: f32_to_fp8's integer arithmetic (re-bias, round-to-nearest-even shift, saturate); its
//     subnormal shift as the equal exact scaling and rounding (see fp8_encode8);
//   * decode: q * scale (one IEEE multiply) and f32_to_bf16's integer rounding; fp16 through F16C,
//     whose conversions are exact IEEE round-to-nearest-even (NaN lanes are fixed up to numeric.h's
//     canonical 0x7e00); fp8 codes decoded by numeric.h's formula, not a table.
// Outputs far larger than the caches are written with non-temporal stores (no read for ownership);
// the encoder's input is prefetched 4 KiB ahead.
// Functions carry target("avx2,f16c") attributes instead of the file being compiled with -mavx2,
// so no AVX2 code can leak into inline functions shared with the portable path; they run only
// after avx2_available() said yes. Contraction stays off (-ffp-contract=off, and no FMA target).
#include "codec_cpu_simd.h"

#include <geopipe/kernels/numeric.h>

#include <type_traits>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define GEOPIPE_AVX2_LOOPS 1
#include <immintrin.h>
#endif

namespace geopipe::kernels::simd {

#if GEOPIPE_AVX2_LOOPS

#define GEOPIPE_AVX2 __attribute__((target("avx2,f16c")))
#define GEOPIPE_AVX2_INLINE inline __attribute__((target("avx2,f16c"), always_inline))

bool avx2_available() {
  static const bool ok = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
  }();
  return ok;
}

namespace {

using num::BlockScale;

GEOPIPE_AVX2_INLINE __m256i splat(uint32_t v) { return _mm256_set1_epi32(static_cast<int>(v)); }

// Stores; kStream: non-temporal (the destination is aligned: 16 B for 128-bit, 32 B for 256-bit)
template <bool kStream>
GEOPIPE_AVX2_INLINE void store128(void* p, __m128i v) {
  if (kStream) _mm_stream_si128(static_cast<__m128i*>(p), v);
  else _mm_storeu_si128(static_cast<__m128i*>(p), v);
}
template <bool kStream>
GEOPIPE_AVX2_INLINE void store256(void* p, __m256i v) {
  if (kStream) _mm256_stream_si256(static_cast<__m256i*>(p), v);
  else _mm256_storeu_si256(static_cast<__m256i*>(p), v);
}

// ---- the three input dtypes: 8 elements <-> 8 floats in natural order -----------------------
struct F32 {
  using T = float;
  static GEOPIPE_AVX2_INLINE __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
  // 16 values; kNaN: some may be NaN (fp8 codes); float32 stores them as they are
  template <bool kStream, bool kNaN>
  static GEOPIPE_AVX2_INLINE void store16(float* p, __m256 v0, __m256 v1) {
    store256<kStream>(p, _mm256_castps_si256(v0));
    store256<kStream>(p + 8, _mm256_castps_si256(v1));
  }
  // bit pattern (as fp32) of the largest |x| of n elements (n a multiple of 16); >= 0x7f800000
  // when one is NaN or Inf
  static GEOPIPE_AVX2_INLINE uint32_t absmax_bits(const float* p, int n) {
    const __m256i mag = splat(0x7fffffffu);
    __m256i m0 = _mm256_setzero_si256(), m1 = _mm256_setzero_si256();
    for (int j = 0; j < n; j += 16) {
      m0 = _mm256_max_epi32(m0, _mm256_and_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + j)), mag));
      m1 = _mm256_max_epi32(m1, _mm256_and_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + j + 8)), mag));
    }
    m0 = _mm256_max_epi32(m0, m1);
    __m128i r = _mm_max_epi32(_mm256_castsi256_si128(m0), _mm256_extracti128_si256(m0, 1));
    r = _mm_max_epi32(r, _mm_srli_si128(r, 8));
    r = _mm_max_epi32(r, _mm_srli_si128(r, 4));
    return static_cast<uint32_t>(_mm_cvtsi128_si32(r));
  }
};

// Largest 15-bit magnitude of n 16-bit patterns (bf16 and fp16 both sort by these bits).
GEOPIPE_AVX2_INLINE uint32_t absmax16(const uint16_t* p, int n) {
  const __m256i mag = _mm256_set1_epi16(0x7fff);
  __m256i m = _mm256_setzero_si256();
  for (int j = 0; j < n; j += 16)
    m = _mm256_max_epi16(m, _mm256_and_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + j)), mag));
  __m128i r = _mm_max_epi16(_mm256_castsi256_si128(m), _mm256_extracti128_si256(m, 1));
  r = _mm_max_epi16(r, _mm_srli_si128(r, 8));
  r = _mm_max_epi16(r, _mm_srli_si128(r, 4));
  r = _mm_max_epi16(r, _mm_srli_si128(r, 2));
  return static_cast<uint32_t>(_mm_cvtsi128_si32(r)) & 0xffffu;
}

struct BF16 {
  using T = uint16_t;
  static GEOPIPE_AVX2_INLINE __m256 load8(const uint16_t* p) {
    const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
  }
  // num::f32_to_bf16: NaN -> (u >> 16) | 0x40, else u + 0x7fff + ((u >> 16) & 1), top half
  template <bool kNaN>
  static GEOPIPE_AVX2_INLINE __m256i round8(__m256 v) {
    const __m256i u = _mm256_castps_si256(v);
    const __m256i hi = _mm256_srli_epi32(u, 16);
    __m256i r = _mm256_add_epi32(_mm256_add_epi32(u, splat(0x7fffu)), _mm256_and_si256(hi, splat(1u)));
    r = _mm256_srli_epi32(r, 16);
    if (kNaN) {
      const __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, splat(0x7fffffffu)), splat(0x7f800000u));
      r = _mm256_blendv_epi8(r, _mm256_or_si256(hi, splat(0x40u)), nan);
    }
    return r;
  }
  template <bool kStream, bool kNaN>
  static GEOPIPE_AVX2_INLINE void store16(uint16_t* p, __m256 v0, __m256 v1) {
    // packus interleaves the 128-bit halves: 0-3 8-11 4-7 12-15, put back in order
    const __m256i w = _mm256_packus_epi32(round8<kNaN>(v0), round8<kNaN>(v1));
    store256<kStream>(p, _mm256_permute4x64_epi64(w, 0xD8));
  }
  static GEOPIPE_AVX2_INLINE uint32_t absmax_bits(const uint16_t* p, int n) { return absmax16(p, n) << 16; }
};

struct F16 {
  using T = uint16_t;
  static GEOPIPE_AVX2_INLINE __m256 load8(const uint16_t* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  template <bool kStream, bool kNaN>
  static GEOPIPE_AVX2_INLINE void store16(uint16_t* p, __m256 v0, __m256 v1) {
    const __m128i h0 = _mm256_cvtps_ph(v0, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m128i h1 = _mm256_cvtps_ph(v1, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const int nan = kNaN ? _mm256_movemask_ps(_mm256_cmp_ps(v0, v0, _CMP_UNORD_Q)) |
                               (_mm256_movemask_ps(_mm256_cmp_ps(v1, v1, _CMP_UNORD_Q)) << 8)
                         : 0;
    if (nan == 0) {
      store128<kStream>(p, h0);
      store128<kStream>(p + 8, h1);
      return;
    }
    // only a corrupt buffer decodes to NaN: numeric.h writes sign | 0x7e00
    alignas(16) uint16_t t[16];
    _mm_store_si128(reinterpret_cast<__m128i*>(t), h0);
    _mm_store_si128(reinterpret_cast<__m128i*>(t + 8), h1);
    for (int k = 0; k < 16; ++k)
      if (nan & (1 << k)) t[k] = static_cast<uint16_t>((t[k] & 0x8000u) | 0x7e00u);
    for (int k = 0; k < 16; ++k) p[k] = t[k];
  }
  static GEOPIPE_AVX2_INLINE uint32_t absmax_bits(const uint16_t* p, int n) {
    const uint32_t a = absmax16(p, n);
    return a >= 0x7c00u ? 0x7f800000u : num::f32_bits(num::f16_to_f32(static_cast<uint16_t>(a)));
  }
};

// ---- encoding -------------------------------------------------------------------------------
// num::quantize_int_rn of x * inv for 8 lanes: the int32 in the low bits of y + 1.5 * 2^23
template <class In>
GEOPIPE_AVX2_INLINE __m256i quant8(const typename In::T* x, __m256 inv) {
  const __m256 y = _mm256_add_ps(_mm256_mul_ps(In::load8(x), inv), _mm256_set1_ps(12582912.0f));
  return _mm256_sub_epi32(_mm256_castps_si256(y), splat(0x4B400000u));
}

// 16 quantized values (|q| <= 127) as 16 int8 in order
template <class In>
GEOPIPE_AVX2_INLINE __m128i quant16(const typename In::T* x, __m256 inv) {
  const __m256i a = quant8<In>(x, inv), b = quant8<In>(x + 8, inv);
  const __m128i lo = _mm_packs_epi32(_mm256_castsi256_si128(a), _mm256_extracti128_si256(a, 1));
  const __m128i hi = _mm_packs_epi32(_mm256_castsi256_si128(b), _mm256_extracti128_si256(b, 1));
  return _mm_packs_epi16(lo, hi);
}

// Two int4 values per byte, even element in the low nibble: 16 int8 -> 8 16-bit lanes holding a byte
GEOPIPE_AVX2_INLINE __m128i nibbles(__m128i q) {
  return _mm_or_si128(_mm_and_si128(q, _mm_set1_epi16(0x000f)), _mm_and_si128(_mm_srli_epi16(q, 4), _mm_set1_epi16(0x00f0)));
}

// num::f32_to_fp8 (round to nearest) for 8 lanes: codes 0..255 in 32-bit lanes.
// Normal codes: the same integer re-bias, round-to-nearest-even shift and saturation. Below the
// smallest normal, f32_to_fp8 computes shift_rne(m, sc) with m the 24-bit significand and
// sc = 151 - bias - mant - max(e, 1) (>= 21 there): that is round-to-nearest-even of the exact
// m * 2^-sc = |y| * 2^(bias + mant - 1) < 2^mant, so it is computed as one exact multiply by a
// power of two and the rounding of quantize_int_rn (0 when sc >= 25, as there |y| * 2^... < 0.5).
// Flush-to-zero/denormals-are-zero modes cannot change it: those products are below 0.5 anyway.
template <int kMant, int kBias, uint32_t kMaxCode>
GEOPIPE_AVX2_INLINE __m256i fp8_encode8(__m256 y) {
  constexpr uint32_t sn = 23 - kMant;
  constexpr uint32_t min_normal = static_cast<uint32_t>(127 - kBias + 1) << 23;
  const __m256i one = splat(1u);
  const __m256i u = _mm256_castps_si256(y);
  const __m256i sign = _mm256_and_si256(_mm256_srli_epi32(u, 24), splat(0x80u));
  const __m256i a = _mm256_and_si256(u, splat(0x7fffffffu));
  // normal in fp8
  const __m256i r = _mm256_sub_epi32(a, splat(static_cast<uint32_t>(127 - kBias) << 23));
  __m256i qn = _mm256_add_epi32(_mm256_add_epi32(r, splat((1u << (sn - 1)) - 1u)), _mm256_and_si256(_mm256_srli_epi32(r, sn), one));
  qn = _mm256_min_epu32(_mm256_srli_epi32(qn, sn), splat(kMaxCode));
  // below the smallest normal
  const __m256 t = _mm256_mul_ps(_mm256_castsi256_ps(a), _mm256_castsi256_ps(splat(static_cast<uint32_t>(127 + kBias + kMant - 1) << 23)));
  const __m256i qs = _mm256_sub_epi32(_mm256_castps_si256(_mm256_add_ps(t, _mm256_set1_ps(12582912.0f))), splat(0x4B400000u));
  const __m256i normal = _mm256_cmpgt_epi32(a, splat(min_normal - 1u));
  return _mm256_or_si256(sign, _mm256_blendv_epi8(qs, qn, normal));
}

// bfloat16 input without shuffles: 16 loaded values give the even elements (x << 16) and the odd
// ones (the top halves) as two float vectors; results are re-interleaved as 16-bit lanes.
struct EvenOdd {
  __m256 even, odd;  // x * inv of elements 0, 2, .., 14 and 1, 3, .., 15
};
GEOPIPE_AVX2_INLINE EvenOdd bf16_scaled(const uint16_t* x, __m256 inv) {
  const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x));
  return {_mm256_mul_ps(_mm256_castsi256_ps(_mm256_slli_epi32(w, 16)), inv),
          _mm256_mul_ps(_mm256_castsi256_ps(_mm256_and_si256(w, splat(0xffff0000u))), inv)};
}
// round(y) in the low bits of y + 1.5 * 2^23, whose low 16 bits are q's as int16 (the magic's are 0)
GEOPIPE_AVX2_INLINE __m256i round_bits(__m256 y) { return _mm256_castps_si256(_mm256_add_ps(y, _mm256_set1_ps(12582912.0f))); }
// 16 int16 in order from the even and odd lanes' low 16 bits
GEOPIPE_AVX2_INLINE __m256i interleave16(__m256i even, __m256i odd) {
  return _mm256_or_si256(_mm256_and_si256(even, splat(0xffffu)), _mm256_slli_epi32(odd, 16));
}
GEOPIPE_AVX2_INLINE __m256i bf16_int8_16(const uint16_t* x, __m256 inv) {
  const EvenOdd y = bf16_scaled(x, inv);
  return interleave16(round_bits(y.even), round_bits(y.odd));
}
// int4 of 32 bfloat16: 16 bytes, (q0 & 0xf) | (q1 & 0xf) << 4 per pair
GEOPIPE_AVX2_INLINE __m128i bf16_int4_32(const uint16_t* x, __m256 inv) {
  const __m256i low4 = splat(0xfu);
  const EvenOdd a = bf16_scaled(x, inv), b = bf16_scaled(x + 16, inv);
  const __m256i na = _mm256_or_si256(_mm256_and_si256(round_bits(a.even), low4), _mm256_slli_epi32(_mm256_and_si256(round_bits(a.odd), low4), 4));
  const __m256i nb = _mm256_or_si256(_mm256_and_si256(round_bits(b.even), low4), _mm256_slli_epi32(_mm256_and_si256(round_bits(b.odd), low4), 4));
  const __m256i w = _mm256_permute4x64_epi64(_mm256_packs_epi32(na, nb), 0xD8);  // pair bytes 0..15 as int16
  return _mm_packus_epi16(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1));
}

template <class In, Codec C>
GEOPIPE_AVX2_INLINE __m128i fp8_16(const typename In::T* x, __m256 inv) {
  if constexpr (std::is_same<In, BF16>::value) {
    const EvenOdd y = bf16_scaled(x, inv);
    __m256i w;
    if (C == Codec::kFp8E4M3Block) w = interleave16(fp8_encode8<3, 7, 0x7eu>(y.even), fp8_encode8<3, 7, 0x7eu>(y.odd));
    else w = interleave16(fp8_encode8<2, 15, 0x7bu>(y.even), fp8_encode8<2, 15, 0x7bu>(y.odd));
    return _mm_packus_epi16(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1));
  }
  const __m256 y0 = _mm256_mul_ps(In::load8(x), inv), y1 = _mm256_mul_ps(In::load8(x + 8), inv);
  __m256i c0, c1;
  if (C == Codec::kFp8E4M3Block) {
    c0 = fp8_encode8<3, 7, 0x7eu>(y0);
    c1 = fp8_encode8<3, 7, 0x7eu>(y1);
  } else {
    c0 = fp8_encode8<2, 15, 0x7bu>(y0);
    c1 = fp8_encode8<2, 15, 0x7bu>(y1);
  }
  const __m128i lo = _mm_packs_epi32(_mm256_castsi256_si128(c0), _mm256_extracti128_si256(c0, 1));
  const __m128i hi = _mm_packs_epi32(_mm256_castsi256_si128(c1), _mm256_extracti128_si256(c1, 1));
  return _mm_packus_epi16(lo, hi);
}

// How far ahead of the block being encoded its input is prefetched
constexpr int kPrefetchBytes = 4096;

template <class In, Codec C, bool kStream>
GEOPIPE_AVX2 bool encode_blocks(const typename In::T* x, int64_t nblocks, int B, float qmax, float* scales, uint8_t* payload) {
  bool nonfinite = false;
  for (int64_t k = 0; k < nblocks; ++k) {
    const typename In::T* xb = x + k * B;
    // the hardware prefetcher alone leaves the loop waiting on memory (measured: int8 quantize of a
    // 256 MiB tensor 30-40 % faster with this); a prefetch past the end is harmless
    for (int l = 0; l < B * static_cast<int>(sizeof(typename In::T)); l += 64)
      _mm_prefetch(reinterpret_cast<const char*>(xb) + kPrefetchBytes + l, _MM_HINT_T0);
    const uint32_t amax = In::absmax_bits(xb, B);
    if (amax >= 0x7f800000u) {  // NaN or Inf in the block: never encoded
      nonfinite = true;
      continue;
    }
    const BlockScale s = num::block_scale(amax, qmax);
    scales[k] = s.scale;
    const __m256 inv = _mm256_set1_ps(s.inv);
    if (C == Codec::kInt8Block && std::is_same<In, BF16>::value) {
      uint8_t* q = payload + k * B;
      const auto* xh = reinterpret_cast<const uint16_t*>(xb);
      int j = 0;
      for (; j + 32 <= B; j += 32) {
        const __m256i w = _mm256_packs_epi16(bf16_int8_16(xh + j, inv), bf16_int8_16(xh + j + 16, inv));
        store256<kStream>(q + j, _mm256_permute4x64_epi64(w, 0xD8));
      }
      if (j < B) {  // a block of 16
        const __m256i w = bf16_int8_16(xh + j, inv);
        store128<kStream>(q + j, _mm_packs_epi16(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1)));
      }
    } else if (C == Codec::kInt8Block) {
      uint8_t* q = payload + k * B;
      for (int j = 0; j < B; j += 16) store128<kStream>(q + j, quant16<In>(xb + j, inv));
    } else if (C == Codec::kInt4Block && std::is_same<In, BF16>::value) {
      uint8_t* q = payload + k * (B / 2);
      for (int j = 0; j < B; j += 32) store128<kStream>(q + j / 2, bf16_int4_32(reinterpret_cast<const uint16_t*>(xb) + j, inv));
    } else if (C == Codec::kInt4Block) {
      uint8_t* q = payload + k * (B / 2);
      for (int j = 0; j < B; j += 32) {
        const __m128i t0 = nibbles(quant16<In>(xb + j, inv)), t1 = nibbles(quant16<In>(xb + j + 16, inv));
        store128<kStream>(q + j / 2, _mm_packus_epi16(t0, t1));
      }
    } else {
      uint8_t* q = payload + k * B;
      for (int j = 0; j < B; j += 16) store128<kStream>(q + j, fp8_16<In, C>(xb + j, inv));
    }
  }
  return nonfinite;
}

// ---- decoding -------------------------------------------------------------------------------
// num::fp8_to_f32 for 8 codes in 32-bit lanes
template <int kMant, int kBias, bool kIeeeSpecials>
GEOPIPE_AVX2_INLINE __m256 fp8_decode8(__m256i c, __m256i* special_out) {
  const __m256i sign = _mm256_slli_epi32(_mm256_and_si256(c, splat(0x80u)), 24);
  const __m256i mag = _mm256_and_si256(c, splat(0x7fu));
  // normal: (e + 127 - bias) << 23 | m << (23 - mant) == (mag << (23 - mant)) + ((127 - bias) << 23)
  __m256i v = _mm256_add_epi32(_mm256_slli_epi32(mag, 23 - kMant), splat(static_cast<uint32_t>(127 - kBias) << 23));
  // subnormal (e == 0, mag == m): m * 2^(1 - bias - mant), one exact multiply
  const __m256 sub = _mm256_mul_ps(_mm256_cvtepi32_ps(mag), _mm256_castsi256_ps(splat(static_cast<uint32_t>(127 + 1 - kBias - kMant) << 23)));
  v = _mm256_blendv_epi8(v, _mm256_castps_si256(sub), _mm256_cmpgt_epi32(splat(1u << kMant), mag));
  if (kIeeeSpecials) {  // e all ones: Inf/NaN, sign | 0x7f800000 | m << (23 - mant)
    const __m256i special = _mm256_cmpgt_epi32(mag, splat(((((1u << (7 - kMant)) - 1u)) << kMant) - 1u));
    v = _mm256_blendv_epi8(v, _mm256_or_si256(_mm256_slli_epi32(mag, 23 - kMant), splat(0x7f800000u)), special);
    *special_out = special;
  } else {  // E4M3: 0x7f is NaN
    const __m256i special = _mm256_cmpeq_epi32(mag, splat(0x7fu));
    v = _mm256_blendv_epi8(v, splat(0x7fc00000u), special);
    *special_out = special;
  }
  return _mm256_castsi256_ps(_mm256_or_si256(v, sign));
}

template <class Out, Codec C, bool kStream>
GEOPIPE_AVX2 void decode_blocks(const float* scales, const uint8_t* payload, typename Out::T* out, int64_t nblocks, int B) {
  constexpr bool kNaN = false;  // q * scale is never NaN for the integer codecs (finite scales)
  for (int64_t k = 0; k < nblocks; ++k) {
    const __m256 s = _mm256_set1_ps(scales[k]);
    typename Out::T* y = out + k * B;
    if (C == Codec::kInt8Block) {
      const uint8_t* q = payload + k * B;
      for (int j = 0; j < B; j += 16) {
        const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q + j));
        Out::template store16<kStream, kNaN>(y + j, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b)), s),
                                             _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(b, 8))), s));
      }
    } else if (C == Codec::kInt4Block) {
      const uint8_t* q = payload + k * (B / 2);
      const __m128i lut = _mm_setr_epi8(0, 1, 2, 3, 4, 5, 6, 7, -8, -7, -6, -5, -4, -3, -2, -1);  // sign-extended nibble
      const __m128i low4 = _mm_set1_epi8(0x0f);
      for (int j = 0; j < B; j += 32) {
        const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q + j / 2));
        const __m128i lo = _mm_shuffle_epi8(lut, _mm_and_si128(b, low4));
        const __m128i hi = _mm_shuffle_epi8(lut, _mm_and_si128(_mm_srli_epi16(b, 4), low4));
        const __m128i e0 = _mm_unpacklo_epi8(lo, hi), e1 = _mm_unpackhi_epi8(lo, hi);  // elements 0..15, 16..31
        Out::template store16<kStream, kNaN>(y + j, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(e0)), s),
                                             _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(e0, 8))), s));
        Out::template store16<kStream, kNaN>(y + j + 16, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(e1)), s),
                                             _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(e1, 8))), s));
      }
    } else {
      const uint8_t* q = payload + k * B;
      for (int j = 0; j < B; j += 16) {
        const __m256i c0 = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(q + j)));
        const __m256i c1 = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(q + j + 8)));
        __m256i sp0, sp1;
        const __m256 d0 = C == Codec::kFp8E4M3Block ? fp8_decode8<3, 7, false>(c0, &sp0) : fp8_decode8<2, 15, true>(c0, &sp0);
        const __m256 d1 = C == Codec::kFp8E4M3Block ? fp8_decode8<3, 7, false>(c1, &sp1) : fp8_decode8<2, 15, true>(c1, &sp1);
        // NaN comes only from a NaN/Inf code (Inf * 0 too): the NaN-aware store only then
        if (_mm256_testz_si256(_mm256_or_si256(sp0, sp1), _mm256_or_si256(sp0, sp1)))
          Out::template store16<kStream, false>(y + j, _mm256_mul_ps(d0, s), _mm256_mul_ps(d1, s));
        else
          Out::template store16<kStream, true>(y + j, _mm256_mul_ps(d0, s), _mm256_mul_ps(d1, s));
      }
    }
  }
}

template <class In, bool kStream>
GEOPIPE_AVX2 bool encode_dtype(Codec c, const void* x, int64_t nblocks, int B, float qmax, float* scales, uint8_t* payload) {
  const auto* p = static_cast<const typename In::T*>(x);
  switch (c) {
    case Codec::kInt8Block: return encode_blocks<In, Codec::kInt8Block, kStream>(p, nblocks, B, qmax, scales, payload);
    case Codec::kFp8E4M3Block: return encode_blocks<In, Codec::kFp8E4M3Block, kStream>(p, nblocks, B, qmax, scales, payload);
    case Codec::kFp8E5M2Block: return encode_blocks<In, Codec::kFp8E5M2Block, kStream>(p, nblocks, B, qmax, scales, payload);
    case Codec::kInt4Block: return encode_blocks<In, Codec::kInt4Block, kStream>(p, nblocks, B, qmax, scales, payload);
    case Codec::kNone: break;
  }
  return false;
}

template <class Out, bool kStream>
GEOPIPE_AVX2 void decode_dtype(Codec c, const float* scales, const uint8_t* payload, void* out, int64_t nblocks, int B) {
  auto* p = static_cast<typename Out::T*>(out);
  switch (c) {
    case Codec::kInt8Block: decode_blocks<Out, Codec::kInt8Block, kStream>(scales, payload, p, nblocks, B); break;
    case Codec::kFp8E4M3Block: decode_blocks<Out, Codec::kFp8E4M3Block, kStream>(scales, payload, p, nblocks, B); break;
    case Codec::kFp8E5M2Block: decode_blocks<Out, Codec::kFp8E5M2Block, kStream>(scales, payload, p, nblocks, B); break;
    case Codec::kInt4Block: decode_blocks<Out, Codec::kInt4Block, kStream>(scales, payload, p, nblocks, B); break;
    case Codec::kNone: break;
  }
}

bool aligned(const void* p, uintptr_t to) { return (reinterpret_cast<uintptr_t>(p) & (to - 1)) == 0; }

}  // namespace

bool encode_blocks_avx2(Codec codec, DType dtype, const void* x, int64_t nblocks, int block, float qmax, float* scales,
                        uint8_t* payload, bool stream) {
  // with blocks of 32 or more, every 16- or 32-byte store stays aligned when the row start is
  bool nonfinite = false;
  if (stream && aligned(payload, 32) && block % 32 == 0) {
    switch (dtype) {
      case DType::kFloat32: nonfinite = encode_dtype<F32, true>(codec, x, nblocks, block, qmax, scales, payload); break;
      case DType::kFloat16: nonfinite = encode_dtype<F16, true>(codec, x, nblocks, block, qmax, scales, payload); break;
      case DType::kBFloat16: nonfinite = encode_dtype<BF16, true>(codec, x, nblocks, block, qmax, scales, payload); break;
    }
    _mm_sfence();  // streamed stores are ordered before whatever the caller does next
    return nonfinite;
  }
  switch (dtype) {
    case DType::kFloat32: return encode_dtype<F32, false>(codec, x, nblocks, block, qmax, scales, payload);
    case DType::kFloat16: return encode_dtype<F16, false>(codec, x, nblocks, block, qmax, scales, payload);
    case DType::kBFloat16: return encode_dtype<BF16, false>(codec, x, nblocks, block, qmax, scales, payload);
  }
  return false;
}

void decode_blocks_avx2(Codec codec, DType dtype, const float* scales, const uint8_t* payload, void* out, int64_t nblocks,
                        int block, bool stream) {
  // 16 decoded values are 32 or 64 bytes: an aligned row start keeps each store aligned
  if (stream && aligned(out, 32)) {
    switch (dtype) {
      case DType::kFloat32: decode_dtype<F32, true>(codec, scales, payload, out, nblocks, block); break;
      case DType::kFloat16: decode_dtype<F16, true>(codec, scales, payload, out, nblocks, block); break;
      case DType::kBFloat16: decode_dtype<BF16, true>(codec, scales, payload, out, nblocks, block); break;
    }
    _mm_sfence();
    return;
  }
  switch (dtype) {
    case DType::kFloat32: decode_dtype<F32, false>(codec, scales, payload, out, nblocks, block); break;
    case DType::kFloat16: decode_dtype<F16, false>(codec, scales, payload, out, nblocks, block); break;
    case DType::kBFloat16: decode_dtype<BF16, false>(codec, scales, payload, out, nblocks, block); break;
  }
}

#else  // no AVX2 loops in this build (not x86-64 GCC/Clang): the portable loops do everything

bool avx2_available() { return false; }
bool encode_blocks_avx2(Codec, DType, const void*, int64_t, int, float, float*, uint8_t*, bool) { return false; }
void decode_blocks_avx2(Codec, DType, const float*, const uint8_t*, void*, int64_t, int, bool) {}

#endif

}  // namespace geopipe::kernels::simd
