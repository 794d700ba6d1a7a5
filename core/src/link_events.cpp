// Scripted link changes and link rates as users write them (docs/ARCHITECTURE.md, Comm): the
// grammar shared by geopipe launch --link-events (which checks a file before anything starts) and
// comm's shaper (which applies them). Pure parsing: no MPI.
#include <geopipe/core/error.h>
#include <geopipe/core/link_events.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <limits>

namespace geopipe {

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

// "20ms", "500us", "0.1s" as seconds; false otherwise.
bool parse_latency(const std::string& text, double& seconds) {
  double value = 0;
  std::string unit;
  if (!split_number(text, value, unit) || !std::isfinite(value) || value < 0) return false;
  if (unit == "us") seconds = value * 1e-6;
  else if (unit == "ms") seconds = value * 1e-3;
  else if (unit == "s") seconds = value;
  else return false;
  return true;
}

// A whole string of digits as a count; false otherwise.
bool parse_count(const std::string& text, int64_t& count) {
  if (text.empty() || text.size() > 12 || text.find_first_not_of("0123456789") != std::string::npos) return false;
  count = std::stoll(text);
  return true;
}

// A whole string as a finite number of seconds; false when anything is left over.
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
                                      " (expected FROM>TO@START+DURATION=RATE[,LATENCY], e.g. a>b@2+1.5=0 or a>b@s5+10=20mbit,80ms)");
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
    const std::string value = trim(item.substr(eq + 1));
    const size_t comma = value.find(',');
    if (!parse_rate_part(trim(value.substr(0, comma)), e.bytes_per_s, true))
      throw bad("RATE must be 0 (stalled) or a rate such as 20mbit, 500kbit, 1gbit");
    if (comma != std::string::npos && !parse_latency(trim(value.substr(comma + 1)), e.latency_s))
      throw bad("LATENCY after RATE must be a one-way latency such as 80ms, 500us");
    if (e.in_steps && e.bytes_per_s <= 0) throw bad("a stall (rate 0) must be timed in seconds");
    events.push_back(e);
  }
  return events;
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

}  // namespace geopipe
