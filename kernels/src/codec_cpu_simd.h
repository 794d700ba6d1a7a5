// Internal to geopipe_kernels: the explicit AVX2 loops behind encode_cpu/decode_cpu (see
// codec_cpu_avx2.cpp). They cover whole blocks of round-to-nearest encoding without error feedback,
// and decoding; the portable loops in codec_cpu.cpp do the rest (row tails, stochastic rounding,
// error feedback) and are the reference the AVX2 loops must equal byte for byte.
#pragma once

#include <geopipe/kernels/codec.h>

#include <cstddef>
#include <cstdint>

namespace geopipe::kernels::simd {

// True when this build has the AVX2 loops and the CPU runs AVX2 and F16C.
bool avx2_available();

// Encodes `nblocks` full blocks of `block` elements (a multiple of 16; 32 or 64 for int4) that start
// at `x` (elements of `dtype`), writing scales[0..nblocks) and the payload at `payload` (int8/fp8:
// one byte per element; int4: one byte per two). A block holding NaN/Inf gets neither scale nor
// payload, exactly like the portable loop; the return value is true when there was such a block.
// `stream`: write the payload with non-temporal stores (for outputs far larger than the caches;
// used when the payload start is 16-byte aligned, ordinary stores otherwise).
bool encode_blocks_avx2(Codec codec, DType dtype, const void* x, int64_t nblocks, int block, float qmax,
                        float* scales, uint8_t* payload, bool stream);

// Decodes `nblocks` full blocks (same sizes) into `out` (elements of `dtype`); `stream` as above
// (used when `out` is 32-byte aligned).
void decode_blocks_avx2(Codec codec, DType dtype, const float* scales, const uint8_t* payload, void* out,
                        int64_t nblocks, int block, bool stream);

// Outputs of at least this many bytes are written with non-temporal stores: they would only
// evict the input (and everything else) from the caches on their way to memory.
inline constexpr size_t kStreamBytes = size_t{32} << 20;

}  // namespace geopipe::kernels::simd
