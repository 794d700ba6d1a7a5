// Scripted link events through the transport (MPI, 2 ranks in two emulated regions "a" and
// "b"): a stall shorter than the timeout delays a message, one longer than the timeout makes the
// wait fail with a message naming who waited for what, and nothing is lost either way.
#include <geopipe/comm/communicator.h>
#include <geopipe/core/error.h>

#include "comm_test_util.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <vector>

using namespace geopipe;
using namespace geopipe::comm;

namespace {

using test_util::now_s;
using test_util::activation_header;
using test_util::world_rank;

#define CONTAINS(text, part) EXPECT_NE(std::string(text).find(part), std::string::npos) << (text)

const char* region_of_rank(int r) { return r == 0 ? "a" : "b"; }

CommOptions shaped(const std::optional<std::string>& events) {
  CommOptions o;
  o.region = region_of_rank(world_rank());
  o.emulate = EmulateMode::kSoftware;
  o.emulate_link = parse_link_rate("1gbit,1ms");
  o.link_events = events;
  o.chunk_bytes = 64 * 1024;
  o.default_timeout_s = 30;
  return o;
}

std::vector<uint8_t> pattern(size_t n, uint32_t seed) {
  std::vector<uint8_t> v(n);
  uint32_t x = seed * 2654435761u + 7;
  for (auto& b : v) {
    x = x * 1664525u + 1013904223u;
    b = static_cast<uint8_t>(x >> 24);
  }
  return v;
}

}  // namespace

TEST(LinkEvents, StallShorterThanTheTimeoutDelaysTheMessageAndLosesNothing) {
  // Through the environment, as launch passes it; only a -> b stalls.
  setenv("GEOPIPE_LINK_EVENTS", "a>b@0+1.0=0", 1);
  const double before = now_s();
  Communicator comm(shaped(std::nullopt));
  unsetenv("GEOPIPE_LINK_EVENTS");
  const int peer = 1 - world_rank();
  const size_t n = 300 * 1024;  // header + 5 chunks, all held by the stall
  const auto out = pattern(n, world_rank());
  std::vector<uint8_t> in(n);
  Request recv = comm.irecv(in.data(), n, peer, 3, {});
  Request send = comm.isend(out.data(), n, peer, 3, activation_header(0));
  // Well inside the timeout: the wait rides out the stall.
  recv.wait(Seconds(20));
  send.wait(Seconds(20));
  EXPECT_EQ(in, pattern(n, peer));
  if (world_rank() == 1) {
    // The sender's stall ends 1 s after its construction, which finished after this rank
    // entered its own (the constructor is collective): a lower bound that load cannot break.
    EXPECT_GE(now_s() - before, 1.0);
  }
  comm.barrier(Seconds(30));
}

TEST(LinkEvents, StallLongerThanTheTimeoutFailsTheWaitNamingRankPeerTagAndWhat) {
  Communicator comm(shaped(std::string("a>b@0+2.5=0")));
  const int peer = 1 - world_rank();
  const auto out = pattern(5000, 11);
  std::vector<uint8_t> in(5000);
  if (world_rank() == 0) {
    Request send = comm.isend(out.data(), out.size(), peer, 7, activation_header(4));
    try {
      send.wait(Seconds(0.3));
      FAIL() << "expected a timeout on the stalled link";
    } catch (const TimeoutError& e) {
      CONTAINS(e.what(), "send rank 0 (region a) -> rank 1 (region b), tag 7, 5000 B");
      CONTAINS(e.what(), "timed out after");
      CONTAINS(e.what(), "still held by the link shaper");
    }
    send.wait(Seconds(30));  // the stall ends, the message leaves
  } else {
    Request recv = comm.irecv(in.data(), in.size(), peer, 7, {});
    try {
      recv.wait(Seconds(0.5));
      FAIL() << "expected a timeout on the stalled link";
    } catch (const TimeoutError& e) {
      CONTAINS(e.what(), "recv rank 1 (region b) <- rank 0 (region a), tag 7, 5000 B buffer");
      CONTAINS(e.what(), "timed out after 0.");
      CONTAINS(e.what(), "no message arrived");
    }
    // The runtime would stop here; waiting on shows that the message was only late, not lost.
    recv.wait(Seconds(30));
    EXPECT_EQ(in, out);
    EXPECT_EQ(recv.header().micro_batch, 4);
  }
  comm.barrier(Seconds(30));
}

TEST(LinkEvents, MalformedEnvironmentIsAnInputErrorNamingTheEvent) {
  setenv("GEOPIPE_LINK_EVENTS", "a>b@0+1=0;a>b@2+1=fast", 1);
  try {
    Communicator comm(shaped(std::nullopt));
    FAIL() << "expected an InputError";
  } catch (const InputError& e) {
    CONTAINS(e.what(), "GEOPIPE_LINK_EVENTS");
    CONTAINS(e.what(), "'a>b@2+1=fast'");
  }
  setenv("GEOPIPE_LINK_EVENTS", "a>mars@0+1=0", 1);
  try {
    Communicator comm(shaped(std::nullopt));
    FAIL() << "expected an InputError";
  } catch (const InputError& e) {
    CONTAINS(e.what(), "unknown region 'mars'");
  }
  unsetenv("GEOPIPE_LINK_EVENTS");
}

TEST(LinkEvents, EventsWithoutEmulationAreAnInputError) {
  CommOptions o = shaped(std::string("a>b@0+1=0"));
  o.emulate = EmulateMode::kNone;
  try {
    Communicator comm(o);
    FAIL() << "expected an InputError";
  } catch (const InputError& e) {
    CONTAINS(e.what(), "link events need link emulation");
  }
}
