// Activation/gradient codecs behind a C-style API: raw pointers, sizes, a dtype enum and, for the
// GPU, a cudaStream_t passed as void* (so this header needs no CUDA). No LibTorch, no plans.
//
// Wire format: one contiguous buffer, 16-byte aligned sections, little-endian:
//
//   [ WireHeader (112 B) | scales: fp32 per block, padded to 16 B | payload, padded to 16 B ]
//
// Blocks are `block_size` contiguous elements within a row (the last dimension); the last block
// of a row may be shorter. Codecs:
//   none            payload = the raw elements (no scales)
//   int8-block      symmetric absmax, q in [-127, 127], scale = absmax / 127, 1 byte per element
//   fp8-e4m3-block  y = x / scale encoded as OCP FP8 E4M3 (max 448),   scale = absmax / 448
//   fp8-e5m2-block  y = x / scale encoded as OCP FP8 E5M2 (max 57344), scale = absmax / 57344
//   int4-block      q in [-7, 7], scale = absmax / 7, two per byte (even element in the low
//                   nibble), each row padded to whole bytes: rows * ceil(row_len / 2) bytes
// Dequantized value = decode(q) * scale in fp32, rounded to the original dtype (round to nearest
// even). The GPU kernels and the CPU twins give bit-identical buffers, residuals and dequantized
// values (see numeric.h for how the arithmetic is kept reproducible).
// A block whose absmax is below 2^-100 (kTinyAbsmax) is encoded as zeros with scale 0.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace geopipe::kernels {

enum class Codec : uint8_t { kNone = 0, kInt8Block = 1, kFp8E4M3Block = 2, kFp8E5M2Block = 3, kInt4Block = 4 };
enum class DType : uint8_t { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };
enum class Rounding : uint8_t { kNearest = 0, kStochastic = 1 };

enum class Status : int {
  kOk = 0,
  kNonFinite,       // the input (or input + residual) holds NaN or Inf: nothing valid was encoded
  kBadArgument,     // unknown codec/dtype, bad block size, bad shape, null pointer
  kBufferTooSmall,  // destination smaller than the layout needs
  kCorrupt,         // bad magic/version/sizes, truncated buffer, non-finite or negative scale
  kCudaError,       // a CUDA call failed (message from the CUDA runtime via last_cuda_error())
  kNoCuda,          // a CUDA entry point called in a build without CUDA kernels
};

const char* status_string(Status s);
const char* codec_name(Codec c);    // the project's names: "none", "int8-block", ...
const char* dtype_name(DType d);    // "float32", "float16", "bfloat16"
size_t dtype_size(DType d);         // 4 or 2
// Parses a codec name; returns false (and leaves *out alone) for an unknown name.
bool parse_codec(const std::string& name, Codec* out);
// Largest quantized magnitude: 127, 448, 57344, 7 (0 for none).
float codec_qmax(Codec c);
// Default block: 128 elements for int8/fp8, 32 for int4, 0 for none.
int default_block_size(Codec c);
// int8/fp8: a power of two in [16, 1024]; int4: 32 or 64; none: 0 (or any value, ignored).
bool valid_block_size(Codec c, int block_size);

inline constexpr int kMaxDims = 8;
inline constexpr uint32_t kWireMagic = 0x314B5047u;  // "GPK1" in memory order
inline constexpr uint16_t kWireVersion = 1;
inline constexpr float kTinyAbsmax = 7.888609052210118e-31f;  // 2^-100

struct CodecSpec {
  Codec codec = Codec::kInt8Block;
  int block_size = 0;                     // 0: default_block_size(codec)
  Rounding rounding = Rounding::kNearest; // stochastic: meant for gradients
  uint64_t seed = 0;                      // Philox4x32-10 key (stochastic rounding only)
  uint64_t offset = 0;                    // Philox counter stream, e.g. step * M + micro-batch
};

// The header at the start of every buffer (exactly 112 bytes, little-endian).
struct WireHeader {
  uint32_t magic;          // kWireMagic
  uint16_t version;        // kWireVersion
  uint16_t header_bytes;   // sizeof(WireHeader)
  uint8_t codec;           // Codec
  uint8_t dtype;           // DType of the original tensor (and of the decoded one)
  uint8_t ndim;            // 0..kMaxDims
  uint8_t rounding;        // Rounding used (informational)
  uint32_t block_size;     // elements per block (0 for none)
  uint32_t status;         // 0; 1 when non-finite input was seen (such a buffer never decodes)
  uint32_t reserved0;      // 0
  int64_t numel;           // product of shape (1 for ndim 0)
  uint64_t total_bytes;    // whole buffer: header + scales + payload, with padding
  int64_t shape[kMaxDims]; // unused dims are 0
  uint64_t reserved1;      // 0
};
static_assert(sizeof(WireHeader) == 112, "wire header must stay 112 bytes");
static_assert(sizeof(WireHeader) % 16 == 0, "sections must stay 16-byte aligned");

// Where everything lives in a buffer; computable from (codec, block size, dtype, shape) alone.
struct Layout {
  int64_t numel = 0;
  int64_t rows = 0;            // numel / row_len
  int64_t row_len = 0;         // last dimension (1 for a 0-d tensor)
  int64_t blocks_per_row = 0;  // ceil(row_len / block_size)
  int64_t num_blocks = 0;
  int block_size = 0;
  size_t scales_offset = 0;    // == sizeof(WireHeader)
  size_t scales_bytes = 0;     // num_blocks * 4 (unpadded)
  size_t payload_offset = 0;   // 16-byte aligned
  size_t payload_bytes = 0;    // unpadded
  size_t total_bytes = 0;      // multiple of 16
};

// Fills *out for a tensor of `dtype` and `shape[0..ndim)` (ndim <= kMaxDims, dims >= 0).
Status compute_layout(const CodecSpec& spec, DType dtype, const int64_t* shape, int ndim, Layout* out);
// The header an encode of that tensor writes (status 0).
Status make_header(const CodecSpec& spec, DType dtype, const int64_t* shape, int ndim, WireHeader* out);
// Validates a received buffer: magic, version, codec, dtype, shape, block size, the size the
// layout needs against `bytes` (truncated buffers are refused), the non-finite status flag.
// `buf` must be host memory. On kCorrupt/kNonFinite, *why (if given) says what is wrong.
Status read_header(const void* buf, size_t bytes, WireHeader* out, std::string* why = nullptr);
// The field checks of read_header on a header already in host memory (no buffer length to check).
Status validate_header(const WireHeader& h, std::string* why = nullptr);
// Layout of a validated header.
Layout layout_of(const WireHeader& h);

// ---- CPU twins (the reference, and the path of CPU-only runs) -------------------------------
// Encodes `src` (contiguous, `dtype`) into `dst` (dst_bytes >= layout.total_bytes; padding is
// zeroed). `residual`, when not null, turns on error feedback: it holds numel fp32 values that are
// added to the input before quantizing and replaced by (input + residual) - dequantized. On
// kNonFinite the buffer is not valid (its status word is 1); residuals of finite blocks are updated.
Status encode_cpu(const CodecSpec& spec, DType dtype, const int64_t* shape, int ndim, const void* src,
                  float* residual, void* dst, size_t dst_bytes);
// Decodes a buffer (validated with read_header) into `dst`: numel contiguous values of the
// header's dtype (dst_bytes must equal numel * dtype_size). Refuses non-finite/negative scales.
Status decode_cpu(const void* buf, size_t bytes, void* dst, size_t dst_bytes, std::string* why = nullptr);

// Which loops encode_cpu/decode_cpu run. kAvx2: explicit AVX2 loops for whole blocks of
// round-to-nearest encoding without error feedback (the default codec path) and for decoding, the
// portable loops for the rest; kPortable: the compiler-vectorized loops only (the reference). Both
// give identical bytes; the default (kAuto) is kAvx2 where the CPU has AVX2 and F16C. Process-wide;
// meant for tests and benchmarks that compare the two.
enum class CpuPath : uint8_t { kAuto = 0, kPortable = 1, kAvx2 = 2 };
bool cpu_avx2_available();
// Returns false (and changes nothing) for kAvx2 where it is not available.
bool set_cpu_path(CpuPath path);
// The path in use now: kPortable or kAvx2.
CpuPath cpu_path();
const char* cpu_path_name(CpuPath path);  // "auto", "portable", "avx2"

// ---- CUDA kernels (kNoCuda in a build without CUDA) ------------------------------------------
// Same contract as encode_cpu with device pointers, asynchronous on `stream` (a cudaStream_t).
// `dst` must be 16-byte aligned. Non-finite input is reported in the buffer's header status word
// (offsetof(WireHeader, status)), readable once the stream has reached this point.
Status encode_cuda(const CodecSpec& spec, DType dtype, const int64_t* shape, int ndim, const void* src,
                   float* residual, void* dst, size_t dst_bytes, void* stream);
// Decodes a device buffer whose header the caller already validated on the host (`header`, e.g.
// read_header on a host copy of the first 112 bytes) into device memory `dst`.
Status decode_cuda(const WireHeader& header, const void* buf, void* dst, size_t dst_bytes, void* stream);
// Text of the last CUDA error seen by encode_cuda/decode_cuda on this thread ("" if none).
std::string last_cuda_error();

// ---- C++ conveniences ------------------------------------------------------------------------
// The error the C++ layers (LibTorch adapter, benchmarks) throw for a non-kOk status.
class CodecError : public std::runtime_error {
 public:
  CodecError(Status status, const std::string& what) : std::runtime_error(what), status_(status) {}
  Status status() const { return status_; }

 private:
  Status status_;
};

// Parses a codec name or throws CodecError(kBadArgument) listing the known names.
Codec codec_from_name(const std::string& name);
const std::vector<std::string>& codec_names();
// Bytes of the wire buffer for this tensor (what comm sends); throws CodecError on bad input.
size_t packed_size(const CodecSpec& spec, DType dtype, const std::vector<int64_t>& shape);

}  // namespace geopipe::kernels
