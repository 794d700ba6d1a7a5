// What the page reads out of the trace: span kinds (torch's action letters), one window per
// step per rank (OPT ends a step), and each rank's compute / communication / idle fractions.
#include <geopipe/report/report.h>

#include <algorithm>
#include <cctype>

namespace geopipe::report {

namespace {

bool letter_then_digit(const std::string& name, char letter) {
  return name.size() >= 2 && name[0] == letter && std::isdigit(static_cast<unsigned char>(name[1]));
}

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

std::string upper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

}  // namespace

SpanKind span_kind(const std::string& name) {
  const std::string u = upper(name);
  if (u.rfind("ALLREDUCE", 0) == 0 || u.rfind("ALL_REDUCE", 0) == 0 || u.rfind("ALL-REDUCE", 0) == 0)
    return SpanKind::kAllReduce;
  if (ends_with(name, " wait")) return u.rfind("SEND", 0) == 0 ? SpanKind::kSendWait : SpanKind::kRecvWait;
  if (u.rfind("SEND", 0) == 0) return SpanKind::kSend;
  if (name == "OPT") return SpanKind::kOptimizer;
  if (letter_then_digit(name, 'F')) return SpanKind::kForward;
  if (letter_then_digit(name, 'B')) return SpanKind::kBackward;
  if (letter_then_digit(name, 'I')) return SpanKind::kBackwardInput;
  if (letter_then_digit(name, 'W')) return SpanKind::kBackwardWeight;
  return SpanKind::kOther;
}

const char* span_kind_name(SpanKind k) {
  switch (k) {
    case SpanKind::kForward: return "F forward";
    case SpanKind::kBackward: return "B backward";
    case SpanKind::kBackwardInput: return "I input grad";
    case SpanKind::kBackwardWeight: return "W weight grad";
    case SpanKind::kSend: return "send";
    case SpanKind::kRecvWait: return "receive wait";
    case SpanKind::kSendWait: return "send wait";
    case SpanKind::kAllReduce: return "all-reduce";
    case SpanKind::kOptimizer: return "OPT";
    case SpanKind::kOther: break;
  }
  return "other";
}

// Colour-blind-safe (Tableau 10) hues, one per kind, as the PP schedule visualizers colour them.
const char* span_kind_color(SpanKind k) {
  switch (k) {
    case SpanKind::kForward: return "#4e79a7";
    case SpanKind::kBackward: return "#59a14f";
    case SpanKind::kBackwardInput: return "#8cd17d";
    case SpanKind::kBackwardWeight: return "#b6992d";
    case SpanKind::kSend: return "#f28e2b";
    case SpanKind::kRecvWait: return "#e15759";
    case SpanKind::kSendWait: return "#ff9d9a";
    case SpanKind::kAllReduce: return "#b07aa1";
    case SpanKind::kOptimizer: return "#76b7b2";
    case SpanKind::kOther: break;
  }
  return "#bab0ac";
}

std::vector<StepWindow> step_windows(const RankTrace& rank, int64_t first_step) {
  std::vector<StepWindow> out;
  StepWindow w;
  for (const Span& s : rank.spans) {
    if (w.spans.empty()) w.start_us = s.start_us;
    w.spans.push_back(s);
    if (s.name != "OPT") continue;
    w.end_us = s.start_us + s.dur_us;
    w.step = first_step + static_cast<int64_t>(out.size()) + 1;
    out.push_back(std::move(w));
    w = StepWindow{};
  }
  return out;  // spans after the last OPT belong to no finished step
}

StageFractions stage_fractions(const RankTrace& rank, int64_t first_step) {
  StageFractions f;
  f.rank = rank.rank;
  f.label = rank.label;
  double wall = 0, compute = 0, comm = 0, reduce = 0;
  for (const StepWindow& w : step_windows(rank, first_step)) {
    wall += w.end_us - w.start_us;
    for (const Span& s : w.spans) {
      switch (span_kind(s.name)) {
        case SpanKind::kForward:
        case SpanKind::kBackward:
        case SpanKind::kBackwardInput:
        case SpanKind::kBackwardWeight:
        case SpanKind::kOptimizer: compute += s.dur_us; break;
        case SpanKind::kSend:
        case SpanKind::kRecvWait:
        case SpanKind::kSendWait: comm += s.dur_us; break;
        case SpanKind::kAllReduce: reduce += s.dur_us; break;
        case SpanKind::kOther: break;
      }
    }
  }
  if (wall <= 0) return f;
  f.wall_s = wall * 1e-6;
  f.compute = compute / wall;
  f.comm_wait = comm / wall;
  f.all_reduce = reduce / wall;
  f.idle = std::max(0.0, 1 - f.compute - f.comm_wait - f.all_reduce);
  return f;
}

}  // namespace geopipe::report
