#include <geopipe/comm/crc32c.h>
#include <geopipe/comm/header.h>

#include <geopipe/core/error.h>

#include <sstream>

namespace geopipe::comm {

namespace {

const char* kind_name(MessageKind kind) {
  switch (kind) {
    case MessageKind::kBytes: return "bytes";
    case MessageKind::kActivation: return "activation";
    case MessageKind::kGradient: return "gradient";
    case MessageKind::kControl: return "control";
  }
  return "unknown";
}

const char* elem_type_name(ElemType type) {
  switch (type) {
    case ElemType::kUInt8: return "u8";
    case ElemType::kInt8: return "i8";
    case ElemType::kInt32: return "i32";
    case ElemType::kInt64: return "i64";
    case ElemType::kFloat16: return "fp16";
    case ElemType::kBFloat16: return "bf16";
    case ElemType::kFloat32: return "fp32";
    case ElemType::kFloat64: return "fp64";
  }
  return "unknown";
}

}  // namespace

size_t elem_type_bytes(ElemType type) {
  switch (type) {
    case ElemType::kUInt8:
    case ElemType::kInt8: return 1;
    case ElemType::kFloat16:
    case ElemType::kBFloat16: return 2;
    case ElemType::kInt32:
    case ElemType::kFloat32: return 4;
    case ElemType::kInt64:
    case ElemType::kFloat64: return 8;
  }
  return 0;
}

int64_t MessageHeader::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

namespace {

std::string shape_str(const std::vector<int64_t>& shape) {
  std::ostringstream os;
  os << '[';
  for (size_t i = 0; i < shape.size(); ++i) os << (i ? "," : "") << shape[i];
  os << ']';
  return os.str();
}

// Little-endian writer/reader. The layout of the 144-byte wire header (offsets in bytes):
//   0 magic u32 | 4 version u16 | 6 wire size u16 | 8 job u64 | 16 stage i32 | 20 micro_batch i32
//  24 kind u8 | 25 elem_type u8 | 26 ndim u8 | 27 codec length u8 | 28 flags u32
//  32 shape i64 x 8 | 96 payload_bytes u64 | 104 seq u32 | 108 src_rank i32 | 112 crc32c u32
// 116 codec char[16] (NUL padded) | 132 authentication tag (8 bytes, zero unless flags has
// kFlagAuthTag; written by auth.h's seal_header) | 140 CRC32C of bytes [0, 140)
struct Writer {
  uint8_t* p;
  size_t at = 0;
  void u8(uint8_t v) { p[at++] = v; }
  void u16(uint16_t v) { for (int i = 0; i < 2; ++i) u8(static_cast<uint8_t>(v >> (8 * i))); }
  void u32(uint32_t v) { for (int i = 0; i < 4; ++i) u8(static_cast<uint8_t>(v >> (8 * i))); }
  void u64(uint64_t v) { for (int i = 0; i < 8; ++i) u8(static_cast<uint8_t>(v >> (8 * i))); }
};
struct Reader {
  const uint8_t* p;
  size_t at = 0;
  uint8_t u8() { return p[at++]; }
  uint16_t u16() { uint16_t v = 0; for (int i = 0; i < 2; ++i) v |= uint16_t(u8()) << (8 * i); return v; }
  uint32_t u32() { uint32_t v = 0; for (int i = 0; i < 4; ++i) v |= uint32_t(u8()) << (8 * i); return v; }
  uint64_t u64() { uint64_t v = 0; for (int i = 0; i < 8; ++i) v |= uint64_t(u8()) << (8 * i); return v; }
};

}  // namespace

void encode_header(const MessageHeader& h, uint8_t* out) {
  if (h.shape.size() > static_cast<size_t>(kMaxDims))
    throw Error("message header: " + std::to_string(h.shape.size()) + " dims, at most " +
                std::to_string(kMaxDims) + " are supported");
  for (int64_t d : h.shape)
    if (d < 0) throw Error("message header: negative dimension in shape " + shape_str(h.shape));
  if (h.codec.empty() || h.codec.size() > kMaxCodecName)
    throw Error("message header: codec name '" + h.codec + "' must have 1 to " +
                std::to_string(kMaxCodecName) + " characters");
  Writer w{out};
  w.u32(kHeaderMagic);                                   // 0
  w.u16(kHeaderVersion);                                 // 4
  w.u16(static_cast<uint16_t>(kHeaderWireBytes));        // 6
  w.u64(h.job);                                          // 8
  w.u32(static_cast<uint32_t>(h.stage));                 // 16
  w.u32(static_cast<uint32_t>(h.micro_batch));           // 20
  w.u8(static_cast<uint8_t>(h.kind));                    // 24
  w.u8(static_cast<uint8_t>(h.elem_type));               // 25
  w.u8(static_cast<uint8_t>(h.shape.size()));            // 26
  w.u8(static_cast<uint8_t>(h.codec.size()));            // 27
  w.u32(h.flags);                                        // 28
  for (int i = 0; i < kMaxDims; ++i)                     // 32 .. 95
    w.u64(i < static_cast<int>(h.shape.size()) ? static_cast<uint64_t>(h.shape[i]) : 0);
  w.u64(h.payload_bytes);                                // 96
  w.u32(h.seq);                                          // 104
  w.u32(static_cast<uint32_t>(h.src_rank));              // 108
  w.u32(h.crc32c);                                       // 112
  for (size_t i = 0; i < 16; ++i)                        // 116 .. 131
    w.u8(i < h.codec.size() ? static_cast<uint8_t>(h.codec[i]) : 0);
  w.u64(0);                                              // 132 tag (seal_header)
  w.u32(crc32c(out, 140));                               // 140 header checksum
}

std::array<uint8_t, kHeaderWireBytes> encode_header(const MessageHeader& header) {
  std::array<uint8_t, kHeaderWireBytes> out{};
  encode_header(header, out.data());
  return out;
}

std::string decode_header(const uint8_t* data, size_t bytes, MessageHeader& h) {
  if (bytes < kHeaderWireBytes)
    return "truncated header: " + std::to_string(bytes) + " bytes, expected " +
           std::to_string(kHeaderWireBytes);
  Reader r{data};
  const uint32_t magic = r.u32();
  if (magic != kHeaderMagic) {
    std::ostringstream os;
    os << "not a geopipe message (magic 0x" << std::hex << magic << ", expected 0x" << kHeaderMagic
       << ")";
    return os.str();
  }
  const uint16_t version = r.u16();
  if (version != kHeaderVersion)
    return "header version " + std::to_string(version) + ", this build speaks version " +
           std::to_string(kHeaderVersion);
  const uint16_t wire = r.u16();
  if (wire != kHeaderWireBytes) return "header size field " + std::to_string(wire) + ", expected " +
                                       std::to_string(kHeaderWireBytes);
  const uint32_t stored = data[140] | (uint32_t(data[141]) << 8) | (uint32_t(data[142]) << 16) |
                          (uint32_t(data[143]) << 24);
  const uint32_t actual = crc32c(data, 140);
  if (stored != actual) return "header checksum mismatch (the header was corrupted in transit)";
  h.job = r.u64();
  h.stage = static_cast<int32_t>(r.u32());
  h.micro_batch = static_cast<int32_t>(r.u32());
  const uint8_t kind = r.u8();
  const uint8_t elem = r.u8();
  const uint8_t ndim = r.u8();
  const uint8_t codec_len = r.u8();
  if (kind > static_cast<uint8_t>(MessageKind::kControl)) return "unknown message kind " + std::to_string(kind);
  if (elem > static_cast<uint8_t>(ElemType::kFloat64)) return "unknown element type " + std::to_string(elem);
  if (ndim > kMaxDims) return "header has " + std::to_string(ndim) + " dims, at most 8";
  if (codec_len == 0 || codec_len > kMaxCodecName) return "bad codec name length " + std::to_string(codec_len);
  h.kind = static_cast<MessageKind>(kind);
  h.elem_type = static_cast<ElemType>(elem);
  h.flags = r.u32();
  h.shape.assign(ndim, 0);
  for (int i = 0; i < kMaxDims; ++i) {
    const auto d = static_cast<int64_t>(r.u64());
    if (i < ndim) {
      if (d < 0) return "negative dimension in header shape";
      h.shape[i] = d;
    }
  }
  // numel() and the payload check multiply the dims: refuse a tensor of 2^63 bytes or more.
  uint64_t tensor_bytes = elem_type_bytes(h.elem_type);
  for (int64_t d : h.shape)
    if (__builtin_mul_overflow(tensor_bytes, static_cast<uint64_t>(d), &tensor_bytes) ||
        tensor_bytes > static_cast<uint64_t>(INT64_MAX))
      return "header shape " + shape_str(h.shape) + " is too large (2^63 bytes or more)";
  h.payload_bytes = r.u64();
  h.seq = r.u32();
  h.src_rank = static_cast<int32_t>(r.u32());
  h.crc32c = r.u32();
  h.codec.assign(reinterpret_cast<const char*>(data + 116), codec_len);
  return {};
}

std::string MessageHeader::describe() const {
  std::ostringstream os;
  os << "kind=" << kind_name(kind) << " job=" << job << " stage=" << stage << " mb=" << micro_batch
     << " " << elem_type_name(elem_type) << shape_str(shape) << " codec=" << codec << " "
     << payload_bytes << " B";
  return os.str();
}

std::string check_header(const MessageHeader& h, const Expect& e) {
  std::ostringstream os;
  auto sep = [&os]() -> std::ostringstream& {
    if (os.tellp() > 0) os << "; ";
    return os;
  };
  if (e.job && *e.job != h.job) sep() << "job: expected " << *e.job << ", got " << h.job;
  if (e.stage && *e.stage != h.stage) sep() << "stage: expected " << *e.stage << ", got " << h.stage;
  if (e.micro_batch && *e.micro_batch != h.micro_batch)
    sep() << "micro_batch: expected " << *e.micro_batch << ", got " << h.micro_batch;
  if (e.kind && *e.kind != h.kind)
    sep() << "kind: expected " << kind_name(*e.kind) << ", got " << kind_name(h.kind);
  if (e.elem_type && *e.elem_type != h.elem_type)
    sep() << "dtype: expected " << elem_type_name(*e.elem_type) << ", got " << elem_type_name(h.elem_type);
  if (e.shape && *e.shape != h.shape)
    sep() << "shape: expected " << shape_str(*e.shape) << ", got " << shape_str(h.shape);
  if (e.codec && *e.codec != h.codec) sep() << "codec: expected " << *e.codec << ", got " << h.codec;
  if (e.payload_bytes && *e.payload_bytes != h.payload_bytes)
    sep() << "payload: expected " << *e.payload_bytes << " bytes, got " << h.payload_bytes;
  if (h.codec == "none" && !h.shape.empty()) {
    const uint64_t want = static_cast<uint64_t>(h.numel()) * elem_type_bytes(h.elem_type);
    if (want != h.payload_bytes)
      sep() << "payload of " << h.payload_bytes << " bytes does not hold "
            << elem_type_name(h.elem_type) << shape_str(h.shape) << " (" << want << " bytes)";
  }
  return os.str();
}

}  // namespace geopipe::comm
