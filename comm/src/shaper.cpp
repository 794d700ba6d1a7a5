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

namespace {

// Splits "200mbit" into 200 and "mbit"; false when there is no number.
bool split_number(const std::string& text, double& value, std::string& unit) {
  const char* begin = text.c_str();
  char* end = nullptr;
  value = std::strtod(begin, &end);
  if (end == begin) return false;
  unit = std::string(end);
  std::transform(unit.begin(), unit.end(), unit.begin(), [](unsigned char c) { return std::tolower(c); });
  return true;
}

// "200mbit" -> bytes per second (decimal prefixes, as tc writes them); false for anything else.
// With allow_zero, "0" (with or without a unit) is accepted and gives 0.
bool parse_rate_part(const std::string& text, double& bytes_per_s, bool allow_zero) {
  double value = 0;
  std::string unit;
  if (!split_number(text, value, unit) || !std::isfinite(value) || value < 0) return false;
  if (value == 0) {
    bytes_per_s = 0;
    return allow_zero && (unit.empty() || unit == "bit" || unit == "kbit" || unit == "mbit" ||
                          unit == "gbit");
  }
  double bits = 0;
  if (unit == "bit") bits = value;
  else if (unit == "kbit") bits = value * 1e3;
  else if (unit == "mbit") bits = value * 1e6;
  else if (unit == "gbit") bits = value * 1e9;
  else return false;
  bytes_per_s = bits / 8.0;
  return true;
}

// A whole string as a finite number of seconds; false when anything is left over.
bool parse_count(const std::string& text, int64_t& count) {
  if (text.empty() || text.size() > 12 || text.find_first_not_of("0123456789") != std::string::npos) return false;
  count = std::stoll(text);
  return true;
}

bool parse_seconds(const std::string& text, double& seconds) {
  if (text.empty() || std::isspace(static_cast<unsigned char>(text[0]))) return false;
  char* end = nullptr;
  seconds = std::strtod(text.c_str(), &end);
  return end != text.c_str() && *end == '\0' && std::isfinite(seconds);
}

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\n");
  if (b == std::string::npos) return "";
  const auto e = s.find_last_not_of(" \t\n");
  return s.substr(b, e - b + 1);
}

}  // namespace

std::vector<LinkEvent> parse_link_events(const std::string& text, const std::string& what) {
  std::vector<LinkEvent> events;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t semi = text.find(';', pos);
    if (semi == std::string::npos) semi = text.size();
    const std::string item = trim(text.substr(pos, semi - pos));
    pos = semi + 1;
    if (item.empty()) continue;
    auto bad = [&](const std::string& why) {
      return InputError(what, "", "event '" + item + "': " + why +
                                      " (expected FROM>TO@START+DURATION=RATE, e.g. a>b@2+1.5=0)");
    };
    const size_t gt = item.find('>');
    const size_t at = item.find('@', gt == std::string::npos ? 0 : gt);
    const size_t plus = item.find('+', at == std::string::npos ? 0 : at);
    const size_t eq = item.find('=', plus == std::string::npos ? 0 : plus);
    if (gt == std::string::npos || at == std::string::npos || plus == std::string::npos ||
        eq == std::string::npos)
      throw bad("malformed");
    LinkEvent e;
    e.text = item;
    e.from = trim(item.substr(0, gt));
    e.to = trim(item.substr(gt + 1, at - gt - 1));
    if (e.from.empty() || e.to.empty()) throw bad("missing region name");
    const std::string start = trim(item.substr(at + 1, plus - at - 1));
    const std::string duration = trim(item.substr(plus + 1, eq - plus - 1));
    if (!start.empty() && start[0] == 's') {  // in training steps
      e.in_steps = true;
      if (!parse_count(start.substr(1), e.start_step) || e.start_step < 1) throw bad("sSTEP must be a step >= 1");
      if (!parse_count(duration, e.steps) || e.steps < 1) throw bad("STEPS must be a whole number of steps >= 1");
    } else {
      if (!parse_seconds(start, e.start_s) || e.start_s < 0) throw bad("START must be seconds >= 0");
      if (!parse_seconds(duration, e.duration_s) || e.duration_s <= 0) throw bad("DURATION must be seconds > 0");
    }
    if (!parse_rate_part(trim(item.substr(eq + 1)), e.bytes_per_s, true))
      throw bad("RATE must be 0 (stalled) or a rate such as 20mbit, 500kbit, 1gbit");
    if (e.in_steps && e.bytes_per_s <= 0) throw bad("a stall (rate 0) must be timed in seconds");
    events.push_back(e);
  }
  return events;
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

LinkRate parse_link_rate(const std::string& text, const std::string& what) {
  const auto comma = text.find(',');
  const std::string rate_text = text.substr(0, comma);
  const std::string lat_text = comma == std::string::npos ? "0ms" : text.substr(comma + 1);
  LinkRate rate;
  double value = 0;
  std::string unit;
  // Rates in bits per second as tc writes them: bit, kbit, mbit, gbit (decimal prefixes).
  if (!split_number(rate_text, value, unit) || value <= 0)
    throw InputError("", what, "'" + text + "': expected RATE,LATENCY such as 200mbit,20ms");
  if (!parse_rate_part(rate_text, rate.bytes_per_s, false))
    throw InputError("", what, "'" + rate_text + "': rate unit must be bit, kbit, mbit or gbit");
  if (!split_number(lat_text, value, unit) || value < 0)
    throw InputError("", what, "'" + lat_text + "': expected a latency such as 20ms");
  if (unit == "us") rate.latency_s = value * 1e-6;
  else if (unit == "ms") rate.latency_s = value * 1e-3;
  else if (unit == "s") rate.latency_s = value;
  else throw InputError("", what, "'" + lat_text + "': latency unit must be us, ms or s");
  return rate;
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

void LinkShaper::add_event(int from, int to, double start, double end, double bytes_per_s) {
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
  list.push_back(RateSegment{start, end, bytes_per_s});
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
      step_events_.push_back({from, to, e.start_step, e.start_step + e.steps, e.bytes_per_s});
      continue;
    }
    try {
      add_event(from, to, origin + e.start_s, origin + e.start_s + e.duration_s, e.bytes_per_s);
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
      // Time events of this link that end later give way: the step event holds the link now.
      for (auto& seg : list)
        if (seg.end > now) seg.end = std::max(seg.start, now);
      list.erase(std::remove_if(list.begin(), list.end(), [](const RateSegment& r) { return !(r.end > r.start); }),
                 list.end());
      list.push_back(RateSegment{now, kOpen, e.bytes_per_s});
      e.state = 1;
      e.opened_at = now;
    }
  }
}

double LinkShaper::schedule(int from, int to, size_t bytes, double now) {
  const LinkRate rate = link(from, to);
  std::lock_guard<std::mutex> lock(mu_);
  const size_t index = static_cast<size_t>(from) * num_regions_ + to;
  double& free_at = free_at_[index];
  const double start = std::max(now, free_at);
  free_at = transmit_end(events_[index], rate.bytes_per_s, start, static_cast<double>(bytes));
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
