// Link rates and scripted link events as users write them: "200mbit,20ms" (--emulate-link) and
// "FROM>TO@START+DURATION=RATE[,LATENCY];..." (GEOPIPE_LINK_EVENTS, geopipe launch --link-events).
// One grammar for comm's shaper (comm/shaper.h, which applies them; semantics there) and launch
// (which checks an events file before starting anything). Pure parsing.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace geopipe {

struct LinkRate {
  double bytes_per_s = 0;  // <= 0: unlimited bandwidth (latency only)
  double latency_s = 0;    // one-way
};

// Parses "200mbit,20ms": rate in bit/kbit/mbit/gbit per second (decimal, as tc writes them),
// then an optional one-way latency in us/ms/s. Throws InputError naming `what`.
LinkRate parse_link_rate(const std::string& text, const std::string& what = "--emulate-link");

// One scripted event, as written: "FROM>TO@START+DURATION=RATE[,LATENCY]" (regions by name,
// seconds since the transport was created or sSTEP+STEPS, RATE as parse_link_rate's rate part or
// 0 for a stall, LATENCY as its latency part).
struct LinkEvent {
  std::string from, to;
  double start_s = 0;
  double duration_s = 0;
  bool in_steps = false;    // "@sSTEP+STEPS": start_step and steps instead of seconds
  int64_t start_step = 0;   // first step slowed (1-based, as the progress line counts)
  int64_t steps = 0;        // for this many steps
  double bytes_per_s = 0;  // 0: stalled
  double latency_s = -1;   // >= 0: the one-way latency during the event; < 0: the link's own
  std::string text;        // the event as written (for error messages)
};

// Parses semicolon-separated events, e.g. "a>b@2+1.5=0;b>a@0+10=20mbit;a>b@s5+10=2mbit". Empty
// text: none.
// Throws InputError naming `what` and the bad event.
std::vector<LinkEvent> parse_link_events(const std::string& text,
                                         const std::string& what = "GEOPIPE_LINK_EVENTS");

}  // namespace geopipe
