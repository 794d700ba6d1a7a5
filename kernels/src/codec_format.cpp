// Codec names, the wire layout and header validation (shared by the CPU and CUDA paths).
#include <geopipe/kernels/codec.h>

#include <cstring>
#include <limits>

namespace geopipe::kernels {

namespace {

size_t align16(size_t n) { return (n + 15) & ~static_cast<size_t>(15); }

const char* const kCodecNames[] = {"none", "int8-block", "fp8-e4m3-block", "fp8-e5m2-block", "int4-block"};

bool valid_codec(uint8_t c) { return c <= static_cast<uint8_t>(Codec::kInt4Block); }
bool valid_dtype(uint8_t d) { return d <= static_cast<uint8_t>(DType::kBFloat16); }

}  // namespace

const char* status_string(Status s) {
  switch (s) {
    case Status::kOk: return "ok";
    case Status::kNonFinite: return "non-finite input (NaN or Inf)";
    case Status::kBadArgument: return "bad argument";
    case Status::kBufferTooSmall: return "buffer too small";
    case Status::kCorrupt: return "corrupt buffer";
    case Status::kCudaError: return "CUDA error";
    case Status::kNoCuda: return "built without CUDA";
  }
  return "unknown status";
}

const char* codec_name(Codec c) {
  const auto i = static_cast<uint8_t>(c);
  return valid_codec(i) ? kCodecNames[i] : "unknown";
}

const char* dtype_name(DType d) {
  switch (d) {
    case DType::kFloat32: return "float32";
    case DType::kFloat16: return "float16";
    case DType::kBFloat16: return "bfloat16";
  }
  return "unknown";
}

size_t dtype_size(DType d) { return d == DType::kFloat32 ? 4 : 2; }

bool parse_codec(const std::string& name, Codec* out) {
  for (uint8_t i = 0; i <= static_cast<uint8_t>(Codec::kInt4Block); ++i) {
    if (name == kCodecNames[i]) {
      *out = static_cast<Codec>(i);
      return true;
    }
  }
  return false;
}

const std::vector<std::string>& codec_names() {
  static const std::vector<std::string> names(std::begin(kCodecNames), std::end(kCodecNames));
  return names;
}

Codec codec_from_name(const std::string& name) {
  Codec c;
  if (parse_codec(name, &c)) return c;
  std::string list;
  for (const auto& n : codec_names()) list += (list.empty() ? "" : ", ") + n;
  throw CodecError(Status::kBadArgument, "unknown codec \"" + name + "\" (expected one of: " + list + ")");
}

float codec_qmax(Codec c) {
  switch (c) {
    case Codec::kNone: return 0.0f;
    case Codec::kInt8Block: return 127.0f;
    case Codec::kFp8E4M3Block: return 448.0f;
    case Codec::kFp8E5M2Block: return 57344.0f;
    case Codec::kInt4Block: return 7.0f;
  }
  return 0.0f;
}

int default_block_size(Codec c) {
  switch (c) {
    case Codec::kNone: return 0;
    case Codec::kInt4Block: return 32;
    default: return 128;
  }
}

bool valid_block_size(Codec c, int b) {
  switch (c) {
    case Codec::kNone: return true;
    case Codec::kInt4Block: return b == 32 || b == 64;
    case Codec::kInt8Block:
    case Codec::kFp8E4M3Block:
    case Codec::kFp8E5M2Block: return b >= 16 && b <= 1024 && (b & (b - 1)) == 0;
  }
  return false;
}

Status compute_layout(const CodecSpec& spec, DType dtype, const int64_t* shape, int ndim, Layout* out) {
  if (!valid_codec(static_cast<uint8_t>(spec.codec)) || !valid_dtype(static_cast<uint8_t>(dtype)))
    return Status::kBadArgument;
  if (ndim < 0 || ndim > kMaxDims || (ndim > 0 && shape == nullptr)) return Status::kBadArgument;
  const int block = spec.codec == Codec::kNone ? 0 : (spec.block_size == 0 ? default_block_size(spec.codec) : spec.block_size);
  if (spec.codec != Codec::kNone && !valid_block_size(spec.codec, block)) return Status::kBadArgument;

  // numel with overflow checks (a corrupt header must not make us allocate 2^63 bytes)
  const int64_t kLimit = int64_t{1} << 50;
  int64_t numel = 1;
  for (int d = 0; d < ndim; ++d) {
    if (shape[d] < 0 || shape[d] > kLimit) return Status::kBadArgument;
    if (shape[d] != 0 && numel > kLimit / shape[d]) return Status::kBadArgument;
    numel *= shape[d];
  }
  Layout L;
  L.numel = numel;
  L.row_len = ndim == 0 ? 1 : shape[ndim - 1];
  L.rows = L.row_len == 0 ? 0 : numel / L.row_len;
  L.block_size = block;
  if (spec.codec == Codec::kNone || numel == 0) {
    L.blocks_per_row = 0;
  } else {
    L.blocks_per_row = (L.row_len + block - 1) / block;
  }
  L.num_blocks = L.rows * L.blocks_per_row;
  L.scales_offset = sizeof(WireHeader);
  L.scales_bytes = static_cast<size_t>(L.num_blocks) * 4;
  L.payload_offset = L.scales_offset + align16(L.scales_bytes);
  switch (spec.codec) {
    case Codec::kNone: L.payload_bytes = static_cast<size_t>(numel) * dtype_size(dtype); break;
    case Codec::kInt4Block: L.payload_bytes = static_cast<size_t>(L.rows) * static_cast<size_t>((L.row_len + 1) / 2); break;
    default: L.payload_bytes = static_cast<size_t>(numel); break;
  }
  L.total_bytes = L.payload_offset + align16(L.payload_bytes);
  *out = L;
  return Status::kOk;
}

Status make_header(const CodecSpec& spec, DType dtype, const int64_t* shape, int ndim, WireHeader* out) {
  Layout L;
  const Status st = compute_layout(spec, dtype, shape, ndim, &L);
  if (st != Status::kOk) return st;
  WireHeader h;
  std::memset(&h, 0, sizeof h);
  h.magic = kWireMagic;
  h.version = kWireVersion;
  h.header_bytes = sizeof(WireHeader);
  h.codec = static_cast<uint8_t>(spec.codec);
  h.dtype = static_cast<uint8_t>(dtype);
  h.ndim = static_cast<uint8_t>(ndim);
  h.rounding = static_cast<uint8_t>(spec.rounding);
  h.block_size = static_cast<uint32_t>(L.block_size);
  h.numel = L.numel;
  h.total_bytes = L.total_bytes;
  for (int d = 0; d < ndim; ++d) h.shape[d] = shape[d];
  *out = h;
  return Status::kOk;
}

namespace {
Status fail(std::string* why, Status s, const std::string& msg) {
  if (why) *why = msg;
  return s;
}
}  // namespace

Status validate_header(const WireHeader& h, std::string* why) {
  if (h.magic != kWireMagic) return fail(why, Status::kCorrupt, "bad magic (not a geopipe codec buffer)");
  if (h.version != kWireVersion)
    return fail(why, Status::kCorrupt, "unsupported wire version " + std::to_string(h.version) + " (this build reads " +
                                           std::to_string(kWireVersion) + ")");
  if (h.header_bytes != sizeof(WireHeader))
    return fail(why, Status::kCorrupt, "bad header size " + std::to_string(h.header_bytes));
  if (!valid_codec(h.codec)) return fail(why, Status::kCorrupt, "unknown codec id " + std::to_string(h.codec));
  if (!valid_dtype(h.dtype)) return fail(why, Status::kCorrupt, "unknown dtype id " + std::to_string(h.dtype));
  if (h.ndim > kMaxDims) return fail(why, Status::kCorrupt, "ndim " + std::to_string(h.ndim) + " > " + std::to_string(kMaxDims));
  if (h.rounding > 1) return fail(why, Status::kCorrupt, "unknown rounding id " + std::to_string(h.rounding));
  for (int d = h.ndim; d < kMaxDims; ++d)
    if (h.shape[d] != 0) return fail(why, Status::kCorrupt, "shape beyond ndim is not zero");
  CodecSpec spec;
  spec.codec = static_cast<Codec>(h.codec);
  spec.block_size = static_cast<int>(h.block_size);
  if (spec.codec != Codec::kNone && (h.block_size == 0 || !valid_block_size(spec.codec, static_cast<int>(h.block_size))))
    return fail(why, Status::kCorrupt, "bad block size " + std::to_string(h.block_size) + " for " + codec_name(spec.codec));
  if (spec.codec == Codec::kNone && h.block_size != 0) return fail(why, Status::kCorrupt, "block size set for codec none");
  Layout L;
  if (compute_layout(spec, static_cast<DType>(h.dtype), h.shape, h.ndim, &L) != Status::kOk)
    return fail(why, Status::kCorrupt, "bad shape (negative or too large dimension)");
  if (L.numel != h.numel)
    return fail(why, Status::kCorrupt, "element count " + std::to_string(h.numel) + " does not match the shape (" +
                                           std::to_string(L.numel) + ")");
  if (L.total_bytes != h.total_bytes)
    return fail(why, Status::kCorrupt, "size field " + std::to_string(h.total_bytes) + " does not match the layout (" +
                                           std::to_string(L.total_bytes) + ")");
  if (h.status != 0)
    return fail(why, Status::kNonFinite, "the sender's tensor held NaN or Inf (buffer marked non-finite)");
  return Status::kOk;
}

Status read_header(const void* buf, size_t bytes, WireHeader* out, std::string* why) {
  if (buf == nullptr) return fail(why, Status::kBadArgument, "null buffer");
  if (bytes < sizeof(WireHeader))
    return fail(why, Status::kCorrupt, "truncated buffer: " + std::to_string(bytes) + " bytes, the header alone needs " +
                                           std::to_string(sizeof(WireHeader)));
  WireHeader h;
  std::memcpy(&h, buf, sizeof h);
  // the status flag is checked after the size, so that a truncated buffer is reported as such
  const uint32_t status = h.status;
  h.status = 0;
  const Status st = validate_header(h, why);
  if (st != Status::kOk) return st;
  if (bytes < h.total_bytes)
    return fail(why, Status::kCorrupt, "truncated buffer: " + std::to_string(bytes) + " bytes, the header says " +
                                           std::to_string(h.total_bytes));
  h.status = status;
  if (status != 0) return validate_header(h, why);
  if (out) *out = h;
  return Status::kOk;
}

Layout layout_of(const WireHeader& h) {
  CodecSpec spec;
  spec.codec = static_cast<Codec>(h.codec);
  spec.block_size = static_cast<int>(h.block_size);
  Layout L;
  compute_layout(spec, static_cast<DType>(h.dtype), h.shape, h.ndim, &L);
  return L;
}

size_t packed_size(const CodecSpec& spec, DType dtype, const std::vector<int64_t>& shape) {
  Layout L;
  if (compute_layout(spec, dtype, shape.data(), static_cast<int>(shape.size()), &L) != Status::kOk) {
    std::string dims;
    for (auto d : shape) dims += (dims.empty() ? "" : "x") + std::to_string(d);
    throw CodecError(Status::kBadArgument, std::string("cannot lay out codec ") + codec_name(spec.codec) + " block " +
                                               std::to_string(spec.block_size) + " for " + dtype_name(dtype) +
                                               " tensor of shape [" + dims + "] (up to " + std::to_string(kMaxDims) +
                                               " non-negative dims)");
  }
  return L.total_bytes;
}

#ifndef GEOPIPE_HAVE_CUDA
Status encode_cuda(const CodecSpec&, DType, const int64_t*, int, const void*, float*, void*, size_t, void*) {
  return Status::kNoCuda;
}
Status decode_cuda(const WireHeader&, const void*, void*, size_t, void*) { return Status::kNoCuda; }
std::string last_cuda_error() { return ""; }
#endif

}  // namespace geopipe::kernels
