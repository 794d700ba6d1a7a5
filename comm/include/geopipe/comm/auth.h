// Message authentication with a per-job shared key: SHA-256 (FIPS 180-4) and HMAC-SHA256
// (RFC 2104), written here so that geopipe needs no crypto library, and the header tag built on
// them. No MPI, no LibTorch: unit-tested against the FIPS 180-4 and RFC 4231 vectors.
//
// The tag authenticates the encoded message header: bytes [0, 132) of its wire form (header.h),
// which hold the job, stage, micro-batch, kind, shape, codec, payload size, the sender's rank,
// the per-peer sequence number, the flags and the CRC32C of the payload. It is HMAC-SHA256 over
// those bytes, truncated to its first 8 bytes and stored in the header's 8 reserved bytes
// [132, 140) (the header CRC at 140 is recomputed over it), with flag kFlagAuthTag set. The wire
// size and layout do not change. Why 64 bits: a forgery must be guessed online, one try per
// message, and the first refused message stops the job, so an attacker gets one 2^-64 chance
// per job run. NIST SP 800-107 Rev. 1 (section 5.3.3) allows truncated HMAC tags and
// discourages only those shorter than 64 bits.
//
// Not a MAC of the payload: the tag covers the payload's CRC32C, and CRC32C is linear, so whoever
// can rewrite payload bytes on the wire can keep the CRC (and so the tag) valid. See
// docs/SECURITY.md.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace geopipe::comm {

using Sha256Digest = std::array<uint8_t, 32>;

class Sha256 {
 public:
  Sha256();
  Sha256& update(const void* data, size_t bytes);
  Sha256Digest finish();  // the digest; the object must not be updated afterwards
  static Sha256Digest hash(const void* data, size_t bytes);

 private:
  void block(const uint8_t* p);
  uint32_t h_[8];
  uint8_t buf_[64];
  size_t buf_len_ = 0;
  uint64_t total_ = 0;
};

// Does Sha256 use the CPU's SHA instructions (x86 SHA-NI)? On by default where present.
bool sha256_hardware();
// Tests and benchmarks: false forces the portable code (true only where the CPU has them).
void sha256_use_hardware(bool on);

// HMAC-SHA256 (RFC 2104 / FIPS 198-1) of `data` under `key` (any length).
Sha256Digest hmac_sha256(const void* key, size_t key_bytes, const void* data, size_t bytes);

inline constexpr size_t kMinAuthKeyBytes = 32;  // a per-job key: at least 256 bits
inline constexpr size_t kAuthTagBytes = 8;      // truncated HMAC in the header (see above)

// Reads a key file (binary, the whole file is the key; e.g. `head -c 32 /dev/urandom > job.key`).
// Throws InputError naming the file when it cannot be read or is shorter than kMinAuthKeyBytes.
std::vector<uint8_t> read_auth_key_file(const std::string& path);

// A job's key with the HMAC's inner and outer states precomputed (two compressions saved per
// message). Copyable, immutable, thread-safe to use.
class AuthKey {
 public:
  // Throws InputError naming `what` when the key is shorter than kMinAuthKeyBytes.
  explicit AuthKey(const std::vector<uint8_t>& key, const std::string& what = "auth key");
  // read_auth_key_file(path) as a key.
  static AuthKey from_file(const std::string& path);

  Sha256Digest mac(const void* data, size_t bytes) const;

 private:
  Sha256 inner_, outer_;  // after absorbing key ^ ipad / key ^ opad
};

// Sender: computes the tag of an encoded header (kHeaderWireBytes bytes whose flags already
// include kFlagAuthTag), stores it in the reserved bytes and rewrites the header CRC.
void seal_header(uint8_t* wire, const AuthKey& key);
// Receiver: does the tag in an encoded header match? (Constant-time comparison.)
bool header_tag_valid(const uint8_t* wire, const AuthKey& key);

}  // namespace geopipe::comm
