// CRC32C: published check values, every implementation this CPU can run against the table and a
// bit-at-a-time reference (all lengths to 4 KiB, every misalignment, lengths to 70000 around
// each lane-round boundary, a few MiB), and the continuation property for every split.
#include <geopipe/comm/crc32c.h>

#include "crc32c_paths.h"

#include <gtest/gtest.h>

#include <numeric>
#include <string>
#include <utility>
#include <vector>

using namespace geopipe::comm;

namespace {

// splitmix64 as bytes (little-endian words): the same stream as the Python script that computed
// the expected values below with its own table implementation.
std::vector<uint8_t> pseudo_random_bytes(uint64_t seed, size_t n) {
  std::vector<uint8_t> out(n);
  uint64_t s = seed;
  for (size_t i = 0; i < n; i += 8) {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    for (size_t k = 0; k < 8 && i + k < n; ++k) out[i + k] = static_cast<uint8_t>(z >> (8 * k));
  }
  return out;
}

// The definition, one bit at a time (reflected polynomial 0x82F63B78); shares no code with the
// table or the hardware paths.
uint32_t crc32c_bitwise(const uint8_t* p, size_t n, uint32_t crc = 0) {
  crc = ~crc;
  while (n--) {
    crc ^= *p++;
    for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
  }
  return ~crc;
}

std::vector<Crc32cPath> available_paths() {
  std::vector<Crc32cPath> paths;
  for (Crc32cPath p : {Crc32cPath::kTable, Crc32cPath::kSse42, Crc32cPath::kSse42Pclmul})
    if (crc32c_path_available(p)) paths.push_back(p);
  return paths;
}

}  // namespace

// Known answers from RFC 3720 (iSCSI) appendix B.4 and the common "123456789" check value.
TEST(Crc32c, MatchesPublishedCheckValues) {
  const std::string check = "123456789";
  EXPECT_EQ(crc32c(check.data(), check.size()), 0xE3069283u);
  std::vector<uint8_t> zeros(32, 0), ones(32, 0xFF), ascending(32), descending(32);
  std::iota(ascending.begin(), ascending.end(), 0);
  for (int i = 0; i < 32; ++i) descending[i] = static_cast<uint8_t>(31 - i);
  EXPECT_EQ(crc32c(zeros.data(), 32), 0x8A9136AAu);
  EXPECT_EQ(crc32c(ones.data(), 32), 0x62A8AB43u);
  EXPECT_EQ(crc32c(ascending.data(), 32), 0x46DD794Eu);
  EXPECT_EQ(crc32c(descending.data(), 32), 0x113FDB5Cu);
  EXPECT_EQ(crc32c(nullptr, 0), 0u);
}

TEST(Crc32c, ContinuesAcrossPiecesOfAnyAlignment) {
  std::vector<uint8_t> data(1000);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i * 7 + 3);
  const uint32_t whole = crc32c(data.data(), data.size());
  for (size_t split : {1u, 3u, 8u, 13u, 500u, 999u}) {
    const uint32_t first = crc32c(data.data(), split);
    EXPECT_EQ(crc32c(data.data() + split, data.size() - split, first), whole) << "split " << split;
  }
}

TEST(Crc32c, InterleavedHardwarePathMatchesTheTableForEveryLength) {
  // Long enough for several 3 x 4096-byte interleaved blocks plus every kind of remainder.
  std::vector<uint8_t> data(3 * 4096 * 5 + 777);
  uint32_t x = 12345;
  for (auto& b : data) {
    x = x * 1103515245u + 12345u;
    b = static_cast<uint8_t>(x >> 16);
  }
  for (size_t n : {size_t(0), size_t(7), size_t(3 * 4096 - 1), size_t(3 * 4096), size_t(3 * 4096 + 1),
                   size_t(2 * 3 * 4096 + 9), data.size()}) {
    EXPECT_EQ(crc32c(data.data(), n), crc32c_portable(data.data(), n)) << "length " << n;
    EXPECT_EQ(crc32c(data.data() + 1, n - (n > 0)), crc32c_portable(data.data() + 1, n - (n > 0)))
        << "unaligned, length " << n;
  }
  EXPECT_EQ(crc32c(data.data() + 100, 50000, 0xABCDEF01u), crc32c_portable(data.data() + 100, 50000, 0xABCDEF01u));
}

TEST(Crc32c, DetectsASingleFlippedBit) {
  std::vector<uint8_t> data(4096, 0x11);
  const uint32_t before = crc32c(data.data(), data.size());
  data[1234] ^= 0x04;
  EXPECT_NE(crc32c(data.data(), data.size()), before);
}

TEST(Crc32c, EveryPathMatchesPublishedAndPrecomputedValues) {
  const std::string check = "123456789";
  std::vector<uint8_t> zeros(32, 0), ascending(32);
  std::iota(ascending.begin(), ascending.end(), 0);
  // Long inputs, values computed independently (a Python table implementation over the same
  // splitmix64 bytes): several 4096-byte rounds, every shorter round and a tail.
  const auto big = pseudo_random_bytes(1, 3 * 1024 * 1024 + 13);
  const auto mid = pseudo_random_bytes(2, 70001);
  ASSERT_EQ(big[0], 0xC1);  // the generator is the one the values were computed with
  ASSERT_EQ(big[15], 0xBE);
  for (Crc32cPath path : available_paths()) {
    SCOPED_TRACE(crc32c_path_name(path));
    EXPECT_EQ(crc32c_on_path(path, check.data(), check.size()), 0xE3069283u);
    EXPECT_EQ(crc32c_on_path(path, zeros.data(), 32), 0x8A9136AAu);
    EXPECT_EQ(crc32c_on_path(path, ascending.data(), 32), 0x46DD794Eu);
    EXPECT_EQ(crc32c_on_path(path, nullptr, 0), 0u);
    EXPECT_EQ(crc32c_on_path(path, nullptr, 0, 0xE3069283u), 0xE3069283u);
    EXPECT_EQ(crc32c_on_path(path, big.data(), big.size()), 0x8D6A1929u);
    EXPECT_EQ(crc32c_on_path(path, big.data() + 5, 1000003, 0x12345678u), 0x7AC2E02Eu);
    EXPECT_EQ(crc32c_on_path(path, mid.data(), mid.size()), 0x5FE68BFFu);
    EXPECT_EQ(crc32c_on_path(path, mid.data() + 1, 12289), 0xD4FE4EF1u);
  }
  EXPECT_EQ(crc32c_bitwise(reinterpret_cast<const uint8_t*>(check.data()), check.size()), 0xE3069283u);
  EXPECT_EQ(crc32c_bitwise(mid.data(), mid.size()), 0x5FE68BFFu);
}

TEST(Crc32c, UsesTheFastestPathThisCpuHas) {
  const Crc32cPath best = crc32c_best_path();
  EXPECT_STREQ(crc32c_implementation(), crc32c_path_name(best));
  EXPECT_EQ(crc32c_hardware(), best != Crc32cPath::kTable);
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("sse4.2") && __builtin_cpu_supports("pclmul")) {
    EXPECT_EQ(best, Crc32cPath::kSse42Pclmul);
  } else if (__builtin_cpu_supports("sse4.2")) {
    EXPECT_EQ(best, Crc32cPath::kSse42);
  }
#endif
}

TEST(Crc32c, EveryPathMatchesTheTableForEveryLengthAndMisalignment) {
  const auto data = pseudo_random_bytes(3, 70000 + 16);
  const auto paths = available_paths();
  // Every length to 4200 (all rounds of 3 x 64, 256, 1024 bytes and their remainders) at every
  // misalignment 0..8, starting from 0 and from an arbitrary value.
  for (size_t offset = 0; offset <= 8; ++offset)
    for (size_t n = 0; n <= 4200; ++n) {
      const uint32_t start = offset % 2 ? 0u : 0x9E3779B9u * static_cast<uint32_t>(n + 1);
      const uint32_t want = crc32c_portable(data.data() + offset, n, start);
      for (Crc32cPath path : paths)
        ASSERT_EQ(crc32c_on_path(path, data.data() + offset, n, start), want)
            << crc32c_path_name(path) << " length " << n << " offset " << offset;
    }
  // Longer: each side of the multiples of a round (3 x 64, 256, 1024, 4096 bytes; the short ones
  // to 20000) and a spread of other lengths, up to 70000.
  std::vector<size_t> lengths;
  for (size_t round : {192u, 768u, 3072u, 12288u})
    for (size_t k = round; k <= (round < 3072 ? 20000u : 70000u); k += round)
      for (size_t d : {size_t(0), size_t(1), size_t(7), size_t(8), size_t(9), size_t(63), size_t(64), size_t(65)})
        for (size_t n : {k - d, k + d})
          if (n > 4200 && n <= 70000) lengths.push_back(n);
  for (size_t n = 4201; n <= 70000; n += 331) lengths.push_back(n);
  lengths.push_back(70000);
  for (size_t n : lengths)
    for (size_t offset : {size_t(0), size_t(1), size_t(4), size_t(7), size_t(13)}) {
      if (offset + n > data.size()) continue;
      const uint32_t want = crc32c_portable(data.data() + offset, n);
      for (Crc32cPath path : paths)
        ASSERT_EQ(crc32c_on_path(path, data.data() + offset, n), want)
            << crc32c_path_name(path) << " length " << n << " offset " << offset;
    }
  // A few MiB, the sizes messages are chunked into.
  const auto big = pseudo_random_bytes(4, (4u << 20) + 16);
  for (size_t n : {size_t(1) << 20, (size_t(3) << 20) + 4097, size_t(4) << 20})
    for (size_t offset : {size_t(0), size_t(3)}) {
      if (offset + n > big.size()) continue;
      const uint32_t want = crc32c_portable(big.data() + offset, n, 0xFFFFFFFFu);
      for (Crc32cPath path : paths)
        EXPECT_EQ(crc32c_on_path(path, big.data() + offset, n, 0xFFFFFFFFu), want)
            << crc32c_path_name(path) << " length " << n << " offset " << offset;
    }
}

TEST(Crc32c, EveryPathContinuesAcrossEverySplit) {
  // crc(b, crc(a)) == crc(a + b) for every split point of a 13,000-byte buffer (pieces of every
  // length and alignment, the whole spanning a 4096-byte round and every shorter one), and for
  // three pieces at pseudo-random cut points.
  const auto data = pseudo_random_bytes(5, 13001);
  const uint8_t* p = data.data() + 1;  // the whole is unaligned too
  const size_t n = 13000;
  const uint32_t whole = crc32c_bitwise(p, n);
  for (Crc32cPath path : available_paths()) {
    SCOPED_TRACE(crc32c_path_name(path));
    ASSERT_EQ(crc32c_on_path(path, p, n), whole);
    for (size_t split = 0; split <= n; ++split) {
      const uint32_t first = crc32c_on_path(path, p, split);
      ASSERT_EQ(crc32c_on_path(path, p + split, n - split, first), whole) << "split " << split;
    }
    uint64_t s = 42;
    for (int i = 0; i < 2000; ++i) {
      s = s * 6364136223846793005ull + 1442695040888963407ull;
      size_t cut1 = (s >> 33) % (n + 1), cut2 = (s >> 13) % (n + 1);
      if (cut1 > cut2) std::swap(cut1, cut2);
      uint32_t c = crc32c_on_path(path, p, cut1);
      c = crc32c_on_path(path, p + cut1, cut2 - cut1, c);
      ASSERT_EQ(crc32c_on_path(path, p + cut2, n - cut2, c), whole) << "cuts " << cut1 << ", " << cut2;
    }
  }
}
