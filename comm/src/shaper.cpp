#include <geopipe/comm/shaper.h>

#include <geopipe/core/config.h>
#include <geopipe/core/error.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>

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

}  // namespace

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
  double bits = 0;
  if (unit == "bit") bits = value;
  else if (unit == "kbit") bits = value * 1e3;
  else if (unit == "mbit") bits = value * 1e6;
  else if (unit == "gbit") bits = value * 1e9;
  else
    throw InputError("", what, "'" + rate_text + "': rate unit must be bit, kbit, mbit or gbit");
  rate.bytes_per_s = bits / 8.0;
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
      free_at_(static_cast<size_t>(num_regions) * num_regions, 0.0) {
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

double LinkShaper::schedule(int from, int to, size_t bytes, double now) {
  const LinkRate rate = link(from, to);
  std::lock_guard<std::mutex> lock(mu_);
  double& free_at = free_at_[static_cast<size_t>(from) * num_regions_ + to];
  const double start = std::max(now, free_at);
  const double busy = rate.bytes_per_s > 0 ? static_cast<double>(bytes) / rate.bytes_per_s : 0.0;
  free_at = start + busy;
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
