// CUDA codec kernels. Same arithmetic as the CPU twins (numeric.h), so outputs are bit-identical.
// Compiled with -fmad=false, --prec-div=true, --ftz=false (kernels/CMakeLists.txt); the float
// operations in numeric.h are __f*_rn intrinsics, which are never contracted anyway.
//
// Work split: a "group" of G lanes (G = min(32, block / V), V = 16 bytes / element size) owns one
// quantization block; each lane moves 16 bytes per load (V elements), the block's absmax is a
// warp-shuffle reduction within the group (no shared memory), and a 256-thread CTA holds 256 / G
// groups. One CTA per 256 / G blocks, so small tensors still spread over the whole GPU.
#include <geopipe/kernels/codec.h>
#include <geopipe/kernels/numeric.h>

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>

namespace geopipe::kernels {

namespace {

using namespace num;

thread_local std::string g_last_cuda_error;

Status cuda_fail(cudaError_t e, const char* what) {
  g_last_cuda_error = std::string(what) + ": " + cudaGetErrorString(e);
  return Status::kCudaError;
}

struct F32 {
  using T = float;
  static __device__ __forceinline__ float load(float v) { return v; }
  static __device__ __forceinline__ float store(float v) { return v; }
};
struct BF16 {
  using T = uint16_t;
  static __device__ __forceinline__ float load(uint16_t v) { return bf16_to_f32(v); }
  static __device__ __forceinline__ uint16_t store(float v) { return f32_to_bf16(v); }
};
struct F16 {
  using T = uint16_t;
  static __device__ __forceinline__ float load(uint16_t v) { return f16_to_f32(v); }
  static __device__ __forceinline__ uint16_t store(float v) { return f32_to_f16(v); }
};

constexpr int kThreads = 256;

struct Geometry {
  int64_t row_len, bpr, num_blocks, int4_row_bytes;
  int block, group, items;  // elements per block, lanes per block, 16-byte vectors per lane
  int vec_ok;               // 16-byte vector access is aligned for every full vector
};

// Block index -> (row, first column). 32-bit division when the count allows (almost always):
// a 64-bit division is a long instruction sequence on the GPU.
__device__ __forceinline__ void split_block(int64_t b, const Geometry& geo, int64_t* row, int64_t* c0) {
  if (geo.num_blocks <= 0x7fffffff) {
    const uint32_t r = static_cast<uint32_t>(b) / static_cast<uint32_t>(geo.bpr);
    *row = r;
    *c0 = static_cast<int64_t>(static_cast<uint32_t>(b) - r * static_cast<uint32_t>(geo.bpr)) * geo.block;
  } else {
    *row = b / geo.bpr;
    *c0 = (b % geo.bpr) * geo.block;
  }
}

struct EncodeArgs {
  Geometry geo;
  uint8_t* dst;
  float* residual;  // error feedback (null: off)
  WireHeader hdr;
  size_t scales_end, payload_offset, payload_end, total;
  float qmax;
  int stochastic;
  uint64_t seed, offset;
};

// Header (all but the status word, which the host zeroed and blocks OR into) and the padding.
__device__ void write_header_and_padding(const EncodeArgs& a) {
  const uint32_t* words = reinterpret_cast<const uint32_t*>(&a.hdr);
  uint32_t* out = reinterpret_cast<uint32_t*>(a.dst);
  constexpr int kStatusWord = offsetof(WireHeader, status) / 4;
  for (int i = 0; i < static_cast<int>(sizeof(WireHeader) / 4); ++i)
    if (i != kStatusWord) out[i] = words[i];
  for (size_t i = a.scales_end; i < a.payload_offset; ++i) a.dst[i] = 0;
  for (size_t i = a.payload_end; i < a.total; ++i) a.dst[i] = 0;
}

// Per-element Philox bits, one generator call per 4 consecutive elements.
struct RandomBits {
  uint64_t seed, offset;
  uint64_t group;
  Philox4 r;
  __device__ uint32_t at(uint64_t i) {
    if ((i >> 2) != group) {
      group = i >> 2;
      r = philox_for_group(seed, offset, group);
    }
    return r.v[i & 3];
  }
};

template <Codec C>
__device__ __forceinline__ float codec_dequant(int32_t q, uint8_t code, float scale) {
  if (C == Codec::kFp8E4M3Block) return mul_rn(e4m3_to_f32(code), scale);
  if (C == Codec::kFp8E5M2Block) return mul_rn(e5m2_to_f32(code), scale);
  return dequantize_int(q, scale);
}

template <class In, Codec C>
__global__ void __launch_bounds__(kThreads) encode_kernel(const typename In::T* __restrict__ src, EncodeArgs a) {
  using T = typename In::T;
  constexpr int V = 16 / sizeof(T);
  constexpr int kMaxItems = 1024 / (32 * V);
  const Geometry& geo = a.geo;
  if (blockIdx.x == 0 && threadIdx.x == 0) write_header_and_padding(a);

  const int G = geo.group;
  const int g = threadIdx.x % G;
  const int64_t b = static_cast<int64_t>(blockIdx.x) * (kThreads / G) + threadIdx.x / G;
  const bool active = b < geo.num_blocks;
  int64_t row = 0, c0 = 0, base = 0;
  int n = 0;
  if (active) {
    split_block(b, geo, &row, &c0);
    n = static_cast<int>(min(static_cast<int64_t>(geo.block), geo.row_len - c0));
    base = row * geo.row_len + c0;
  }
  const bool ef = a.residual != nullptr;

  // 1. load (x + residual) and the lane's absmax
  float v[kMaxItems][V];
  uint32_t amax = 0;
#pragma unroll
  for (int k = 0; k < kMaxItems; ++k) {
    if (k >= geo.items) break;
    const int e0 = (k * G + g) * V;
    if (active && geo.vec_ok && e0 + V <= n) {
      union {
        uint4 u;
        T e[V];
      } pack;
      pack.u = *reinterpret_cast<const uint4*>(src + base + e0);
#pragma unroll
      for (int j = 0; j < V; ++j) v[k][j] = In::load(pack.e[j]);
      if (ef) {
#pragma unroll
        for (int j = 0; j < V; j += 4) {
          const float4 r = *reinterpret_cast<const float4*>(a.residual + base + e0 + j);
          v[k][j] = add_rn(v[k][j], r.x);
          v[k][j + 1] = add_rn(v[k][j + 1], r.y);
          v[k][j + 2] = add_rn(v[k][j + 2], r.z);
          v[k][j + 3] = add_rn(v[k][j + 3], r.w);
        }
      }
    } else {
#pragma unroll
      for (int j = 0; j < V; ++j) {
        float f = 0.0f;
        if (active && e0 + j < n) {
          f = In::load(src[base + e0 + j]);
          if (ef) f = add_rn(f, a.residual[base + e0 + j]);
        }
        v[k][j] = f;
      }
    }
#pragma unroll
    for (int j = 0; j < V; ++j) amax = max(amax, f32_bits(v[k][j]) & 0x7fffffffu);
  }
  // 2. the block's absmax: butterfly over the group's G lanes (every lane of the warp takes part)
  for (int o = G >> 1; o > 0; o >>= 1) amax = max(amax, __shfl_xor_sync(0xffffffffu, amax, o, G));
  if (!active) return;
  if (amax >= 0x7f800000u) {  // NaN or Inf: flag the buffer, write nothing for this block
    if (g == 0) atomicOr(reinterpret_cast<unsigned int*>(a.dst + offsetof(WireHeader, status)), 1u);
    return;
  }
  const BlockScale s = block_scale(amax, a.qmax);
  if (g == 0) reinterpret_cast<float*>(a.dst + sizeof(WireHeader))[b] = s.scale;

  // 3. quantize, store the payload (and the new residual)
  RandomBits rng{a.seed, a.offset, ~uint64_t{0}, Philox4{}};
  uint8_t* payload = a.dst + a.payload_offset;
#pragma unroll
  for (int k = 0; k < kMaxItems; ++k) {
    if (k >= geo.items) break;
    const int e0 = (k * G + g) * V;
    if (e0 >= n) break;
    const bool full = geo.vec_ok && e0 + V <= n;
    int32_t q[V];
    uint8_t code[V];
#pragma unroll
    for (int j = 0; j < V; ++j) {
      q[j] = 0;
      code[j] = 0;
      if (e0 + j < n) {
        const uint32_t rnd = a.stochastic ? rng.at(static_cast<uint64_t>(base + e0 + j)) : 0u;
        if (C == Codec::kInt8Block || C == Codec::kInt4Block) {
          q[j] = quantize_int(v[k][j], s.inv, a.qmax, a.stochastic != 0, rnd);
        } else {
          const float y = mul_rn(v[k][j], s.inv);
          code[j] = C == Codec::kFp8E4M3Block ? f32_to_e4m3(y, a.stochastic != 0, rnd)
                                               : f32_to_e5m2(y, a.stochastic != 0, rnd);
        }
      }
    }
    if (C == Codec::kInt4Block) {
      uint8_t* out = payload + row * geo.int4_row_bytes + (c0 + e0) / 2;
      union {
        uint8_t b[V / 2];
        typename std::conditional<V == 8, uint32_t, uint16_t>::type w;
      } pk;
#pragma unroll
      for (int p = 0; p < V / 2; ++p) pk.b[p] = static_cast<uint8_t>((q[2 * p] & 0xf) | ((q[2 * p + 1] & 0xf) << 4));
      if (full) {
        *reinterpret_cast<decltype(pk.w)*>(out) = pk.w;
      } else {
#pragma unroll
        for (int p = 0; p < V / 2; ++p)
          if (e0 + 2 * p < n) out[p] = pk.b[p];
      }
    } else {
      union {
        uint8_t b[V];
        typename std::conditional<V == 8, uint2, uint32_t>::type w;
      } pk;
#pragma unroll
      for (int j = 0; j < V; ++j) pk.b[j] = C == Codec::kInt8Block ? static_cast<uint8_t>(static_cast<int8_t>(q[j])) : code[j];
      uint8_t* out = payload + base + e0;
      if (full) {
        *reinterpret_cast<decltype(pk.w)*>(out) = pk.w;
      } else {
#pragma unroll
        for (int j = 0; j < V; ++j)
          if (e0 + j < n) out[j] = pk.b[j];
      }
    }
    if (ef) {
#pragma unroll
      for (int j = 0; j < V; ++j)
        if (e0 + j < n) a.residual[base + e0 + j] = sub_rn(v[k][j], codec_dequant<C>(q[j], code[j], s.scale));
    }
  }
}

// codec "none": copy the raw elements, checking that every one is finite.
template <class In>
__global__ void __launch_bounds__(kThreads) encode_none_kernel(const typename In::T* __restrict__ src, EncodeArgs a,
                                                               int64_t numel) {
  using T = typename In::T;
  if (blockIdx.x == 0 && threadIdx.x == 0) write_header_and_padding(a);
  T* out = reinterpret_cast<T*>(a.dst + a.payload_offset);
  bool bad = false;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < numel;
       i += static_cast<int64_t>(gridDim.x) * kThreads) {
    const T x = src[i];
    bad |= (f32_bits(In::load(x)) & 0x7fffffffu) >= 0x7f800000u;
    out[i] = x;
  }
  if (bad) atomicOr(reinterpret_cast<unsigned int*>(a.dst + offsetof(WireHeader, status)), 1u);
}

struct DecodeArgs {
  Geometry geo;
  const uint8_t* buf;
  size_t payload_offset;
};

template <class Out, Codec C>
__global__ void __launch_bounds__(kThreads) decode_kernel(DecodeArgs a, typename Out::T* __restrict__ dst) {
  using T = typename Out::T;
  constexpr int V = 16 / sizeof(T);
  constexpr int kMaxItems = 1024 / (32 * V);
  const Geometry& geo = a.geo;
  const int G = geo.group;
  const int g = threadIdx.x % G;
  const int64_t b = static_cast<int64_t>(blockIdx.x) * (kThreads / G) + threadIdx.x / G;
  if (b >= geo.num_blocks) return;
  int64_t row, c0;
  split_block(b, geo, &row, &c0);
  const int n = static_cast<int>(min(static_cast<int64_t>(geo.block), geo.row_len - c0));
  const int64_t base = row * geo.row_len + c0;
  const float scale = __ldg(reinterpret_cast<const float*>(a.buf + sizeof(WireHeader)) + b);
  const uint8_t* payload = a.buf + a.payload_offset;
#pragma unroll
  for (int k = 0; k < kMaxItems; ++k) {
    if (k >= geo.items) break;
    const int e0 = (k * G + g) * V;
    if (e0 >= n) break;
    const bool full = geo.vec_ok && e0 + V <= n;
    uint8_t raw[V];
    if (C == Codec::kInt4Block) {
      const uint8_t* in = payload + row * geo.int4_row_bytes + (c0 + e0) / 2;
      union {
        uint8_t b[V / 2];
        typename std::conditional<V == 8, uint32_t, uint16_t>::type w;
      } pk;
      if (full) {
        pk.w = *reinterpret_cast<const decltype(pk.w)*>(in);
      } else {
#pragma unroll
        for (int p = 0; p < V / 2; ++p) pk.b[p] = e0 + 2 * p < n ? in[p] : 0;
      }
#pragma unroll
      for (int p = 0; p < V / 2; ++p) {
        raw[2 * p] = pk.b[p] & 0xf;
        raw[2 * p + 1] = pk.b[p] >> 4;
      }
    } else {
      const uint8_t* in = payload + base + e0;
      union {
        uint8_t b[V];
        typename std::conditional<V == 8, uint2, uint32_t>::type w;
      } pk;
      if (full) {
        pk.w = *reinterpret_cast<const decltype(pk.w)*>(in);
      } else {
#pragma unroll
        for (int j = 0; j < V; ++j) pk.b[j] = e0 + j < n ? in[j] : 0;
      }
#pragma unroll
      for (int j = 0; j < V; ++j) raw[j] = pk.b[j];
    }
    union {
      uint4 u;
      T e[V];
    } outv;
#pragma unroll
    for (int j = 0; j < V; ++j) {
      float f;
      if (C == Codec::kInt8Block) f = dequantize_int(static_cast<int8_t>(raw[j]), scale);
      else if (C == Codec::kInt4Block) f = dequantize_int(static_cast<int32_t>(static_cast<uint32_t>(raw[j]) << 28) >> 28, scale);
      else f = codec_dequant<C>(0, raw[j], scale);
      outv.e[j] = Out::store(f);
    }
    if (full) {
      *reinterpret_cast<uint4*>(dst + base + e0) = outv.u;
    } else {
#pragma unroll
      for (int j = 0; j < V; ++j)
        if (e0 + j < n) dst[base + e0 + j] = outv.e[j];
    }
  }
}

Geometry make_geometry(const Layout& L, size_t elem_size, bool aligned) {
  Geometry geo{};
  const int V = static_cast<int>(16 / elem_size);
  geo.row_len = L.row_len;
  geo.bpr = L.blocks_per_row;
  geo.num_blocks = L.num_blocks;
  geo.int4_row_bytes = (L.row_len + 1) / 2;
  geo.block = L.block_size;
  geo.group = L.block_size / V < 32 ? L.block_size / V : 32;
  geo.items = L.block_size / (geo.group * V);
  geo.vec_ok = aligned && L.row_len % V == 0;
  return geo;
}

unsigned grid_for(const Geometry& geo) {
  const int64_t per_cta = kThreads / geo.group;
  const int64_t n = (geo.num_blocks + per_cta - 1) / per_cta;
  return static_cast<unsigned>(n > 0 ? n : 1);
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

template <class In>
void launch_encode(Codec c, const void* src, const EncodeArgs& a, unsigned grid, cudaStream_t s) {
  const auto* x = static_cast<const typename In::T*>(src);
  switch (c) {
    case Codec::kInt8Block: encode_kernel<In, Codec::kInt8Block><<<grid, kThreads, 0, s>>>(x, a); break;
    case Codec::kFp8E4M3Block: encode_kernel<In, Codec::kFp8E4M3Block><<<grid, kThreads, 0, s>>>(x, a); break;
    case Codec::kFp8E5M2Block: encode_kernel<In, Codec::kFp8E5M2Block><<<grid, kThreads, 0, s>>>(x, a); break;
    case Codec::kInt4Block: encode_kernel<In, Codec::kInt4Block><<<grid, kThreads, 0, s>>>(x, a); break;
    case Codec::kNone: break;
  }
}

template <class Out>
void launch_decode(Codec c, const DecodeArgs& a, void* dst, unsigned grid, cudaStream_t s) {
  auto* y = static_cast<typename Out::T*>(dst);
  switch (c) {
    case Codec::kInt8Block: decode_kernel<Out, Codec::kInt8Block><<<grid, kThreads, 0, s>>>(a, y); break;
    case Codec::kFp8E4M3Block: decode_kernel<Out, Codec::kFp8E4M3Block><<<grid, kThreads, 0, s>>>(a, y); break;
    case Codec::kFp8E5M2Block: decode_kernel<Out, Codec::kFp8E5M2Block><<<grid, kThreads, 0, s>>>(a, y); break;
    case Codec::kInt4Block: decode_kernel<Out, Codec::kInt4Block><<<grid, kThreads, 0, s>>>(a, y); break;
    case Codec::kNone: break;
  }
}

}  // namespace

std::string last_cuda_error() { return g_last_cuda_error; }

Status encode_cuda(const CodecSpec& spec, DType dtype, const int64_t* shape, int ndim, const void* src,
                   float* residual, void* dst, size_t dst_bytes, void* stream) {
  WireHeader h;
  const Status st = make_header(spec, dtype, shape, ndim, &h);
  if (st != Status::kOk) return st;
  if (spec.rounding != Rounding::kNearest && spec.rounding != Rounding::kStochastic) return Status::kBadArgument;
  const Layout L = layout_of(h);
  if (dst == nullptr || !aligned16(dst) || (L.numel > 0 && src == nullptr)) return Status::kBadArgument;
  if (residual != nullptr && spec.codec == Codec::kNone) return Status::kBadArgument;
  if (dst_bytes < L.total_bytes) return Status::kBufferTooSmall;
  auto s = static_cast<cudaStream_t>(stream);

  EncodeArgs a{};
  a.dst = static_cast<uint8_t*>(dst);
  a.residual = residual;
  a.hdr = h;
  a.scales_end = L.scales_offset + L.scales_bytes;
  a.payload_offset = L.payload_offset;
  a.payload_end = L.payload_offset + L.payload_bytes;
  a.total = L.total_bytes;
  a.qmax = codec_qmax(spec.codec);
  a.stochastic = spec.rounding == Rounding::kStochastic ? 1 : 0;
  a.seed = spec.seed;
  a.offset = spec.offset;

  cudaError_t e = cudaMemsetAsync(a.dst + offsetof(WireHeader, status), 0, 4, s);
  if (e != cudaSuccess) return cuda_fail(e, "encode_cuda: clearing the status word");
  if (spec.codec == Codec::kNone) {
    const int64_t ctas = (L.numel + kThreads - 1) / kThreads;
    const unsigned grid = static_cast<unsigned>(ctas < 1 ? 1 : (ctas > 65535 ? 65535 : ctas));
    switch (dtype) {
      case DType::kFloat32: encode_none_kernel<F32><<<grid, kThreads, 0, s>>>(static_cast<const float*>(src), a, L.numel); break;
      case DType::kFloat16: encode_none_kernel<F16><<<grid, kThreads, 0, s>>>(static_cast<const uint16_t*>(src), a, L.numel); break;
      case DType::kBFloat16: encode_none_kernel<BF16><<<grid, kThreads, 0, s>>>(static_cast<const uint16_t*>(src), a, L.numel); break;
    }
  } else {
    const bool aligned = aligned16(src) && (residual == nullptr || aligned16(residual));
    a.geo = make_geometry(L, dtype_size(dtype), aligned);
    const unsigned grid = grid_for(a.geo);
    switch (dtype) {
      case DType::kFloat32: launch_encode<F32>(spec.codec, src, a, grid, s); break;
      case DType::kFloat16: launch_encode<F16>(spec.codec, src, a, grid, s); break;
      case DType::kBFloat16: launch_encode<BF16>(spec.codec, src, a, grid, s); break;
    }
  }
  e = cudaGetLastError();
  if (e != cudaSuccess) return cuda_fail(e, "encode_cuda: kernel launch");
  return Status::kOk;
}

Status decode_cuda(const WireHeader& header, const void* buf, void* dst, size_t dst_bytes, void* stream) {
  const Status st = validate_header(header);
  if (st != Status::kOk) return st;
  const Layout L = layout_of(header);
  const auto dtype = static_cast<DType>(header.dtype);
  if (dst_bytes != static_cast<size_t>(L.numel) * dtype_size(dtype)) return Status::kBadArgument;
  if (L.numel == 0) return Status::kOk;
  if (buf == nullptr || dst == nullptr || !aligned16(buf)) return Status::kBadArgument;
  auto s = static_cast<cudaStream_t>(stream);
  const auto codec = static_cast<Codec>(header.codec);
  cudaError_t e;
  if (codec == Codec::kNone) {
    e = cudaMemcpyAsync(dst, static_cast<const uint8_t*>(buf) + L.payload_offset, L.payload_bytes,
                        cudaMemcpyDeviceToDevice, s);
    if (e != cudaSuccess) return cuda_fail(e, "decode_cuda: copy");
    return Status::kOk;
  }
  DecodeArgs a{};
  a.geo = make_geometry(L, dtype_size(dtype), aligned16(dst));
  a.buf = static_cast<const uint8_t*>(buf);
  a.payload_offset = L.payload_offset;
  const unsigned grid = grid_for(a.geo);
  switch (dtype) {
    case DType::kFloat32: launch_decode<F32>(codec, a, dst, grid, s); break;
    case DType::kFloat16: launch_decode<F16>(codec, a, dst, grid, s); break;
    case DType::kBFloat16: launch_decode<BF16>(codec, a, dst, grid, s); break;
  }
  e = cudaGetLastError();
  if (e != cudaSuccess) return cuda_fail(e, "decode_cuda: kernel launch");
  return Status::kOk;
}

}  // namespace geopipe::kernels
