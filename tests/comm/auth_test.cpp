// SHA-256 against FIPS 180-4's examples, HMAC-SHA256 against RFC 4231, and the header tag.
#include <geopipe/comm/auth.h>
#include <geopipe/comm/header.h>
#include <geopipe/core/error.h>

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <unistd.h>

using namespace geopipe;
using namespace geopipe::comm;

namespace {

std::string hex(const Sha256Digest& d, size_t bytes = 32) {
  std::string s;
  char b[3];
  for (size_t i = 0; i < bytes; ++i) {
    std::snprintf(b, sizeof b, "%02x", d[i]);
    s += b;
  }
  return s;
}
std::string sha(const std::string& m) { return hex(Sha256::hash(m.data(), m.size())); }
std::string hmac(const std::string& k, const std::string& m, size_t bytes = 32) {
  return hex(hmac_sha256(k.data(), k.size(), m.data(), m.size()), bytes);
}

std::vector<uint8_t> key_bytes(uint8_t first, size_t n = 32) {
  std::vector<uint8_t> k(n);
  for (size_t i = 0; i < n; ++i) k[i] = static_cast<uint8_t>(first + i);
  return k;
}

std::array<uint8_t, kHeaderWireBytes> sample_header() {
  MessageHeader h;
  h.job = 42;
  h.stage = 1;
  h.micro_batch = 7;
  h.kind = MessageKind::kActivation;
  h.elem_type = ElemType::kFloat32;
  h.shape = {4, 8};
  h.payload_bytes = 128;
  h.crc32c = 0x12345678;
  h.flags = kFlagHasChecksum | kFlagAuthTag;
  h.src_rank = 3;
  h.seq = 99;
  return encode_header(h);
}

}  // namespace

TEST(Sha256, MatchesTheFips180ExamplesWithAndWithoutTheCpusShaInstructions) {
  const bool hardware = sha256_hardware();
  for (bool use : {false, true}) {
    sha256_use_hardware(use);
    SCOPED_TRACE(sha256_hardware() ? "SHA instructions" : "portable");
    EXPECT_EQ(sha(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    EXPECT_EQ(sha("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    EXPECT_EQ(sha("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
              "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    EXPECT_EQ(sha("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu"),
              "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
    EXPECT_EQ(sha(std::string(1000000, 'a')),
              "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  }
  sha256_use_hardware(hardware);
}

TEST(Sha256, IncrementalUpdatesEqualOneShot) {
  const std::string m(1000, 'x');
  // Padding that spills into a second block (55, 56, 63 bytes in the last block) included.
  for (size_t split : {size_t(0), size_t(1), size_t(55), size_t(56), size_t(63), size_t(64), size_t(65), size_t(999)}) {
    Sha256 s;
    s.update(m.data(), split).update(m.data() + split, m.size() - split);
    EXPECT_EQ(hex(s.finish()), sha(m)) << "split at " << split;
  }
}

TEST(HmacSha256, MatchesRfc4231) {
  const bool hardware = sha256_hardware();
  for (bool use : {false, true}) {
    sha256_use_hardware(use);
    SCOPED_TRACE(sha256_hardware() ? "SHA instructions" : "portable");
    EXPECT_EQ(hmac(std::string(20, '\x0b'), "Hi There"),
              "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
    EXPECT_EQ(hmac("Jefe", "what do ya want for nothing?"),
              "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    EXPECT_EQ(hmac(std::string(20, '\xaa'), std::string(50, '\xdd')),
              "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe");
    std::string k4;
    for (int i = 1; i <= 25; ++i) k4 += static_cast<char>(i);
    EXPECT_EQ(hmac(k4, std::string(50, '\xcd')),
              "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b");
    EXPECT_EQ(hmac(std::string(20, '\x0c'), "Test With Truncation", 16), "a3b6167473100ee06e0c796c2955552b");
    EXPECT_EQ(hmac(std::string(131, '\xaa'), "Test Using Larger Than Block-Size Key - Hash Key First"),
              "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
    EXPECT_EQ(hmac(std::string(131, '\xaa'),
                   "This is a test using a larger than block-size key and a larger than block-size "
                   "data. The key needs to be hashed before being used by the HMAC algorithm."),
              "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2");
  }
  sha256_use_hardware(hardware);
}

TEST(AuthKey, PrecomputedStatesGiveTheSameMacAsPlainHmac) {
  const auto k = key_bytes(1, 131);  // longer than a block: hashed first
  const AuthKey key(k);
  const std::string m = "pipeline stage 3, micro-batch 17";
  EXPECT_EQ(hex(key.mac(m.data(), m.size())), hex(hmac_sha256(k.data(), k.size(), m.data(), m.size())));
  EXPECT_EQ(hex(key.mac(m.data(), m.size())), hex(key.mac(m.data(), m.size())));  // reusable
}

TEST(AuthKey, ShortKeyIsAnInputError) {
  EXPECT_THROW(AuthKey(key_bytes(0, 31)), InputError);
  EXPECT_NO_THROW(AuthKey(key_bytes(0, 32)));
}

TEST(AuthKey, KeyFileThatIsMissingOrShortIsAnInputErrorNamingIt) {
  const std::string dir = ::testing::TempDir();
  const std::string missing = dir + "geopipe_no_such_key_file";
  try {
    AuthKey::from_file(missing);
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find(missing), std::string::npos) << e.what();
  }
  const std::string shortf = dir + "geopipe_short_key_" + std::to_string(getpid());
  std::ofstream(shortf, std::ios::binary) << std::string(31, 'k');
  try {
    AuthKey::from_file(shortf);
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find(shortf), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("31 bytes, at least 32"), std::string::npos) << e.what();
  }
  std::ofstream(shortf, std::ios::binary) << std::string(32, '\0');  // binary keys are fine
  const AuthKey from_file = AuthKey::from_file(shortf);
  const AuthKey direct(std::vector<uint8_t>(32, 0));
  EXPECT_EQ(hex(from_file.mac("x", 1)), hex(direct.mac("x", 1)));
  std::remove(shortf.c_str());
}

TEST(HeaderTag, SealedHeaderVerifiesAndStillDecodes) {
  const AuthKey key(key_bytes(7));
  auto wire = sample_header();
  seal_header(wire.data(), key);
  EXPECT_TRUE(header_tag_valid(wire.data(), key));
  MessageHeader h;
  EXPECT_EQ(decode_header(wire.data(), wire.size(), h), "");  // header CRC rewritten
  EXPECT_EQ(h.micro_batch, 7);
  EXPECT_TRUE(h.flags & kFlagAuthTag);
}

TEST(HeaderTag, WrongKeyOrAnyChangedHeaderByteFailsTheTag) {
  const AuthKey key(key_bytes(7)), other(key_bytes(8));
  auto wire = sample_header();
  seal_header(wire.data(), key);
  EXPECT_FALSE(header_tag_valid(wire.data(), other));
  // Every authenticated byte matters, including seq, src_rank and the payload CRC.
  for (size_t i = 0; i < 132; ++i) {
    auto bad = wire;
    bad[i] ^= 0x01;
    EXPECT_FALSE(header_tag_valid(bad.data(), key)) << "byte " << i;
  }
  for (size_t i = 132; i < 140; ++i) {  // and the tag itself
    auto bad = wire;
    bad[i] ^= 0x80;
    EXPECT_FALSE(header_tag_valid(bad.data(), key)) << "tag byte " << i;
  }
}
