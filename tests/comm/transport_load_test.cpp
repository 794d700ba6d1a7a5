// The transport under load (MPI, 2 ranks): a burst of 10,000 small messages on several tags and
// 1 GiB transfers over the chunked path. Every message arrives intact and in send order within
// its (peer, tag); afterwards the engine holds nothing (no requests, queued messages or stray MPI
// messages), and the process's open files, threads and resident memory do not grow.
#include <geopipe/comm/communicator.h>
#include <geopipe/core/error.h>

#include "comm_test_util.h"

#include <gtest/gtest.h>

#include <dirent.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

using namespace geopipe;
using namespace geopipe::comm;

namespace {

using test_util::now_s;
using test_util::world_rank;

const Seconds kWait{120};

// ---- process resources (Linux /proc) -------------------------------------------------------

int open_fds() {
  int n = 0;
  if (DIR* d = opendir("/proc/self/fd")) {
    while (dirent* e = readdir(d))
      if (e->d_name[0] != '.') ++n;
    closedir(d);
  }
  return n - 1;  // the directory stream itself
}

long status_field(const char* name) {  // a number from /proc/self/status ("Threads", "VmRSS")
  std::ifstream in("/proc/self/status");
  std::string line;
  const std::string key = std::string(name) + ":";
  while (std::getline(in, line))
    if (line.compare(0, key.size(), key) == 0) return std::stol(line.substr(key.size()));
  return -1;
}
long threads() { return status_field("Threads"); }
// Resident memory after the allocator returned its free pages: what is still in use (or held
// by MPI's own pools, which grow to a high-water mark and stay there).
double rss_mib() {
#if defined(__GLIBC__)
  malloc_trim(0);
#endif
  return status_field("VmRSS") / 1024.0;
}

// Call on every rank at the same point: the barriers keep the peer from starting its next
// messages while this rank looks for stray ones.
void expect_engine_empty(Communicator& comm, const std::string& when) {
  comm.barrier(kWait);
  const CommQueues q = comm.queues();
  comm.barrier(kWait);
  EXPECT_EQ(q.mpi_requests, 0u) << when;
  EXPECT_EQ(q.sends_queued, 0u) << when;
  EXPECT_EQ(q.receives_queued, 0u) << when;
  EXPECT_EQ(q.live_messages, 0) << when;
  EXPECT_EQ(q.abandoned_collectives, 0u) << when;
  EXPECT_FALSE(q.unexpected_messages) << when;
}

// ---- payloads that say who sent them and in which order -------------------------------------

uint64_t mix(uint64_t x) {  // splitmix64 finaliser
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// Byte i of the message (sender, tag, index): a pseudo-random function of all four, so a
// message delivered to the wrong receive, out of order or with a stale byte fails the check.
void fill(uint8_t* p, size_t n, uint64_t key) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const uint64_t w = mix(key ^ (i * 0x100000001B3ull));
    std::memcpy(p + i, &w, 8);
  }
  const uint64_t w = mix(key ^ (i * 0x100000001B3ull));
  for (size_t k = 0; i < n; ++i, ++k) p[i] = static_cast<uint8_t>(w >> (8 * k));
}
// Offset of the first wrong byte, or n.
size_t first_mismatch(const uint8_t* p, size_t n, uint64_t key) {
  uint8_t block[4096];
  for (size_t at = 0; at < n; at += sizeof block) {
    const size_t len = std::min(sizeof block, n - at);
    // fill() of the whole message restricted to [at, at + len): `at` is a multiple of 8.
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
      const uint64_t w = mix(key ^ ((at + i) * 0x100000001B3ull));
      std::memcpy(block + i, &w, 8);
    }
    const uint64_t w = mix(key ^ ((at + i) * 0x100000001B3ull));
    for (size_t k = 0; i < len; ++i, ++k) block[i] = static_cast<uint8_t>(w >> (8 * k));
    if (std::memcmp(block, p + at, len) != 0)
      for (size_t j = 0; j < len; ++j)
        if (block[j] != p[at + j]) return at + j;
  }
  return n;
}
uint64_t key_of(int sender, int tag, int index, int round) {
  return mix((uint64_t(sender) << 48) ^ (uint64_t(tag) << 32) ^ (uint64_t(round) << 24) ^
             uint64_t(index));
}

CommOptions options() {
  CommOptions o;
  o.region = "region-" + std::to_string(world_rank());
  o.emulate = EmulateMode::kNone;
  o.default_timeout_s = 120;
  return o;
}

// ---- the burst -----------------------------------------------------------------------------

constexpr int kTags = 4;

// Both ranks send `count` messages to each other at once (sizes 0..8 KiB, tags round-robin with
// a twist so runs on one tag vary), every receive posted before the first send.
void burst(Communicator& comm, int count, int round) {
  const int peer = 1 - world_rank();
  auto tag_of = [](int i) { return (i + i / 7) % kTags; };
  auto size_of = [](int i, int sender) {
    return static_cast<size_t>((uint64_t(i) * 7919u + uint64_t(sender) * 131u) % (kInlineBytes + 1));
  };
  std::vector<Request> recvs, sends;
  recvs.reserve(count);
  sends.reserve(count);
  std::vector<int> recv_tag(count);
  for (int i = 0; i < count; ++i) {
    recv_tag[i] = tag_of(i);
    recvs.push_back(comm.irecv_any_size(peer, recv_tag[i]));
  }
  // Every receive is posted before the first message leaves: none lands in MPI's unexpected
  // queue, whose pool would otherwise grow to a new high-water mark in whichever burst ran
  // furthest ahead, and look like a leak.
  comm.barrier(kWait);
  std::vector<std::vector<uint8_t>> out(count);
  int per_tag[kTags] = {0};
  for (int i = 0; i < count; ++i) {
    const int tag = tag_of(i);
    out[i].resize(size_of(i, world_rank()));
    fill(out[i].data(), out[i].size(), key_of(world_rank(), tag, per_tag[tag], round));
    MessageHeader h;
    h.stage = world_rank();
    h.micro_batch = per_tag[tag]++;  // position within the (sender, tag) stream
    sends.push_back(comm.isend(out[i].data(), out[i].size(), peer, tag, h));
  }
  wait_all(sends, kWait);
  // The k-th receive posted on a tag must get the k-th message sent on it.
  int expect_index[kTags] = {0};
  int bad = 0;
  for (int i = 0; i < count; ++i) {
    recvs[i].wait(kWait);
    const int tag = recv_tag[i];
    const int index = expect_index[tag]++;
    const MessageHeader& h = recvs[i].header();
    auto& payload = recvs[i].payload();
    const bool ok = h.micro_batch == index && h.src_rank == peer &&
                    payload.size() == size_of(i, peer) &&
                    first_mismatch(payload.data(), payload.size(), key_of(peer, tag, index, round)) ==
                        payload.size();
    if (!ok && bad++ < 5)
      ADD_FAILURE() << "round " << round << ", receive " << i << " on tag " << tag
                    << ": expected message " << index << " of " << size_of(i, peer)
                    << " B, got message " << h.micro_batch << " of " << payload.size() << " B";
  }
  EXPECT_EQ(bad, 0);
}

}  // namespace

TEST(TransportLoad, BurstOfTenThousandSmallMessagesArrivesInOrderAndLeavesNothingBehind) {
  Communicator comm(options());
  // Warm-up: MPI's own request and fragment pools grow towards their high-water mark.
  for (int round = -2; round < 0; ++round) burst(comm, 10000, round);
  expect_engine_empty(comm, "after the warm-up");
  const int fds0 = open_fds();
  const long threads0 = threads();
  std::vector<double> rss{rss_mib()}, seconds;
  for (int round = 1; round <= 4; ++round) {
    const double t0 = now_s();
    burst(comm, 10000, round);
    seconds.push_back(now_s() - t0);
    expect_engine_empty(comm, "after burst " + std::to_string(round));
    rss.push_back(rss_mib());
  }
  EXPECT_EQ(open_fds(), fds0);
  EXPECT_EQ(threads(), threads0);
  // A leak grows resident memory in every burst (each moves 20,000 messages through this rank:
  // 100 B lost per message is 2 MiB per burst). MPI's request and fragment pools may still
  // step up to a new high-water mark once, when a burst happens to run further ahead than any
  // before: so at least one burst must leave memory flat, and all four together grow < 16 MiB.
  double flattest = 1e9;
  for (size_t i = 1; i < rss.size(); ++i) flattest = std::min(flattest, rss[i] - rss[i - 1]);
  EXPECT_LE(flattest, 2.0) << "every burst grew resident memory; from " << rss.front() << " to "
                           << rss.back() << " MiB";
  EXPECT_LE(rss.back() - rss.front(), 16.0) << "resident memory grew from " << rss.front()
                                            << " to " << rss.back() << " MiB";
  std::printf("[ burst    ] rank %d, 10,000 messages each way: %.2f / %.2f / %.2f / %.2f s; RSS "
              "%.1f -> %.1f -> %.1f -> %.1f -> %.1f MiB; %d fds, %ld threads\n",
              world_rank(), seconds[0], seconds[1], seconds[2], seconds[3], rss[0], rss[1], rss[2],
              rss[3], rss[4], fds0, threads0);
}

TEST(TransportLoad, OneGibTransfersArriveIntactInOrderAndLeaveNothingBehind) {
  Communicator comm(options());
  const size_t n = size_t(1) << 30;
  const int tag = 21;
  // Two 1 GiB messages in flight on one tag, each way in turn: 2 GiB of buffers per rank.
  std::unique_ptr<uint8_t[]> a(new uint8_t[n]), b(new uint8_t[n]);
  comm.barrier(kWait);
  const int fds0 = open_fds();
  const long threads0 = threads();
  for (int sender = 0; sender < 2; ++sender) {
    const double t0 = now_s();
    if (world_rank() == sender) {
      fill(a.get(), n, key_of(sender, tag, 0, 3));
      fill(b.get(), n, key_of(sender, tag, 1, 3));
      MessageHeader h;
      h.micro_batch = 0;
      Request s0 = comm.isend(a.get(), n, 1 - sender, tag, h);
      h.micro_batch = 1;
      Request s1 = comm.isend(b.get(), n, 1 - sender, tag, h);
      s0.wait(kWait);
      s1.wait(kWait);
    } else {
      std::memset(a.get(), 0, n);
      std::memset(b.get(), 0, n);
      Request r0 = comm.irecv(a.get(), n, sender, tag, {});
      Request r1 = comm.irecv(b.get(), n, sender, tag, {});
      r0.wait(kWait);
      r1.wait(kWait);
      const double transfer_s = now_s() - t0;
      EXPECT_EQ(r0.header().micro_batch, 0);
      EXPECT_EQ(r1.header().micro_batch, 1);
      EXPECT_EQ(r0.header().payload_bytes, n);
      EXPECT_EQ(first_mismatch(a.get(), n, key_of(sender, tag, 0, 3)), n) << "first message";
      EXPECT_EQ(first_mismatch(b.get(), n, key_of(sender, tag, 1, 3)), n) << "second message";
      std::printf("[ bulk     ] 2 x 1 GiB rank %d -> rank %d in %.2f s (with filling)\n", sender,
                  world_rank(), transfer_s);
    }
    expect_engine_empty(comm, "after the transfers from rank " + std::to_string(sender));
  }
  EXPECT_EQ(open_fds(), fds0);
  EXPECT_EQ(threads(), threads0);
}
