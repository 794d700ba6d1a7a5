#include <geopipe/comm/crc32c.h>

#include <array>
#include <cstring>

#if defined(__x86_64__) || defined(__i386__)
#include <nmmintrin.h>
#define GEOPIPE_CRC_X86 1
#endif

namespace geopipe::comm {

namespace {

constexpr uint32_t kPoly = 0x82F63B78u;  // reflected Castagnoli polynomial

// Slicing-by-8 tables: table[k][b] is the CRC of byte b followed by k zero bytes.
struct Tables {
  std::array<std::array<uint32_t, 256>, 8> t{};
  Tables() {
    for (uint32_t b = 0; b < 256; ++b) {
      uint32_t c = b;
      for (int i = 0; i < 8; ++i) c = (c >> 1) ^ (kPoly & (0u - (c & 1u)));
      t[0][b] = c;
    }
    for (uint32_t b = 0; b < 256; ++b)
      for (int k = 1; k < 8; ++k) t[k][b] = (t[k - 1][b] >> 8) ^ t[0][t[k - 1][b] & 0xFF];
  }
};

const Tables& tables() {
  static const Tables instance;
  return instance;
}

uint32_t crc32c_software(const uint8_t* p, size_t n, uint32_t crc) {
  const auto& t = tables().t;
  while (n >= 8) {
    uint64_t word;
    std::memcpy(&word, p, 8);
    word ^= crc;  // little-endian hosts (x86-64, aarch64)
    crc = t[7][word & 0xFF] ^ t[6][(word >> 8) & 0xFF] ^ t[5][(word >> 16) & 0xFF] ^
          t[4][(word >> 24) & 0xFF] ^ t[3][(word >> 32) & 0xFF] ^ t[2][(word >> 40) & 0xFF] ^
          t[1][(word >> 48) & 0xFF] ^ t[0][word >> 56];
    p += 8;
    n -= 8;
  }
  while (n--) crc = (crc >> 8) ^ t[0][(crc ^ *p++) & 0xFF];
  return crc;
}

#ifdef GEOPIPE_CRC_X86
// One lane: the raw CRC register over n bytes with the crc32 instruction.
__attribute__((target("sse4.2"))) uint64_t lane_sse42(const uint8_t* p, size_t n, uint64_t c) {
  for (; n >= 8; p += 8, n -= 8) {
    uint64_t word;
    std::memcpy(&word, p, 8);
    c = _mm_crc32_u64(c, word);
  }
  uint32_t c32 = static_cast<uint32_t>(c);
  while (n--) c32 = _mm_crc32_u8(c32, *p++);
  return c32;
}

// The crc32 instruction has a latency of 3 cycles and a throughput of 1 per cycle, so three
// independent lanes over consecutive kLane-byte blocks run about three times faster than one.
// The raw register is affine in its start value: crc(s, A|B|C) = Z(Z(a) ^ b) ^ c with
// a = crc(s, A), b = crc(0, B), c = crc(0, C), where Z (appending kLane zero bytes) is linear
// over GF(2) and is applied with four 256-entry tables.
constexpr size_t kLane = 4096;

struct ZeroShift {
  uint32_t t[4][256];
  ZeroShift() {
    static const uint8_t zeros[kLane] = {};
    uint32_t basis[32];
    for (int i = 0; i < 32; ++i) basis[i] = static_cast<uint32_t>(lane_sse42(zeros, kLane, 1u << i));
    for (int k = 0; k < 4; ++k)
      for (uint32_t v = 0; v < 256; ++v) {
        uint32_t r = 0;
        for (int j = 0; j < 8; ++j)
          if (v & (1u << j)) r ^= basis[8 * k + j];
        t[k][v] = r;
      }
  }
  uint32_t operator()(uint32_t c) const {
    return t[0][c & 0xFF] ^ t[1][(c >> 8) & 0xFF] ^ t[2][(c >> 16) & 0xFF] ^ t[3][c >> 24];
  }
};

__attribute__((target("sse4.2"))) uint32_t crc32c_sse42(const uint8_t* p, size_t n, uint32_t crc) {
  uint64_t c = crc;
  if (n >= 3 * kLane) {
    static const ZeroShift shift;
    while (n >= 3 * kLane) {
      uint64_t a = c, b = 0, d = 0;
      for (size_t i = 0; i < kLane; i += 8) {
        uint64_t wa, wb, wd;
        std::memcpy(&wa, p + i, 8);
        std::memcpy(&wb, p + kLane + i, 8);
        std::memcpy(&wd, p + 2 * kLane + i, 8);
        a = _mm_crc32_u64(a, wa);
        b = _mm_crc32_u64(b, wb);
        d = _mm_crc32_u64(d, wd);
      }
      c = shift(shift(static_cast<uint32_t>(a)) ^ static_cast<uint32_t>(b)) ^ static_cast<uint32_t>(d);
      p += 3 * kLane;
      n -= 3 * kLane;
    }
  }
  return static_cast<uint32_t>(lane_sse42(p, n, c));
}

bool detect_sse42() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("sse4.2");
}
#endif

}  // namespace

bool crc32c_hardware() {
#ifdef GEOPIPE_CRC_X86
  static const bool has = detect_sse42();
  return has;
#else
  return false;
#endif
}

uint32_t crc32c_portable(const void* data, size_t bytes, uint32_t crc) {
  return ~crc32c_software(static_cast<const uint8_t*>(data), bytes, ~crc);
}

uint32_t crc32c(const void* data, size_t bytes, uint32_t crc) {
  const auto* p = static_cast<const uint8_t*>(data);
  crc = ~crc;
#ifdef GEOPIPE_CRC_X86
  if (crc32c_hardware()) return ~crc32c_sse42(p, bytes, crc);
#endif
  return ~crc32c_software(p, bytes, crc);
}

}  // namespace geopipe::comm
