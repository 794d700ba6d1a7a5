// BufferPool bookkeeping (the pinned-buffer pool of the GPU stager) with a counting allocator,
// so it runs on every machine.
#include <geopipe/comm/staging.h>
#include <geopipe/core/error.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <map>

using namespace geopipe;
using namespace geopipe::comm;

namespace {

// Records every live allocation and its size; the pool must free exactly what it allocated.
struct CountingAllocator {
  std::map<void*, size_t> live;
  int allocations = 0, frees = 0;
  bool fail = false;

  BufferPool::Allocator make() {
    return {[this](size_t bytes) -> void* {
              if (fail) return nullptr;
              void* p = std::malloc(bytes);
              live[p] = bytes;
              ++allocations;
              return p;
            },
            [this](void* p) {
              EXPECT_EQ(live.erase(p), 1u) << "freed a buffer the allocator never gave out";
              ++frees;
              std::free(p);
            }};
  }
};

}  // namespace

TEST(BufferPool, ReleasedBufferIsReusedInsteadOfAllocatingAgain) {
  CountingAllocator a;
  BufferPool pool(a.make(), 1 << 20);
  void* first = nullptr;
  {
    BufferPool::Lease lease = pool.acquire(4096);
    first = lease.data();
    EXPECT_EQ(lease.capacity(), 4096u);
    EXPECT_EQ(pool.stats().in_use_bytes, 4096u);
  }
  EXPECT_EQ(pool.stats().idle_bytes, 4096u);
  EXPECT_EQ(pool.stats().in_use_bytes, 0u);
  BufferPool::Lease again = pool.acquire(1000);  // smaller request: the idle buffer fits
  EXPECT_EQ(again.data(), first);
  EXPECT_EQ(again.capacity(), 4096u);
  EXPECT_EQ(a.allocations, 1);
  EXPECT_EQ(pool.stats().reuses, 1u);
  EXPECT_EQ(pool.stats().idle_bytes, 0u);
}

TEST(BufferPool, PicksSmallestIdleBufferThatFitsAndAllocatesWhenNoneFits) {
  CountingAllocator a;
  BufferPool pool(a.make(), 1 << 20);
  void *small = nullptr, *large = nullptr;
  {
    BufferPool::Lease s = pool.acquire(100), l = pool.acquire(10000);
    small = s.data();
    large = l.data();
  }
  {
    BufferPool::Lease x = pool.acquire(50);
    EXPECT_EQ(x.data(), small);
    BufferPool::Lease y = pool.acquire(5000);
    EXPECT_EQ(y.data(), large);
    BufferPool::Lease z = pool.acquire(20000);  // nothing idle is that large
    EXPECT_NE(z.data(), small);
    EXPECT_NE(z.data(), large);
    EXPECT_EQ(z.capacity(), 20000u);
  }
  EXPECT_EQ(a.allocations, 3);
  EXPECT_EQ(pool.stats().allocations, 3u);
  EXPECT_EQ(pool.stats().reuses, 2u);
}

TEST(BufferPool, FreesLargestIdleBuffersBeyondTheBound) {
  CountingAllocator a;
  BufferPool pool(a.make(), 3000);
  {
    BufferPool::Lease b1 = pool.acquire(1000), b2 = pool.acquire(1500), b3 = pool.acquire(2000);
  }
  // 4500 idle bytes over a 3000 bound: the 2000-byte buffer goes, 2500 stay.
  EXPECT_EQ(pool.stats().idle_bytes, 2500u);
  EXPECT_EQ(pool.stats().frees, 1u);
  EXPECT_EQ(a.frees, 1);
  EXPECT_EQ(a.live.size(), 2u);
  for (const auto& [p, bytes] : a.live) EXPECT_NE(bytes, 2000u);
}

TEST(BufferPool, ZeroBoundKeepsNothingIdle) {
  CountingAllocator a;
  BufferPool pool(a.make(), 0);
  { BufferPool::Lease l = pool.acquire(64); }
  EXPECT_EQ(pool.stats().idle_bytes, 0u);
  EXPECT_TRUE(a.live.empty());
}

TEST(BufferPool, MovedLeaseIsReleasedOnceAndDestructionFreesIdleBuffers) {
  CountingAllocator a;
  {
    BufferPool pool(a.make(), 1 << 20);
    BufferPool::Lease l1 = pool.acquire(256);
    BufferPool::Lease l2 = std::move(l1);
    EXPECT_EQ(l1.data(), nullptr);
    BufferPool::Lease l3 = pool.acquire(512);
    l3 = std::move(l2);  // l3's own 512-byte buffer is released here
    EXPECT_EQ(pool.stats().idle_bytes, 512u);
    EXPECT_EQ(pool.stats().in_use_bytes, 256u);
  }
  EXPECT_EQ(a.allocations, 2);
  EXPECT_EQ(a.frees, 2);
  EXPECT_TRUE(a.live.empty());
}

TEST(BufferPool, ZeroByteRequestStillGetsAUsableBuffer) {
  CountingAllocator a;
  BufferPool pool(a.make(), 1 << 20);
  BufferPool::Lease l = pool.acquire(0);
  EXPECT_NE(l.data(), nullptr);
  EXPECT_EQ(l.capacity(), 1u);
}

TEST(BufferPool, AllocationFailureIsAnErrorNamingTheSize) {
  CountingAllocator a;
  a.fail = true;
  BufferPool pool(a.make(), 1 << 20);
  try {
    pool.acquire(12345);
    FAIL() << "expected geopipe::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("12345"), std::string::npos) << e.what();
  }
  EXPECT_EQ(pool.stats().in_use_bytes, 0u);
}

TEST(BufferPool, HostMemoryIsNotADevicePointer) {
  int x = 0;
  EXPECT_FALSE(is_device_pointer(&x));
  EXPECT_FALSE(is_device_pointer(nullptr));
}
