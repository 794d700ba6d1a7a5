// MPI tests of the comm layer, run by ctest through mpiexec with 2 and 4 ranks. Every rank runs
// every test in the same order; ranks pair up as (0,1), (2,3).
#include <geopipe/comm/communicator.h>
#include <geopipe/core/config.h>
#include <geopipe/core/error.h>

#include "comm_test_util.h"

#include <gtest/gtest.h>
#include <mpi.h>

#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

using namespace geopipe;
using namespace geopipe::comm;

namespace {

using test_util::now_s;
using test_util::world_rank;
using test_util::world_size;

const Seconds kWait{30};

int partner() {
  const int p = world_rank() ^ 1;
  return p < world_size() ? p : -1;
}

std::vector<uint8_t> pattern(size_t n, uint32_t seed) {
  std::vector<uint8_t> v(n);
  uint32_t x = seed * 2654435761u + 1;
  for (auto& b : v) {
    x = x * 1664525u + 1013904223u;
    b = static_cast<uint8_t>(x >> 24);
  }
  return v;
}

CommOptions options(const std::string& region = "") {
  CommOptions o;
  o.region = region.empty() ? "region-" + std::to_string(world_rank()) : region;
  o.emulate = EmulateMode::kNone;
  o.chunk_bytes = 256 * 1024;
  o.max_chunks_in_flight = 4;
  o.default_timeout_s = 30;
  return o;
}

MessageHeader header(int mb, MessageKind kind = MessageKind::kActivation) {
  MessageHeader h;
  h.stage = world_rank();
  h.micro_batch = mb;
  h.kind = kind;
  return h;
}

std::string error_of(Request& r) {
  try {
    r.wait(kWait);
  } catch (const TimeoutError& e) {
    return std::string("TIMEOUT ") + e.what();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

#define CONTAINS(text, part) EXPECT_NE(std::string(text).find(part), std::string::npos) << (text)

}  // namespace

TEST(Communicator, EveryRankLearnsEveryRegion) {
  Communicator comm(options("zone-" + std::to_string(world_rank() % 2)));
  EXPECT_EQ(comm.rank(), world_rank());
  EXPECT_EQ(comm.size(), world_size());
  ASSERT_EQ(comm.regions().size(), static_cast<size_t>(world_size()));
  for (int r = 0; r < world_size(); ++r) EXPECT_EQ(comm.region_of(r), "zone-" + std::to_string(r % 2));
  EXPECT_FALSE(comm.emulating());
}

TEST(Communicator, ExchangesMessagesOfEverySizeClass) {
  Communicator comm(options());
  const int peer = partner();
  if (peer < 0) GTEST_SKIP();
  // Empty, inline, the inline limit, just over it, several chunks, many chunks (> in flight).
  const std::vector<size_t> sizes = {0, 1, 100, kInlineBytes, kInlineBytes + 1,
                                     (1 << 20) + 3, 5u << 20};
  for (size_t i = 0; i < sizes.size(); ++i) {
    const auto out = pattern(sizes[i], 100 * world_rank() + i);
    std::vector<uint8_t> in(sizes[i] + 16, 0xEE);
    Expect expect;
    expect.micro_batch = static_cast<int>(i);
    expect.stage = peer;
    Request recv = comm.irecv(in.data(), in.size(), peer, 5, expect);
    Request send = comm.isend(out.data(), out.size(), peer, 5, header(static_cast<int>(i)));
    send.wait(kWait);
    recv.wait(kWait);
    EXPECT_EQ(recv.header().payload_bytes, sizes[i]);
    EXPECT_EQ(recv.header().src_rank, peer);
    const auto want = pattern(sizes[i], 100 * peer + i);
    EXPECT_TRUE(std::equal(want.begin(), want.end(), in.begin())) << "size " << sizes[i];
    EXPECT_EQ(in[sizes[i]], 0xEE) << "wrote past the payload, size " << sizes[i];
  }
}

TEST(Communicator, ReceivesAMessageWhoseSizeOnlyTheHeaderKnows) {
  Communicator comm(options());
  const int peer = partner();
  if (peer < 0) GTEST_SKIP();
  for (size_t n : {size_t(3000), size_t(3u << 20) + 17}) {
    const auto out = pattern(n, world_rank());
    Request recv = comm.irecv_any_size(peer, 9);
    Request send = comm.isend(out.data(), n, peer, 9, header(1));
    send.wait(kWait);
    recv.wait(kWait);
    EXPECT_EQ(recv.payload(), pattern(n, peer));
  }
}

TEST(Communicator, KeepsTheOrderOfMessagesOnOneTag) {
  Communicator comm(options());
  const int peer = partner();
  if (peer < 0) GTEST_SKIP();
  const int n = 12;
  std::vector<std::vector<uint8_t>> outs;
  std::vector<Request> recvs, sends;
  // Mixed inline and chunked sizes so that small messages could overtake large ones.
  auto size_of = [](int i) { return i % 3 == 0 ? size_t(700000 + i) : size_t(50 * i + 1); };
  for (int i = 0; i < n; ++i) recvs.push_back(comm.irecv_any_size(peer, 3));
  for (int i = 0; i < n; ++i) {
    outs.push_back(pattern(size_of(i), 1000 * world_rank() + i));
    sends.push_back(comm.isend(outs.back().data(), outs.back().size(), peer, 3, header(i)));
  }
  wait_all(sends, kWait);
  for (int i = 0; i < n; ++i) {
    recvs[i].wait(kWait);
    EXPECT_EQ(recvs[i].header().micro_batch, i);
    EXPECT_EQ(recvs[i].payload(), pattern(size_of(i), 1000 * peer + i)) << "message " << i;
  }
}

TEST(Communicator, HeaderMismatchNamesBothRanksAndKeepsTheStreamUsable) {
  Communicator comm(options());
  const int peer = partner();
  if (peer < 0) GTEST_SKIP();
  const bool sender = world_rank() % 2 == 0;
  const auto big = pattern(2u << 20, 7);  // chunked: its bytes must be drained
  const auto small = pattern(64, 8);
  if (sender) {
    Request a = comm.isend(big.data(), big.size(), peer, 4, header(5, MessageKind::kGradient));
    Request b = comm.isend(small.data(), small.size(), peer, 4, header(6));
    a.wait(kWait);
    b.wait(kWait);
  } else {
    std::vector<uint8_t> in(big.size());
    Expect expect;
    expect.kind = MessageKind::kActivation;
    expect.micro_batch = 4;
    Request a = comm.irecv(in.data(), in.size(), peer, 4, expect);
    const std::string err = error_of(a);
    CONTAINS(err, "rank " + std::to_string(world_rank()) + " (region region-" +
                      std::to_string(world_rank()) + ")");
    CONTAINS(err, "rank " + std::to_string(peer) + " (region region-" + std::to_string(peer) + ")");
    CONTAINS(err, "tag 4");
    CONTAINS(err, "kind: expected activation, got gradient");
    CONTAINS(err, "micro_batch: expected 4, got 5");
    std::vector<uint8_t> next(64);
    Request b = comm.irecv(next.data(), next.size(), peer, 4, {});
    b.wait(kWait);
    EXPECT_EQ(next, small);
  }
}

TEST(Communicator, MessageLargerThanTheBufferIsRejected) {
  Communicator comm(options());
  const int peer = partner();
  if (peer < 0) GTEST_SKIP();
  const auto out = pattern(600000, 1);
  std::vector<uint8_t> in(1000);
  Request recv = comm.irecv(in.data(), in.size(), peer, 2, {});
  Request send = comm.isend(out.data(), out.size(), peer, 2, header(0));
  send.wait(kWait);
  CONTAINS(error_of(recv), "payload of 600000 bytes exceeds the receive buffer of 1000 bytes");
}

TEST(Communicator, CorruptedPayloadFailsTheChecksum) {
  Communicator comm(options());
  const int peer = partner();
  if (peer < 0) GTEST_SKIP();
  ASSERT_TRUE(comm.checksum_enabled());
  for (size_t n : {size_t(4000), size_t(1u << 20)}) {  // inline and chunked
    const auto out = pattern(n, 3);
    std::vector<uint8_t> in(n), again(n);
    Request recv = comm.irecv(in.data(), n, peer, 6, {});
    Request recv2 = comm.irecv(again.data(), n, peer, 6, {});
    comm.inject_fault_for_testing(TestFault::kCorruptPayload);
    Request send = comm.isend(out.data(), n, peer, 6, header(0));
    Request send2 = comm.isend(out.data(), n, peer, 6, header(1));
    send.wait(kWait);
    send2.wait(kWait);
    const std::string err = error_of(recv);
    CONTAINS(err, "checksum mismatch");
    CONTAINS(err, "<- rank " + std::to_string(peer));
    recv2.wait(kWait);  // the next message is intact
    EXPECT_EQ(again, out);
  }
}

TEST(Communicator, TruncatedMessageIsAnError) {
  Communicator comm(options());
  const int peer = partner();
  if (peer < 0) GTEST_SKIP();
  for (size_t n : {size_t(500), size_t(700000)}) {
    const auto out = pattern(n, 4);
    std::vector<uint8_t> in(n);
    Request recv = comm.irecv(in.data(), n, peer, 8, {});
    comm.inject_fault_for_testing(TestFault::kTruncatePayload);
    Request send = comm.isend(out.data(), n, peer, 8, header(0));
    send.wait(kWait);
    const std::string err = error_of(recv);
    CONTAINS(err, "truncated message");
    CONTAINS(err, "rank " + std::to_string(peer));
  }
}

TEST(Communicator, ForeignBytesAreRejected) {
  Communicator comm(options());
  const int peer = partner();
  if (peer < 0) GTEST_SKIP();
  const auto out = pattern(32, 5);
  std::vector<uint8_t> in(32);
  Request recv = comm.irecv(in.data(), 32, peer, 1, {});
  comm.inject_fault_for_testing(TestFault::kBadMagic);
  Request send = comm.isend(out.data(), 32, peer, 1, header(0));
  send.wait(kWait);
  CONTAINS(error_of(recv), "not a geopipe message");
}

TEST(Communicator, ChecksumCanBeTurnedOff) {
  CommOptions o = options();
  o.checksum = false;
  Communicator comm(o);
  const int peer = partner();
  if (peer < 0) GTEST_SKIP();
  const auto out = pattern(1u << 20, 6);
  std::vector<uint8_t> in(out.size());
  Request recv = comm.irecv(in.data(), in.size(), peer, 1, {});
  Request send = comm.isend(out.data(), out.size(), peer, 1, header(0));
  send.wait(kWait);
  recv.wait(kWait);
  EXPECT_EQ(in, out);
  EXPECT_FALSE(recv.header().flags & kFlagHasChecksum);
}

TEST(Communicator, ReceiveFromASilentPeerTimesOutNamingRankPeerTagAndTime) {
  Communicator comm(options());
  const int peer = partner();
  if (peer < 0) GTEST_SKIP();
  if (world_rank() % 2 == 1) {
    std::vector<uint8_t> in(100);
    Request recv = comm.irecv(in.data(), in.size(), peer, 99, {});
    const double t0 = now_s();
    try {
      recv.wait(Seconds(0.3));
      FAIL() << "expected a timeout";
    } catch (const TimeoutError& e) {
      const std::string msg = e.what();
      CONTAINS(msg, "recv rank " + std::to_string(world_rank()));
      CONTAINS(msg, "<- rank " + std::to_string(peer));
      CONTAINS(msg, "tag 99, 100 B buffer");
      CONTAINS(msg, "timed out after 0.");
      CONTAINS(msg, "no message arrived");
    }
    EXPECT_GE(now_s() - t0, 0.3);
    recv.cancel();
    CONTAINS(error_of(recv), "cancelled");
  }
  comm.barrier(kWait);
}

TEST(Communicator, BadPeerOrTagIsRejectedAtOnce) {
  Communicator comm(options());
  uint8_t byte = 0;
  try {
    comm.isend(&byte, 1, world_size(), 0, header(0));
    FAIL();
  } catch (const Error& e) {
    CONTAINS(e.what(), "peer " + std::to_string(world_size()) + " is not a rank of this job");
  }
  EXPECT_THROW(comm.irecv(&byte, 1, 0, -1, {}), Error);
  EXPECT_THROW(comm.isend(&byte, 1, 0, kMaxUserTag + 1, header(0)), Error);
}

// Batches are for NCCL (transport.h); on MPI they do nothing, so operations posted inside one
// (nested ones included) start at once and can complete before the batch ends.
TEST(Communicator, BatchesAreNoOpsOnMpiAndNest) {
  Communicator comm(options());
  Transport& transport = comm;
  const int me = comm.rank();
  const auto sent = pattern(kInlineBytes * 3, 41);
  std::vector<uint8_t> got(sent.size(), 0);
  {
    TransportBatch outer(transport);
    Request recv, send;
    {
      TransportBatch inner(transport);
      recv = transport.irecv(got.data(), got.size(), me, 7, {});
      send = transport.isend(sent.data(), sent.size(), me, 7, header(0));
    }
    recv.wait(kWait);  // still inside the outer batch
    send.wait(kWait);
  }
  EXPECT_EQ(got, sent);
  const CommQueues q = comm.queues();
  EXPECT_EQ(q.mpi_requests, 0u);
  EXPECT_EQ(q.live_messages, 0);
}

TEST(Communicator, TransfersProgressWhileTheCallerSleeps) {
  Communicator comm(options());
  const int peer = partner();
  if (peer < 0) GTEST_SKIP();
  const auto out = pattern(8u << 20, 9);  // 32 chunks, 4 in flight: needs many progress steps
  std::vector<uint8_t> in(out.size());
  Request recv = comm.irecv(in.data(), in.size(), peer, 11, {});
  Request send = comm.isend(out.data(), out.size(), peer, 11, header(0));
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));  // nobody polls
  // One test() drives at most one progress round, far too few for 32 chunks: only the
  // progress thread can have moved them.
  EXPECT_TRUE(send.test());
  EXPECT_TRUE(recv.test());
  recv.wait(kWait);
  send.wait(kWait);
  EXPECT_EQ(in, pattern(out.size(), 9));
}

// The counterpart of the test above: it shows that one test() cannot finish such a transfer,
// so there it was the progress thread that did.
TEST(Communicator, WithoutTheProgressThreadNothingMovesUntilPolled) {
  CommOptions o = options();
  o.progress_thread = false;
  Communicator comm(o);
  const int peer = partner();
  if (peer < 0) GTEST_SKIP();
  const auto out = pattern(8u << 20, 9);
  std::vector<uint8_t> in(out.size());
  Request recv = comm.irecv(in.data(), in.size(), peer, 11, {});
  Request send = comm.isend(out.data(), out.size(), peer, 11, header(0));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_FALSE(send.test());
  EXPECT_FALSE(recv.test());
  recv.wait(kWait);  // the callers drive it from here
  send.wait(kWait);
  EXPECT_EQ(in, pattern(out.size(), 9));
}

TEST(Communicator, AllreduceSumsAndMaxesOverAllRanks) {
  Communicator comm(options());
  double v[3] = {1.0, static_cast<double>(world_rank()), -1.0 * world_rank()};
  comm.allreduce_sum(v, 3, kWait);
  const int n = world_size();
  EXPECT_DOUBLE_EQ(v[0], n);
  EXPECT_DOUBLE_EQ(v[1], n * (n - 1) / 2.0);
  double m = world_rank();
  comm.allreduce_max(&m, 1, kWait);
  EXPECT_DOUBLE_EQ(m, n - 1);
  comm.barrier(kWait);
}

TEST(Communicator, CollectiveTimesOutWhenARankIsLate) {
  Communicator comm(options());
  double v = 1;
  if (world_rank() == 0) {
    try {
      comm.allreduce_sum(&v, 1, Seconds(0.2));
      FAIL() << "expected a timeout";
    } catch (const TimeoutError& e) {
      CONTAINS(e.what(), "rank 0 (region region-0)");
      CONTAINS(e.what(), "allreduce_sum");
      CONTAINS(e.what(), "timed out");
    }
  } else {
    std::this_thread::sleep_for(std::chrono::milliseconds(600));
    comm.allreduce_sum(&v, 1, kWait);  // completes: rank 0 contributed before giving up
    EXPECT_DOUBLE_EQ(v, world_size());
  }
}

TEST(Communicator, UnknownEmulationModeIsAnInputError) {
  setenv("GEOPIPE_EMULATE", "wormhole", 1);
  CommOptions o = options();
  o.emulate.reset();
  try {
    Communicator comm(o);
    FAIL();
  } catch (const InputError& e) {
    CONTAINS(e.what(), "GEOPIPE_EMULATE");
  }
  unsetenv("GEOPIPE_EMULATE");
}

// ---- the software WAN shaper inside the transport ----------------------------------------

TEST(EmulatedLink, TransferTakesAtLeastTheShapersTime) {
  CommOptions o = options();
  o.emulate = EmulateMode::kSoftware;
  o.emulate_link = parse_link_rate("100mbit,10ms");
  Communicator comm(o);
  ASSERT_TRUE(comm.emulating());
  const int peer = partner();
  if (peer < 0) GTEST_SKIP();
  const size_t n = 2u << 20;
  const auto out = pattern(n, 1);
  std::vector<uint8_t> in(n);
  comm.barrier(kWait);
  const double t0 = now_s();
  Request recv = comm.irecv(in.data(), n, peer, 1, {});
  Request send = comm.isend(out.data(), n, peer, 1, header(0));
  send.wait(kWait);
  recv.wait(kWait);
  const double elapsed = now_s() - t0;
  // Header + 8 chunks at 12.5 MB/s plus 10 ms: the shaper never delivers early (exact lower
  // bound); a loaded machine can only make it slower, so the upper bound is generous.
  const double ideal = (n + kHeaderWireBytes) / 12.5e6 + 0.010;
  EXPECT_GE(elapsed, ideal - 0.002);
  EXPECT_LE(elapsed, 3 * ideal + 1.0);
  EXPECT_EQ(in, pattern(n, 1));
  // A small message pays the one-way latency.
  const double t1 = now_s();
  Request r2 = comm.irecv(in.data(), 10, peer, 2, {});
  Request s2 = comm.isend(out.data(), 10, peer, 2, header(1));
  s2.wait(kWait);
  r2.wait(kWait);
  EXPECT_GE(now_s() - t1, 0.010 - 0.001);
}

TEST(EmulatedLink, TopologyLinksShapeEachRegionPair) {
  if (world_size() != 4) GTEST_SKIP() << "needs 4 ranks";
  static const char* kRegions[] = {"us-east", "us-west", "eu-central", "ap-southeast"};
  CommOptions o = options(kRegions[world_rank()]);
  o.emulate = EmulateMode::kSoftware;
  o.topology = std::make_shared<Topology>(
      load_topology(std::string(GEOPIPE_SOURCE_DIR) + "/examples/topologies/local4.json"));
  Communicator comm(o);
  // Ring: rank r sends 1 MB to r+1. Expected from the file: us-east->us-west 0.4 Gbit/s 5 ms,
  // us-west->eu-central 0.2/30, eu-central->ap-southeast 0.3/20, ap-southeast->us-east 0.1/40.
  const double gbps[] = {0.4, 0.2, 0.3, 0.1};
  const double lat[] = {0.005, 0.030, 0.020, 0.040};
  const int to = (world_rank() + 1) % 4, from = (world_rank() + 3) % 4;
  const size_t n = 1000000;
  const auto out = pattern(n, world_rank());
  std::vector<uint8_t> in(n);
  comm.barrier(kWait);
  const double t0 = now_s();
  Request recv = comm.irecv(in.data(), n, from, 1, {});
  Request send = comm.isend(out.data(), n, to, 1, header(0));
  send.wait(kWait);
  const double elapsed = now_s() - t0;
  recv.wait(kWait);
  const double ideal = (n + kHeaderWireBytes) / (gbps[world_rank()] * 1e9 / 8) + lat[world_rank()];
  EXPECT_GE(elapsed, ideal - 0.002);
  EXPECT_LE(elapsed, 3 * ideal + 1.0);
  EXPECT_EQ(in, pattern(n, from));
}
