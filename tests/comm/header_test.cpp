#include <geopipe/comm/header.h>
#include <geopipe/core/error.h>

#include <gtest/gtest.h>

#include <string>
#include <vector>

using namespace geopipe;
using namespace geopipe::comm;

namespace {

MessageHeader activation_header() {
  MessageHeader h;
  h.job = 0x1234567890abcdefull;
  h.stage = 2;
  h.micro_batch = 7;
  h.kind = MessageKind::kActivation;
  h.elem_type = ElemType::kBFloat16;
  h.shape = {4, 128, 768};
  h.codec = "fp8-e4m3-block";
  h.payload_bytes = 393216;
  h.crc32c = 0xdeadbeef;
  h.flags = kFlagHasChecksum;
  h.src_rank = 3;
  h.seq = 42;
  return h;
}

}  // namespace

TEST(MessageHeader, RoundTripsEveryField) {
  const MessageHeader h = activation_header();
  auto wire = encode_header(h);
  MessageHeader back;
  ASSERT_EQ(decode_header(wire.data(), wire.size(), back), "");
  EXPECT_EQ(back.job, h.job);
  EXPECT_EQ(back.stage, h.stage);
  EXPECT_EQ(back.micro_batch, h.micro_batch);
  EXPECT_EQ(back.kind, h.kind);
  EXPECT_EQ(back.elem_type, h.elem_type);
  EXPECT_EQ(back.shape, h.shape);
  EXPECT_EQ(back.codec, h.codec);
  EXPECT_EQ(back.payload_bytes, h.payload_bytes);
  EXPECT_EQ(back.crc32c, h.crc32c);
  EXPECT_EQ(back.flags, h.flags);
  EXPECT_EQ(back.src_rank, h.src_rank);
  EXPECT_EQ(back.seq, h.seq);
}

TEST(MessageHeader, WireFormIsLittleEndianWithMagicFirst) {
  auto wire = encode_header(activation_header());
  EXPECT_EQ(wire.size(), kHeaderWireBytes);
  EXPECT_EQ(wire[0], 'G');
  EXPECT_EQ(wire[1], 'P');
  EXPECT_EQ(wire[2], 'I');
  EXPECT_EQ(wire[3], 'P');
  EXPECT_EQ(wire[16], 2);   // stage
  EXPECT_EQ(wire[20], 7);   // micro-batch
}

TEST(MessageHeader, DecodeRejectsCorruptedOrForeignBytes) {
  auto wire = encode_header(activation_header());
  MessageHeader out;
  auto bad_magic = wire;
  bad_magic[0] ^= 0xFF;
  EXPECT_NE(decode_header(bad_magic.data(), bad_magic.size(), out).find("not a geopipe message"),
            std::string::npos);
  auto flipped = wire;
  flipped[40] ^= 0x01;  // inside the shape: only the header checksum can tell
  EXPECT_NE(decode_header(flipped.data(), flipped.size(), out).find("header checksum"),
            std::string::npos);
  auto version = wire;
  version[4] = 9;
  EXPECT_NE(decode_header(version.data(), version.size(), out).find("version 9"), std::string::npos);
  EXPECT_NE(decode_header(wire.data(), 100, out).find("truncated header"), std::string::npos);
}

TEST(MessageHeader, EncodeRefusesWhatTheWireCannotCarry) {
  MessageHeader h = activation_header();
  h.shape.assign(9, 2);
  EXPECT_THROW(encode_header(h), Error);
  h = activation_header();
  h.codec = "a-codec-name-much-too-long";
  EXPECT_THROW(encode_header(h), Error);
  h = activation_header();
  h.shape = {4, -1};
  EXPECT_THROW(encode_header(h), Error);
}

TEST(MessageHeader, CheckNamesEveryMismatchingField) {
  MessageHeader h = activation_header();
  Expect e;
  e.micro_batch = 8;
  e.elem_type = ElemType::kFloat32;
  e.shape = std::vector<int64_t>{4, 128, 769};
  e.stage = 2;  // matches
  const std::string problem = check_header(h, e);
  EXPECT_NE(problem.find("micro_batch: expected 8, got 7"), std::string::npos) << problem;
  EXPECT_NE(problem.find("dtype: expected fp32, got bf16"), std::string::npos) << problem;
  EXPECT_NE(problem.find("shape: expected [4,128,769], got [4,128,768]"), std::string::npos) << problem;
  EXPECT_EQ(problem.find("stage"), std::string::npos) << problem;
  EXPECT_EQ(check_header(h, Expect{}), "");
}

TEST(MessageHeader, UncompressedPayloadMustHoldTheShape) {
  MessageHeader h;
  h.elem_type = ElemType::kFloat32;
  h.shape = {2, 3};
  h.payload_bytes = 24;
  EXPECT_EQ(check_header(h, Expect{}), "");
  h.payload_bytes = 20;
  EXPECT_NE(check_header(h, Expect{}).find("does not hold fp32[2,3]"), std::string::npos);
  h.codec = "int8-block";  // compressed: any size
  EXPECT_EQ(check_header(h, Expect{}), "");
  MessageHeader bytes;  // opaque bytes: no shape, any size
  bytes.payload_bytes = 12345;
  EXPECT_EQ(check_header(bytes, Expect{}), "");
}
