// The two clocks of the runtime: trace spans are stamped in microseconds since the Unix epoch (so
// every rank's spans line up in one merged trace); durations use the monotonic clock.
#pragma once

#include <chrono>

namespace geopipe::runtime {

using Clock = std::chrono::steady_clock;

inline double now_us() {
  return static_cast<double>(
      std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch())
          .count());
}

inline double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

}  // namespace geopipe::runtime
