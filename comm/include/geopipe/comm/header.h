// The message header every geopipe message carries (magic, version, job, stage, micro-batch,
// kind, element type, shape, codec, payload bytes, CRC32C of the payload), its fixed
// little-endian wire form, and the receiver's check of an arrived header against what it
// expected. No MPI, no LibTorch: unit-testable on its own.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace geopipe::comm {

inline constexpr uint32_t kHeaderMagic = 0x50495047;  // "GPIP" little-endian
inline constexpr uint16_t kHeaderVersion = 1;
inline constexpr size_t kHeaderWireBytes = 144;       // fixed size on the wire
inline constexpr int kMaxDims = 8;
inline constexpr size_t kMaxCodecName = 15;           // codec names up to 15 characters

// What a message carries. The runtime uses activation/gradient; kBytes is an opaque buffer.
enum class MessageKind : uint8_t { kBytes = 0, kActivation = 1, kGradient = 2, kControl = 3 };

// Element type of the (decoded) tensor. Stable numbering: it is on the wire.
enum class ElemType : uint8_t {
  kUInt8 = 0, kInt8 = 1, kInt32 = 2, kInt64 = 3,
  kFloat16 = 4, kBFloat16 = 5, kFloat32 = 6, kFloat64 = 7,
};
size_t elem_type_bytes(ElemType type);

// Flag bits of MessageHeader::flags.
inline constexpr uint32_t kFlagHasChecksum = 1u << 0;  // crc32c is valid and must be checked
inline constexpr uint32_t kFlagOutOfBand = 1u << 1;    // payload travels elsewhere (NCCL)
inline constexpr uint32_t kFlagAuthTag = 1u << 2;      // bytes [132, 140) hold an HMAC tag (auth.h)

struct MessageHeader {
  uint64_t job = 0;            // job id (e.g. a hash of the job name); 0 = unspecified
  int32_t stage = -1;          // sending stage, -1 = unspecified
  int32_t micro_batch = -1;    // -1 = unspecified
  MessageKind kind = MessageKind::kBytes;
  ElemType elem_type = ElemType::kUInt8;
  std::vector<int64_t> shape;  // decoded tensor shape, at most kMaxDims dims (empty: opaque bytes)
  std::string codec = "none";  // "none" or a kernels codec name (core/plan.h known_codec_names)
  // Filled in by the transport on send; read them on the receiving side.
  uint64_t payload_bytes = 0;  // bytes on the wire after the header (compressed size if codec != none)
  uint32_t crc32c = 0;         // CRC32C of the payload when flags has kFlagHasChecksum
  uint32_t flags = 0;
  int32_t src_rank = -1;       // sender's rank
  uint32_t seq = 0;            // per (sender, receiver) sequence number

  int64_t numel() const;       // product of shape (1 for an empty shape)
  std::string describe() const;  // "kind=activation job=.. stage=1 mb=3 fp32[4,8] codec=none 128 B"
};

// Encodes into exactly kHeaderWireBytes bytes (little-endian, with a CRC32C of the header
// itself in the last 4 bytes). Throws geopipe::Error for a header that cannot be encoded
// (too many dims, codec name too long, negative dim).
void encode_header(const MessageHeader& header, uint8_t* out);
std::array<uint8_t, kHeaderWireBytes> encode_header(const MessageHeader& header);

// Decodes and validates the wire form: magic, version, header checksum, enum ranges, dims.
// Returns an error message (empty on success) instead of throwing: the caller adds who sent it.
std::string decode_header(const uint8_t* data, size_t bytes, MessageHeader& out);

// What the receiver expects of a message. Every field that is set must match the header.
struct Expect {
  std::optional<uint64_t> job;
  std::optional<int32_t> stage;
  std::optional<int32_t> micro_batch;
  std::optional<MessageKind> kind;
  std::optional<ElemType> elem_type;
  std::optional<std::vector<int64_t>> shape;
  std::optional<std::string> codec;
  std::optional<uint64_t> payload_bytes;
};

// Empty when `header` satisfies `expect`, and the header is self-consistent (with codec
// "none" and a non-empty shape the payload is exactly numel * element size); otherwise every mismatch, e.g.
// "micro_batch: expected 3, got 4; shape: expected [4,8], got [4,9]".
std::string check_header(const MessageHeader& header, const Expect& expect);

}  // namespace geopipe::comm
