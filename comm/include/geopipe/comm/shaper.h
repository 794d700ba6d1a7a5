// Software WAN emulation: a link shaper per ordered region pair. Each link is a FIFO with a
// bandwidth and a one-way latency: bytes submitted at time t start when the link is free,
// occupy it for bytes / rate, and are delivered `latency` after they finish:
//     start = max(t, link_free);  link_free = start + bytes / rate;  deliver = link_free + latency
// This is a token bucket of depth zero (no burst): the long-run rate is exact and a message
// never jumps the queue. Independent of any transport and of the clock (times are plain
// seconds), so its arithmetic is unit-tested with made-up times. Thread-safe.
//
// Scripted link events (env GEOPIPE_LINK_EVENTS, CommOptions::link_events) change one directed
// link's bandwidth for a while: during [start, end) the link moves `bytes_per_s` (0: nothing
// moves, a stall), afterwards the topology's rate again. The link's rate is then a
// piecewise-constant function of time and a message occupies the link until the integral of
// the rate since its start reaches its size: one that starts before a stall finishes after it.
// An event may also set the link's one-way latency while it lasts ("=20mbit,80ms"): a message
// whose last byte leaves the link during the event is delivered that much later. An event may also be
// timed in training steps ("a>b@s5+10=2mbit": from the start of step 5, as the progress line
// numbers them, for 10 steps): it opens when this rank's shaper hears that step begin
// (Communicator::begin_step) and closes when step 15 begins, so a run slows a link at the same
// step whatever the machine's speed. A stall (rate 0) must be timed in seconds.
//
// A region's links can also be cut for good (cut_region: GEOPIPE_TEST_FAULT cut, runtime/trainer.h):
// from then on nothing leaves on a link into or out of it, as when a region is partitioned from
// the others; its ranks and theirs time out waiting for each other.
#pragma once

#include <geopipe/core/link_events.h>

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace geopipe {
struct Topology;
}

namespace geopipe::comm {

// How links are emulated (env GEOPIPE_EMULATE): not at all, fully in software, or only the
// latency (GEOPIPE_EMULATE=netns: the kernel's tc shapes bandwidth, this kernel lacks netem).
enum class EmulateMode { kNone, kSoftware, kLatencyOnly };
// "none"/"" -> kNone, "software" -> kSoftware, "netns" -> kLatencyOnly; nullopt otherwise.
std::optional<EmulateMode> parse_emulate_mode(const std::string& text);

// LinkRate, parse_link_rate, LinkEvent and parse_link_events: core/link_events.h (geopipe launch
// checks an events file with the same grammar).
using geopipe::LinkEvent;
using geopipe::LinkRate;
using geopipe::parse_link_events;
using geopipe::parse_link_rate;

// A scripted interval of one link: during [start, end) it moves bytes_per_s (0: stalled).
struct RateSegment {
  double start, end, bytes_per_s;
  double latency_s = -1;  // >= 0: one-way latency during the segment (LinkEvent::latency_s)
};
// When `bytes` that start on a free link at time `start` have all left it: the link moves
// `base_bytes_per_s` (<= 0: unlimited) except during `events` (sorted by start, disjoint).
// Even zero bytes wait for a stall to end. LinkShaper::schedule is built on it.
double transmit_end(const std::vector<RateSegment>& events, double base_bytes_per_s,
                    double start, double bytes);

class LinkShaper {
 public:
  // links[from * num_regions + to]; nullopt = no link (scheduling on it is an error).
  // LinkShaper is not copyable (it holds a mutex) but movable through the factory functions.
  LinkShaper(LinkShaper&& other) noexcept
      : num_regions_(other.num_regions_), links_(std::move(other.links_)),
        names_(std::move(other.names_)), free_at_(std::move(other.free_at_)),
        events_(std::move(other.events_)), step_events_(std::move(other.step_events_)) {}
  LinkShaper(int num_regions, std::vector<std::optional<LinkRate>> links,
             std::vector<std::string> region_names = {});
  // From a topology: every directed link and the intra-region link. kLatencyOnly drops rates.
  static LinkShaper from_topology(const Topology& topology, EmulateMode mode);
  // The same link between any two different regions of `names` (benchmarks' --emulate-link);
  // inside a region: unlimited.
  static LinkShaper uniform(std::vector<std::string> names, const LinkRate& rate);

  int num_regions() const { return num_regions_; }
  int region_index(const std::string& name) const;  // -1 when unknown
  LinkRate link(int from, int to) const;            // throws when there is none

  // Sets the link from -> to to `bytes_per_s` (0: stalled) during [start, end) (shaper times).
  // Throws geopipe::Error when there is no such link, end <= start, the rate is negative, or
  // the interval overlaps another event of the same link.
  void add_event(int from, int to, double start, double end, double bytes_per_s, double latency_s = -1);
  // Adds parsed events with times relative to `origin` (the transport's creation time); events
  // timed in steps wait for begin_step(). Throws InputError naming `what` and the event for an
  // unknown region or a missing link.
  void add_events(const std::vector<LinkEvent>& events, double origin,
                  const std::string& what = "GEOPIPE_LINK_EVENTS");
  // Step `step` (1-based) begins at `now`: opens the step events that start with it, closes those
  // that end before it (a step event's link then moves at its rate from `now` on).
  void begin_step(int64_t step, double now);
  // Cuts every link into and out of region `region` from `now` on, for good: what is submitted
  // on them afterwards is never delivered (schedule returns +infinity; a message submitted
  // before keeps the delivery time it was given, as a packet already on the wire).
  // Events of those links that would begin later give way. Throws geopipe::Error for a region
  // index out of range.
  void cut_region(int region, double now);

  // Reserves the link for `bytes` submitted at time `now` (seconds on any monotonic clock);
  // returns the delivery time. Throws geopipe::Error when the regions have no link.
  double schedule(int from, int to, size_t bytes, double now);
  // Time at which the link from -> to becomes free (for reports); `now` if idle.
  double link_free_at(int from, int to, double now) const;
  // Forgets queued reservations (start of a benchmark phase).
  void reset();

 private:
  bool has_link(int from, int to) const;
  // Makes `segment` (which starts at `now` and never ends) the link's rate from now on: events
  // that end later are cut short at now. Needs mu_.
  void hold_link_locked(size_t index, double now, const RateSegment& segment);

  int num_regions_;
  std::vector<std::optional<LinkRate>> links_;
  std::vector<std::string> names_;
  mutable std::mutex mu_;
  std::vector<double> free_at_;
  std::vector<std::vector<RateSegment>> events_;  // per link, sorted, never overlapping
  struct StepEvent {
    int from, to;
    int64_t first, end;  // steps [first, end)
    double bytes_per_s;
    double latency_s;
    int state = 0;       // 0 waiting, 1 open (its segment ends at +infinity), 2 done
    double opened_at = 0;
  };
  std::vector<StepEvent> step_events_;
};

}  // namespace geopipe::comm
