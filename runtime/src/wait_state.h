// Whom this rank is blocked on right now, for its failure record (examples/gpt/failure_report.h:
// a rank terminated by the launcher says whom it was waiting for, so the supervisor can follow a
// chain of waits to the hung rank at its end). Read from a signal handler: a lock-free atomic.
#pragma once

#include <atomic>
#include <cstdint>

#include <time.h>

namespace geopipe::runtime::detail {

inline constexpr int kNotWaiting = -1;
inline constexpr int kWaitingForAGroup = -2;  // a collective: no single peer

inline std::atomic<int> g_waiting_for{kNotWaiting};
inline std::atomic<int64_t> g_waiting_since_ms{0};  // CLOCK_MONOTONIC, when the wait began
// The last wait that lasted a second or more: a hung peer that its launcher continued (SIGCONT,
// then SIGTERM) may have just ended it, and it is still the wait that matters.
inline std::atomic<int> g_long_wait_peer{kNotWaiting};
inline std::atomic<int64_t> g_long_wait_ms{0}, g_long_wait_end_ms{0};
inline constexpr int64_t kLongWaitMs = 1000;

inline int64_t monotonic_ms() {
  timespec t{};
  clock_gettime(CLOCK_MONOTONIC, &t);  // async-signal-safe, unlike std::chrono's clocks
  return static_cast<int64_t>(t.tv_sec) * 1000 + t.tv_nsec / 1000000;
}

// Marks a wait for `peer` (a rank, or kWaitingForAGroup) for the scope's duration.
class WaitMark {
 public:
  explicit WaitMark(int peer) : previous_(g_waiting_for.exchange(peer)) {
    if (previous_ == kNotWaiting) g_waiting_since_ms.store(monotonic_ms());
  }
  ~WaitMark() {
    const int peer = g_waiting_for.exchange(previous_);
    const int64_t now = monotonic_ms(), lasted = now - g_waiting_since_ms.load();
    if (previous_ == kNotWaiting && lasted >= kLongWaitMs) {
      g_long_wait_peer.store(peer);
      g_long_wait_ms.store(lasted);
      g_long_wait_end_ms.store(now);
    }
  }
  WaitMark(const WaitMark&) = delete;
  WaitMark& operator=(const WaitMark&) = delete;

 private:
  int previous_;
};

}  // namespace geopipe::runtime::detail
