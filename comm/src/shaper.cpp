#include <geopipe/comm/shaper.h>

#include <geopipe/core/config.h>
#include <geopipe/core/error.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <limits>

namespace geopipe::comm {

std::optional<EmulateMode> parse_emulate_mode(const std::string& text) {
  if (text.empty() || text == "none") return EmulateMode::kNone;
  if (text == "software") return EmulateMode::kSoftware;
  if (text == "netns") return EmulateMode::kLatencyOnly;
  return std::nullopt;
}


double transmit_end(const std::vector<RateSegment>& events, double base_bytes_per_s,
                    double start, double bytes) {
  constexpr double kNever = std::numeric_limits<double>::infinity();
  double t = start;
  double remaining = bytes;
  size_t i = 0;  // first event that ends after t
  while (true) {
    while (i < events.size() && events[i].end <= t) ++i;
    double rate = base_bytes_per_s;  // <= 0 outside events: unlimited
    double until = kNever;           // when the rate next changes
    bool scripted = false;
    if (i < events.size()) {
      if (events[i].start <= t) {
        rate = events[i].bytes_per_s;
        until = events[i].end;
        scripted = true;
      } else {
        until = events[i].start;
      }
    }
    if (scripted && rate <= 0) {  // stalled: nothing moves until the event ends
      t = until;
      continue;
    }
    if (remaining <= 0 || (!scripted && rate <= 0)) return t;
    const double capacity = until == kNever ? kNever : (until - t) * rate;
    if (remaining <= capacity) return t + remaining / rate;
    remaining -= capacity;
    t = until;
  }
}

LinkShaper::LinkShaper(int num_regions, std::vector<std::optional<LinkRate>> links,
                       std::vector<std::string> region_names)
    : num_regions_(num_regions), links_(std::move(links)), names_(std::move(region_names)),
      free_at_(static_cast<size_t>(num_regions) * num_regions, 0.0), events_(free_at_.size()) {
  if (links_.size() != free_at_.size())
    throw Error("LinkShaper: " + std::to_string(links_.size()) + " links for " +
                std::to_string(num_regions) + " regions");
  if (names_.empty())
    for (int i = 0; i < num_regions; ++i) names_.push_back("region" + std::to_string(i));
}

LinkShaper LinkShaper::from_topology(const Topology& topology, EmulateMode mode) {
  const int n = topology.num_regions();
  std::vector<std::optional<LinkRate>> links(static_cast<size_t>(n) * n);
  std::vector<std::string> names;
  for (int a = 0; a < n; ++a) {
    names.push_back(topology.regions[a].name);
    for (int b = 0; b < n; ++b) {
      auto spec = topology.link(a, b);
      if (!spec) continue;
      LinkRate rate;
      rate.bytes_per_s = mode == EmulateMode::kLatencyOnly ? 0.0 : spec->bytes_per_s();
      rate.latency_s = spec->latency_ms * 1e-3;
      links[static_cast<size_t>(a) * n + b] = rate;
    }
  }
  return LinkShaper(n, std::move(links), std::move(names));
}

LinkShaper LinkShaper::uniform(std::vector<std::string> names, const LinkRate& rate) {
  const int n = static_cast<int>(names.size());
  std::vector<std::optional<LinkRate>> links(static_cast<size_t>(n) * n);
  for (int a = 0; a < n; ++a)
    for (int b = 0; b < n; ++b) links[static_cast<size_t>(a) * n + b] = a == b ? LinkRate{} : rate;
  return LinkShaper(n, std::move(links), std::move(names));
}

int LinkShaper::region_index(const std::string& name) const {
  for (int i = 0; i < static_cast<int>(names_.size()); ++i)
    if (names_[i] == name) return i;
  return -1;
}

bool LinkShaper::has_link(int from, int to) const {
  if (from < 0 || to < 0 || from >= num_regions_ || to >= num_regions_) return false;
  return links_[static_cast<size_t>(from) * num_regions_ + to].has_value();
}

LinkRate LinkShaper::link(int from, int to) const {
  if (!has_link(from, to)) {
    auto name = [this](int i) {
      return i >= 0 && i < num_regions_ ? names_[i] : "#" + std::to_string(i);
    };
    throw Error("link shaper: no link from region " + name(from) + " to region " + name(to));
  }
  return *links_[static_cast<size_t>(from) * num_regions_ + to];
}

void LinkShaper::add_event(int from, int to, double start, double end, double bytes_per_s, double latency_s) {
  link(from, to);  // throws when there is no such link
  if (!(end > start) || !(bytes_per_s >= 0))
    throw Error("link shaper: bad event [" + std::to_string(start) + ", " + std::to_string(end) +
                ") at " + std::to_string(bytes_per_s) + " B/s");
  std::lock_guard<std::mutex> lock(mu_);
  auto& list = events_[static_cast<size_t>(from) * num_regions_ + to];
  for (const auto& e : list)
    if (start < e.end && e.start < end)
      throw Error("link shaper: events on the link from region " + names_[from] + " to region " +
                  names_[to] + " overlap");
  list.push_back(RateSegment{start, end, bytes_per_s, latency_s});
  std::sort(list.begin(), list.end(),
            [](const RateSegment& a, const RateSegment& b) { return a.start < b.start; });
}

void LinkShaper::add_events(const std::vector<LinkEvent>& events, double origin,
                            const std::string& what) {
  for (const auto& e : events) {
    const int from = region_index(e.from), to = region_index(e.to);
    for (const auto& [index, name] : {std::pair<int, std::string>{from, e.from}, {to, e.to}})
      if (index < 0) throw InputError(what, "", "event '" + e.text + "': unknown region '" + name + "'");
    if (!has_link(from, to))
      throw InputError(what, "", "event '" + e.text + "': no link from region " + e.from +
                                     " to region " + e.to);
    if (e.in_steps) {
      std::lock_guard<std::mutex> lock(mu_);
      step_events_.push_back({from, to, e.start_step, e.start_step + e.steps, e.bytes_per_s, e.latency_s});
      continue;
    }
    try {
      add_event(from, to, origin + e.start_s, origin + e.start_s + e.duration_s, e.bytes_per_s, e.latency_s);
    } catch (const InputError&) {
      throw;
    } catch (const Error& err) {
      throw InputError(what, "", "event '" + e.text + "': " + err.what());
    }
  }
}

void LinkShaper::begin_step(int64_t step, double now) {
  constexpr double kOpen = std::numeric_limits<double>::infinity();
  std::lock_guard<std::mutex> lock(mu_);
  for (StepEvent& e : step_events_) {
    auto& list = events_[static_cast<size_t>(e.from) * num_regions_ + e.to];
    if (e.state == 1 && step >= e.end) {  // close: the segment ends now (or never mattered)
      for (auto it = list.begin(); it != list.end(); ++it)
        if (it->start == e.opened_at && it->end == kOpen) {
          if (now > it->start) it->end = now;
          else list.erase(it);
          break;
        }
      e.state = 2;
    }
    if (e.state == 0 && step >= e.first && step < e.end) {
      hold_link_locked(static_cast<size_t>(e.from) * num_regions_ + e.to, now,
                       RateSegment{now, kOpen, e.bytes_per_s, e.latency_s});
      e.state = 1;
      e.opened_at = now;
    }
  }
}

void LinkShaper::hold_link_locked(size_t index, double now, const RateSegment& segment) {
  // Events of this link that end later give way: the new segment holds the link from now on.
  auto& list = events_[index];
  for (auto& seg : list)
    if (seg.end > now) seg.end = std::max(seg.start, now);
  list.erase(std::remove_if(list.begin(), list.end(), [](const RateSegment& r) { return !(r.end > r.start); }),
             list.end());
  list.push_back(segment);
}

void LinkShaper::cut_region(int region, double now) {
  constexpr double kNever = std::numeric_limits<double>::infinity();
  if (region < 0 || region >= num_regions_)
    throw Error("link shaper: cut_region: region #" + std::to_string(region) + " is not in [0, " +
                std::to_string(num_regions_) + ")");
  std::lock_guard<std::mutex> lock(mu_);
  auto cut = [&](int from, int to) {
    if (from == to || !has_link(from, to)) return;
    hold_link_locked(static_cast<size_t>(from) * num_regions_ + to, now, RateSegment{now, kNever, 0});
    for (StepEvent& e : step_events_)  // a later step event must not reopen the link
      if (e.from == from && e.to == to) e.state = 2;
  };
  for (int other = 0; other < num_regions_; ++other) {
    cut(region, other);
    cut(other, region);
  }
}

double LinkShaper::schedule(int from, int to, size_t bytes, double now) {
  const LinkRate rate = link(from, to);
  std::lock_guard<std::mutex> lock(mu_);
  const size_t index = static_cast<size_t>(from) * num_regions_ + to;
  double& free_at = free_at_[index];
  const double start = std::max(now, free_at);
  free_at = transmit_end(events_[index], rate.bytes_per_s, start, static_cast<double>(bytes));
  // The latency of the moment the last byte leaves: an event's when it sets one, else the link's.
  for (const RateSegment& e : events_[index])
    if (e.start <= free_at && free_at < e.end && e.latency_s >= 0) return free_at + e.latency_s;
  return free_at + rate.latency_s;
}

double LinkShaper::link_free_at(int from, int to, double now) const {
  std::lock_guard<std::mutex> lock(mu_);
  return std::max(now, free_at_[static_cast<size_t>(from) * num_regions_ + to]);
}

void LinkShaper::reset() {
  std::lock_guard<std::mutex> lock(mu_);
  std::fill(free_at_.begin(), free_at_.end(), 0.0);
}

}  // namespace geopipe::comm
