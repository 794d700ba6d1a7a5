// Message authentication through the transport (MPI, 2 ranks): the same key delivers, and a
// wrong key, a tampered header, a missing tag, an unexpected tag and a replayed sequence number
// are refused with an error naming the sender.
#include <geopipe/comm/auth.h>
#include <geopipe/comm/communicator.h>
#include <geopipe/core/error.h>

#include "comm_test_util.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

using namespace geopipe;
using namespace geopipe::comm;

namespace {

using test_util::activation_header;
using test_util::world_rank;

#define CONTAINS(text, part) EXPECT_NE(std::string(text).find(part), std::string::npos) << (text)

const Seconds kWait{30};

std::vector<uint8_t> key(uint8_t seed) {
  std::vector<uint8_t> k(32);
  for (size_t i = 0; i < k.size(); ++i) k[i] = static_cast<uint8_t>(seed * 31 + i * 7);
  return k;
}

CommOptions options(std::optional<std::vector<uint8_t>> auth_key) {
  CommOptions o;
  o.region = world_rank() == 0 ? "east" : "west";
  o.emulate = EmulateMode::kNone;
  o.chunk_bytes = 64 * 1024;
  o.default_timeout_s = 30;
  o.auth_key = std::move(auth_key);
  return o;
}

std::vector<uint8_t> pattern(size_t n, uint32_t seed) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>((i * 131 + seed * 17) >> 3);
  return v;
}

std::string error_of(Request& r) {
  try {
    r.wait(kWait);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// Rank 0 sends one message of `n` bytes on `tag` (with `fault` injected), rank 1 receives it;
// returns rank 1's error ("" when delivered intact).
std::string send_one(Communicator& comm, size_t n, int tag, TestFault fault = TestFault::kNone) {
  const auto out = pattern(n, static_cast<uint32_t>(tag));
  std::string err;
  if (world_rank() == 0) {
    comm.inject_fault_for_testing(fault);
    Request s = comm.isend(out.data(), n, 1, tag, activation_header(tag));
    s.wait(kWait);
  } else {
    std::vector<uint8_t> in(n);
    Request r = comm.irecv(in.data(), n, 0, tag, {});
    err = error_of(r);
    if (err.empty()) {
      EXPECT_EQ(in, out);
      EXPECT_TRUE(r.header().flags & kFlagAuthTag);
    }
  }
  comm.barrier(kWait);
  return err;
}

const char* kSender = "<- rank 0 (region east)";
const char* kSenderNamed = "from rank 0 (region east)";

}  // namespace

TEST(MessageAuth, SameKeyDeliversInlineAndChunkedMessages) {
  Communicator comm(options(key(1)));
  ASSERT_TRUE(comm.authenticating());
  for (size_t n : {size_t(0), size_t(100), size_t(300000)}) EXPECT_EQ(send_one(comm, n, 1), "");
}

TEST(MessageAuth, WrongKeyIsRefusedNamingTheSender) {
  Communicator comm(options(key(world_rank() == 0 ? 1 : 2)));
  if (world_rank() == 1) {
    const std::string err = send_one(comm, 100, 2);
    CONTAINS(err, kSender);
    CONTAINS(err, std::string("refused: the authentication tag of the message ") + kSenderNamed + " is wrong");
  } else {
    send_one(comm, 100, 2);
  }
}

TEST(MessageAuth, TamperedHeaderIsRefusedAndTheStreamStaysUsable) {
  Communicator comm(options(key(3)));
  for (size_t n : {size_t(100), size_t(300000)}) {  // inline and chunked
    const int tag = n < 1000 ? 3 : 4;
    const std::string err = send_one(comm, n, tag, TestFault::kTamperHeader);
    if (world_rank() == 1) {
      CONTAINS(err, std::string("the authentication tag of the message ") + kSenderNamed + " is wrong");
      CONTAINS(err, "altered");
    }
  }
  // The refused chunked message was drained: the next one on its tag arrives intact.
  EXPECT_EQ(send_one(comm, 300000, 4), "");
  EXPECT_EQ(send_one(comm, 5000, 3), "");
}

TEST(MessageAuth, MessageWithoutATagIsRefusedByARankWithAKey) {
  Communicator comm(options(world_rank() == 0 ? std::vector<uint8_t>{} : key(4)));
  EXPECT_EQ(comm.authenticating(), world_rank() == 1);
  const std::string err = send_one(comm, 100, 6);
  if (world_rank() == 1) {
    CONTAINS(err, kSender);
    CONTAINS(err, std::string("refused: the message ") + kSenderNamed + " carries no authentication tag");
  }
}

TEST(MessageAuth, MessageWithATagIsRefusedByARankWithoutAKey) {
  Communicator comm(options(world_rank() == 0 ? key(5) : std::vector<uint8_t>{}));
  const std::string err = send_one(comm, 100, 7);
  if (world_rank() == 1) {
    CONTAINS(err, std::string("refused: the message ") + kSenderNamed + " carries an authentication tag");
    CONTAINS(err, "this rank has no key");
  }
}

TEST(MessageAuth, ReplayedSequenceNumberIsRefused) {
  Communicator comm(options(key(6)));
  EXPECT_EQ(send_one(comm, 100, 8), "");
  const std::string err = send_one(comm, 100, 9, TestFault::kReplaySequence);
  if (world_rank() == 1) {
    CONTAINS(err, std::string("refused: replayed message ") + kSenderNamed);
    CONTAINS(err, "sequence number 0 was already received");
  }
  EXPECT_EQ(send_one(comm, 100, 10), "");  // later messages are still accepted
}

TEST(MessageAuth, KeyFileFromTheEnvironment) {
  const std::string path = ::testing::TempDir() + "geopipe_auth_test_key_" + std::to_string(world_rank());
  {
    const auto k = key(7);
    std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(k.data()), k.size());
  }
  setenv("GEOPIPE_AUTH_KEY_FILE", path.c_str(), 1);
  {
    Communicator comm(options(std::nullopt));
    EXPECT_TRUE(comm.authenticating());
    EXPECT_EQ(send_one(comm, 2000, 11), "");
  }
  // A key with checksums off is refused: the tag covers the payload only through its CRC32C.
  CommOptions no_crc = options(std::nullopt);
  no_crc.checksum = false;
  try {
    Communicator comm(no_crc);
    ADD_FAILURE() << "expected an InputError";
  } catch (const InputError& e) {
    CONTAINS(e.what(), "message authentication needs payload checksums");
  }
  // A short key file is an InputError naming the file.
  std::ofstream(path, std::ios::binary) << "too short";
  try {
    Communicator comm(options(std::nullopt));
    ADD_FAILURE() << "expected an InputError";
  } catch (const InputError& e) {
    CONTAINS(e.what(), path);
    CONTAINS(e.what(), "9 bytes, at least 32");
  }
  unsetenv("GEOPIPE_AUTH_KEY_FILE");
  std::remove(path.c_str());
}
