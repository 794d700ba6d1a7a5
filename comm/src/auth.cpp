#include <geopipe/comm/auth.h>
#include <geopipe/comm/crc32c.h>
#include <geopipe/comm/header.h>

#include <geopipe/core/error.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#include <immintrin.h>
#define GEOPIPE_SHA_X86 1
#endif

namespace geopipe::comm {

namespace {

alignas(16) constexpr uint32_t kK[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

inline uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

#if GEOPIPE_SHA_X86
// The x86 SHA extensions (SHA-NI): four rounds per pair of sha256rnds2, the message schedule by
// sha256msg1/msg2. State kept as ABEF/CDGH as the instructions want it.
__attribute__((target("sha,sse4.1,ssse3"))) void blocks_shani(uint32_t state[8], const uint8_t* data,
                                                                size_t blocks) {
  const __m128i kMask = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
  __m128i tmp = _mm_loadu_si128(reinterpret_cast<const __m128i*>(&state[0]));
  __m128i state1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(&state[4]));
  tmp = _mm_shuffle_epi32(tmp, 0xB1);           // CDAB
  state1 = _mm_shuffle_epi32(state1, 0x1B);     // EFGH
  __m128i state0 = _mm_alignr_epi8(tmp, state1, 8);  // ABEF
  state1 = _mm_blend_epi16(state1, tmp, 0xF0);  // CDGH
  for (; blocks > 0; --blocks, data += 64) {
    const __m128i abef = state0, cdgh = state1;
    __m128i w[4];
    for (int j = 0; j < 16; ++j) {
      __m128i x;
      if (j < 4) {
        x = _mm_shuffle_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(data + 16 * j)), kMask);
      } else {
        x = _mm_sha256msg1_epu32(w[(j - 4) & 3], w[(j - 3) & 3]);
        x = _mm_add_epi32(x, _mm_alignr_epi8(w[(j - 1) & 3], w[(j - 2) & 3], 4));
        x = _mm_sha256msg2_epu32(x, w[(j - 1) & 3]);
      }
      w[j & 3] = x;
      __m128i msg = _mm_add_epi32(x, _mm_loadu_si128(reinterpret_cast<const __m128i*>(&kK[4 * j])));
      state1 = _mm_sha256rnds2_epu32(state1, state0, msg);
      msg = _mm_shuffle_epi32(msg, 0x0E);
      state0 = _mm_sha256rnds2_epu32(state0, state1, msg);
    }
    state0 = _mm_add_epi32(state0, abef);
    state1 = _mm_add_epi32(state1, cdgh);
  }
  tmp = _mm_shuffle_epi32(state0, 0x1B);        // FEBA
  state1 = _mm_shuffle_epi32(state1, 0xB1);     // DCHG
  state0 = _mm_blend_epi16(tmp, state1, 0xF0);  // DCBA
  state1 = _mm_alignr_epi8(state1, tmp, 8);     // ABEF
  _mm_storeu_si128(reinterpret_cast<__m128i*>(&state[0]), state0);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(&state[4]), state1);
}

bool cpu_has_sha() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return false;
  const bool ssse3 = c & (1u << 9), sse41 = c & (1u << 19);
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  return ssse3 && sse41 && (b & (1u << 29));
}
#else
bool cpu_has_sha() { return false; }
#endif

std::atomic<bool>& use_hardware() {
  static std::atomic<bool> on{cpu_has_sha()};
  return on;
}

constexpr size_t kTagOffset = 132;  // header.h: the reserved bytes
constexpr size_t kCrcOffset = 140;

}  // namespace

Sha256::Sha256()
    : h_{0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
         0x5be0cd19} {}

bool sha256_hardware() { return use_hardware().load(std::memory_order_relaxed); }

void sha256_use_hardware(bool on) { use_hardware().store(on && cpu_has_sha()); }

void Sha256::block(const uint8_t* p) {
#if GEOPIPE_SHA_X86
  if (use_hardware().load(std::memory_order_relaxed)) {
    blocks_shani(h_, p, 1);
    return;
  }
#endif
  uint32_t w[64];
  for (int i = 0; i < 16; ++i)
    w[i] = uint32_t(p[4 * i]) << 24 | uint32_t(p[4 * i + 1]) << 16 | uint32_t(p[4 * i + 2]) << 8 |
           uint32_t(p[4 * i + 3]);
  for (int i = 16; i < 64; ++i) {
    const uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
    const uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
    w[i] = w[i - 16] + s0 + w[i - 7] + s1;
  }
  uint32_t a = h_[0], b = h_[1], c = h_[2], d = h_[3], e = h_[4], f = h_[5], g = h_[6], h = h_[7];
  for (int i = 0; i < 64; ++i) {
    const uint32_t t1 = h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + kK[i] + w[i];
    const uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
    h = g;
    g = f;
    f = e;
    e = d + t1;
    d = c;
    c = b;
    b = a;
    a = t1 + t2;
  }
  h_[0] += a; h_[1] += b; h_[2] += c; h_[3] += d;
  h_[4] += e; h_[5] += f; h_[6] += g; h_[7] += h;
}

Sha256& Sha256::update(const void* data, size_t bytes) {
  const auto* p = static_cast<const uint8_t*>(data);
  total_ += bytes;
  if (buf_len_ > 0) {
    const size_t take = std::min(bytes, sizeof buf_ - buf_len_);
    std::memcpy(buf_ + buf_len_, p, take);
    buf_len_ += take;
    p += take;
    bytes -= take;
    if (buf_len_ < sizeof buf_) return *this;
    block(buf_);
    buf_len_ = 0;
  }
  for (; bytes >= 64; p += 64, bytes -= 64) block(p);
  std::memcpy(buf_, p, bytes);
  buf_len_ = bytes;
  return *this;
}

Sha256Digest Sha256::finish() {
  const uint64_t bits = total_ * 8;
  buf_[buf_len_++] = 0x80;  // buf_len_ < 64 always holds between updates
  if (buf_len_ > 56) {
    std::memset(buf_ + buf_len_, 0, 64 - buf_len_);
    block(buf_);
    buf_len_ = 0;
  }
  std::memset(buf_ + buf_len_, 0, 56 - buf_len_);
  for (int i = 0; i < 8; ++i) buf_[56 + i] = static_cast<uint8_t>(bits >> (56 - 8 * i));
  block(buf_);
  buf_len_ = 0;
  Sha256Digest out;
  for (int i = 0; i < 8; ++i)
    for (int k = 0; k < 4; ++k) out[4 * i + k] = static_cast<uint8_t>(h_[i] >> (24 - 8 * k));
  return out;
}

Sha256Digest Sha256::hash(const void* data, size_t bytes) { return Sha256().update(data, bytes).finish(); }

namespace {

// The HMAC's two padded key blocks absorbed into fresh hashes.
void hmac_states(const void* key, size_t key_bytes, Sha256& inner, Sha256& outer) {
  uint8_t block[64] = {0};
  if (key_bytes > sizeof block) {
    const Sha256Digest d = Sha256::hash(key, key_bytes);
    std::memcpy(block, d.data(), d.size());
  } else if (key_bytes > 0) {
    std::memcpy(block, key, key_bytes);
  }
  uint8_t ipad[64], opad[64];
  for (int i = 0; i < 64; ++i) {
    ipad[i] = block[i] ^ 0x36;
    opad[i] = block[i] ^ 0x5c;
  }
  inner = Sha256();
  inner.update(ipad, 64);
  outer = Sha256();
  outer.update(opad, 64);
}

Sha256Digest hmac_finish(Sha256 inner, Sha256 outer, const void* data, size_t bytes) {
  const Sha256Digest in = inner.update(data, bytes).finish();
  return outer.update(in.data(), in.size()).finish();
}

}  // namespace

Sha256Digest hmac_sha256(const void* key, size_t key_bytes, const void* data, size_t bytes) {
  Sha256 inner, outer;
  hmac_states(key, key_bytes, inner, outer);
  return hmac_finish(inner, outer, data, bytes);
}

AuthKey::AuthKey(const std::vector<uint8_t>& key, const std::string& what) {
  if (key.size() < kMinAuthKeyBytes)
    throw InputError(what, "", "the key has " + std::to_string(key.size()) + " bytes, at least " +
                                   std::to_string(kMinAuthKeyBytes) + " are needed");
  hmac_states(key.data(), key.size(), inner_, outer_);
}

std::vector<uint8_t> read_auth_key_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw InputError(path, "", std::string("cannot read the authentication key file: ") +
                                   std::strerror(errno));
  std::vector<uint8_t> key((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) throw InputError(path, "", "cannot read the authentication key file");
  if (key.size() < kMinAuthKeyBytes)
    throw InputError(path, "", "the key has " + std::to_string(key.size()) + " bytes, at least " +
                                   std::to_string(kMinAuthKeyBytes) + " are needed");
  return key;
}

AuthKey AuthKey::from_file(const std::string& path) { return AuthKey(read_auth_key_file(path), path); }

Sha256Digest AuthKey::mac(const void* data, size_t bytes) const {
  return hmac_finish(inner_, outer_, data, bytes);
}

void seal_header(uint8_t* wire, const AuthKey& key) {
  const Sha256Digest tag = key.mac(wire, kTagOffset);
  std::memcpy(wire + kTagOffset, tag.data(), kAuthTagBytes);
  const uint32_t crc = crc32c(wire, kCrcOffset);
  for (int i = 0; i < 4; ++i) wire[kCrcOffset + i] = static_cast<uint8_t>(crc >> (8 * i));
}

bool header_tag_valid(const uint8_t* wire, const AuthKey& key) {
  const Sha256Digest tag = key.mac(wire, kTagOffset);
  uint8_t diff = 0;
  for (size_t i = 0; i < kAuthTagBytes; ++i) diff |= static_cast<uint8_t>(tag[i] ^ wire[kTagOffset + i]);
  return diff == 0;
}

static_assert(kTagOffset + kAuthTagBytes == kCrcOffset && kCrcOffset + 4 == kHeaderWireBytes,
              "the tag fills the header's reserved bytes");

}  // namespace geopipe::comm
