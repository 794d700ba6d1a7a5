// Loading a run directory (core/run_dir.h) into RunData. Later issues add fields to the step log
// and the trace, so unknown fields are ignored here; a missing or malformed field that the page
// needs is an InputError naming the file, the line or JSON path and what was expected.
#include <geopipe/core/error.h>
#include <geopipe/core/run_dir.h>
#include <geopipe/report/report.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace geopipe::report {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// Bounds of the integers the files carry: far above any real run, low enough for int arithmetic.
constexpr int64_t kMaxStep = int64_t{1} << 50;
constexpr int64_t kMaxRank = int64_t{1} << 20;

// A finite number at obj[key]; nullopt when absent and not required.
std::optional<double> number(const json& obj, const std::string& file, const std::string& path, const char* key,
                             bool required) {
  const auto it = obj.find(key);
  const std::string where = path.empty() ? key : path + "." + key;
  if (it == obj.end()) {
    if (required) throw InputError(file, where, "missing");
    return std::nullopt;
  }
  if (!it->is_number() || !std::isfinite(it->get<double>()))
    throw InputError(file, where, "expected a finite number, got " + it->dump());
  return it->get<double>();
}

// A whole number in [0, max] at obj[key] (a pid, a step, a rank count); `fallback` when absent
// and not required.
int64_t integer(const json& obj, const std::string& file, const std::string& path, const char* key, int64_t max,
                bool required, int64_t fallback = 0) {
  const auto it = obj.find(key);
  const std::string where = path.empty() ? key : path + "." + key;
  if (it == obj.end()) {
    if (required) throw InputError(file, where, "missing");
    return fallback;
  }
  if (!it->is_number_integer() || it->get<int64_t>() < 0 || it->get<int64_t>() > max)
    throw InputError(file, where, "expected a whole number from 0 to " + std::to_string(max) + ", got " + it->dump());
  return it->get<int64_t>();
}

std::string string_field(const json& obj, const std::string& file, const std::string& path, const char* key) {
  const auto it = obj.find(key);
  if (it == obj.end()) return "";
  if (!it->is_string()) throw InputError(file, path + "." + key, "expected a string, got " + it->dump());
  return it->get<std::string>();
}

json read_json(const fs::path& path) {
  std::ifstream in(path);
  if (!in) throw InputError(path.string(), "", "cannot read the file");
  std::stringstream text;
  text << in.rdbuf();
  json doc = json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) throw InputError(path.string(), "", "not valid JSON (truncated or not written by geopipe)");
  if (!doc.is_object()) throw InputError(path.string(), "", "expected a JSON object");
  return doc;
}

std::map<std::string, LinkSample> parse_links(const json& links, const std::string& file, const std::string& path) {
  if (!links.is_object()) throw InputError(file, path, "expected an object of links, got " + links.dump());
  std::map<std::string, LinkSample> out;
  for (const auto& [name, v] : links.items()) {
    const std::string p = path + "." + name;
    if (!v.is_object()) throw InputError(file, p, "expected an object");
    LinkSample s;
    s.mb_per_s = *number(v, file, p, "mb_per_s", true);
    s.wait_s = number(v, file, p, "wait_s", false).value_or(0);
    s.busy_s = number(v, file, p, "busy_s", false).value_or(0);
    s.bytes = number(v, file, p, "bytes", false).value_or(0);
    s.codec = string_field(v, file, p, "codec");
    out[name] = s;
  }
  return out;
}

StepRecord parse_step(const json& j, const std::string& file, const std::string& line) {
  StepRecord r;
  const auto step = j.find("step");
  if (step == j.end() || !step->is_number_integer() || step->get<int64_t>() < 1 || step->get<int64_t>() > kMaxStep)
    throw InputError(file, line + ".step", "expected a step number >= 1");
  r.step = step->get<int64_t>();
  r.loss = *number(j, file, line, "loss", true);
  r.step_s = *number(j, file, line, "step_s", true);
  r.lr = number(j, file, line, "lr", false).value_or(0);
  r.grad_norm = number(j, file, line, "grad_norm", false).value_or(0);
  r.tokens_per_s = number(j, file, line, "tokens_per_s", false).value_or(0);
  r.elapsed_s = number(j, file, line, "elapsed_s", false).value_or(0);
  r.val_loss = number(j, file, line, "val_loss", false);
  if (const auto l = j.find("links"); l != j.end()) r.links = parse_links(*l, file, line + ".links");
  return r;
}

RestartRecord parse_restart(const json& j, const std::string& file, const std::string& line) {
  RestartRecord r;
  r.restart = integer(j, file, line, "restart", kMaxStep, true);
  r.cause = string_field(j, file, line, "cause");
  r.plan = string_field(j, file, line, "plan");
  if (const auto l = j.find("lost_regions"); l != j.end()) {
    if (!l->is_array()) throw InputError(file, line + ".lost_regions", "expected an array of region names, got " + l->dump());
    for (const auto& name : *l) {
      if (!name.is_string()) throw InputError(file, line + ".lost_regions", "expected region names, got " + name.dump());
      r.lost_regions.push_back(name.get<std::string>());
    }
  }
  if (const auto l = j.find("lost_hosts"); l != j.end()) {
    if (!l->is_array()) throw InputError(file, line + ".lost_hosts", "expected an array of hosts, got " + l->dump());
    for (size_t i = 0; i < l->size(); ++i) {
      const std::string where = line + ".lost_hosts[" + std::to_string(i) + "]";
      const json& h = (*l)[i];
      if (!h.is_object()) throw InputError(file, where, "expected {\"region\", \"host\"}, got " + h.dump());
      r.lost_hosts.push_back(string_field(h, file, where, "host") + " of " + string_field(h, file, where, "region"));
    }
  }
  r.resume_step = integer(j, file, line, "resume_step", kMaxStep, true);
  r.steps_redone = integer(j, file, line, "steps_redone", kMaxStep, true);
  r.seconds_lost = *number(j, file, line, "seconds_lost", true);
  return r;
}

// The step lines and the supervisor's restart lines ({"restart": N, ...}, no "step") of the log.
void load_step_log(const fs::path& path, RunData& run) {
  const std::string file = path.string();
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(file, "", "missing: the run's JSON step log (geopipe-train --run-dir writes it)");
  std::stringstream text;
  text << in.rdbuf();
  const std::string all = text.str();
  // Every line a writer finishes ends in a newline: a last line without one was cut off.
  if (!all.empty() && all.back() != '\n')
    throw InputError(file, "line " + std::to_string(std::count(all.begin(), all.end(), '\n') + 1),
                     "truncated: the last line has no newline (the run was killed while writing it?)");
  std::vector<StepRecord> steps;
  std::istringstream lines(all);
  std::string line;
  for (int n = 1; std::getline(lines, line); ++n) {
    if (line.empty()) continue;
    const std::string where = "line " + std::to_string(n);
    const json j = json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object()) throw InputError(file, where, "not a JSON object (truncated?)");
    if (j.contains("restart") && !j.contains("step")) {
      run.restarts.push_back(parse_restart(j, file, where));
      continue;
    }
    steps.push_back(parse_step(j, file, where));
    if (steps.size() > 1 && steps.back().step <= steps[steps.size() - 2].step)
      throw InputError(file, where + ".step", "step " + std::to_string(steps.back().step) + " after step " +
                                                  std::to_string(steps[steps.size() - 2].step) + ": steps must increase");
  }
  if (steps.empty()) throw InputError(file, "", "empty: no step was logged");
  run.steps = std::move(steps);
}

// The spans of every rank ("X" events grouped by pid) and the ranks' names ("M" events).
TraceData load_trace(const fs::path& path, const std::string& plan_hash) {
  const std::string file = path.string();
  const json doc = read_json(path);
  TraceData t;
  if (const auto other = doc.find("otherData"); other != doc.end() && other->is_object()) {
    t.plan_hash = string_field(*other, file, "otherData", "plan_hash");
    t.first_step = integer(*other, file, "otherData", "first_step", kMaxStep, false);
  }
  if (!t.plan_hash.empty() && t.plan_hash != plan_hash)
    throw InputError(file, "otherData.plan_hash",
                     "trace of plan " + t.plan_hash + ", but this run's plan.json has hash " + plan_hash +
                         ": the trace is from another run");
  const auto events = doc.find("traceEvents");
  if (events == doc.end() || !events->is_array()) throw InputError(file, "traceEvents", "expected an array of events");
  std::map<int, RankTrace> ranks;
  for (size_t i = 0; i < events->size(); ++i) {
    const json& e = (*events)[i];
    const std::string p = "traceEvents[" + std::to_string(i) + "]";
    if (!e.is_object()) throw InputError(file, p, "expected an object");
    const std::string ph = string_field(e, file, p, "ph");
    const int pid = static_cast<int>(integer(e, file, p, "pid", kMaxRank, true));
    RankTrace& r = ranks[pid];
    r.rank = pid;
    if (ph == "M" && string_field(e, file, p, "name") == "process_name" && e.contains("args") && e["args"].is_object())
      r.label = string_field(e["args"], file, p + ".args", "name");
    if (ph != "X") continue;
    r.spans.push_back({string_field(e, file, p, "name"), *number(e, file, p, "ts", true), *number(e, file, p, "dur", true)});
  }
  for (auto& [pid, r] : ranks) {
    std::stable_sort(r.spans.begin(), r.spans.end(), [](const Span& a, const Span& b) { return a.start_us < b.start_us; });
    if (r.label.empty()) r.label = "rank " + std::to_string(pid);
    t.ranks.push_back(std::move(r));
  }
  return t;
}

RunInfo load_run_info(const fs::path& path, const std::string& plan_hash) {
  const std::string file = path.string();
  const json doc = read_json(path);
  RunInfo info;
  info.start_time = string_field(doc, file, "", "start_time");
  info.plan_hash = string_field(doc, file, "", "plan_hash");
  info.world_size = static_cast<int>(integer(doc, file, "", "world_size", kMaxRank, false));
  if (!info.plan_hash.empty() && info.plan_hash != plan_hash)
    throw InputError(file, "plan_hash", "run of plan " + info.plan_hash + ", but plan.json has hash " + plan_hash);
  if (const auto c = doc.find("command"); c != doc.end() && c->is_array())
    for (const auto& a : *c)
      if (a.is_string()) info.command.push_back(a.get<std::string>());
  if (const auto c = doc.find("link_codecs"); c != doc.end() && c->is_object())
    for (const auto& [name, v] : c->items())
      if (v.is_string()) info.link_codecs[name] = v.get<std::string>();
  return info;
}

CheckpointInfo load_checkpoint_info(const fs::path& path) {
  const json doc = read_json(path);
  CheckpointInfo c;
  c.path = path.string();
  c.step = integer(doc, c.path, "", "step", kMaxStep, true);
  if (const auto f = doc.find("files"); f != doc.end() && f->is_array()) c.files = static_cast<int>(f->size());
  return c;
}

}  // namespace

RunData load_run(const std::string& dir) {
  const fs::path d(dir);
  if (!fs::is_directory(d)) throw InputError(dir, "", "not a run directory (geopipe-train --run-dir DIR writes one)");
  RunData run;
  run.dir = dir;
  const fs::path plan_path = d / run_dir::kPlan;
  if (!fs::exists(plan_path)) throw InputError(plan_path.string(), "", "missing: the run's plan");
  run.plan = load_plan(plan_path.string());
  const std::string hash = run.plan.hash();
  if (fs::exists(d / run_dir::kTopology)) {
    run.topology = load_topology((d / run_dir::kTopology).string());
    // The prices and bandwidths on the page must be the ones the plan was made for.
    if (run.topology->hash() != run.plan.provenance.topology_hash)
      throw InputError((d / run_dir::kTopology).string(), "",
                       "topology hash " + run.topology->hash() + ", but plan.json was made for topology hash " +
                           run.plan.provenance.topology_hash);
  } else run.notes.push_back(std::string(run_dir::kTopology) + " absent: no link bandwidths, prices or electricity");
  if (fs::exists(d / run_dir::kRunInfo)) run.info = load_run_info(d / run_dir::kRunInfo, hash);
  load_step_log(d / run_dir::kStepLog, run);
  if (fs::exists(d / run_dir::kTrace)) {
    run.trace = load_trace(d / run_dir::kTrace, hash);
    if (run.trace->plan_hash.empty())
      run.notes.push_back(std::string(run_dir::kTrace) +
                          " names no plan hash (written before geopipe stamped it): not checked against plan.json");
  } else {
    run.notes.push_back(std::string(run_dir::kTrace) + " absent: no schedule timeline or per-stage fractions");
  }
  if (std::ifstream s(d / run_dir::kSummary); s) {
    std::stringstream text;
    text << s.rdbuf();
    run.summary = text.str();
  }
  const fs::path manifest = d / run_dir::kCheckpoints / run_dir::kManifest;
  if (fs::exists(manifest)) run.checkpoint = load_checkpoint_info(manifest);
  return run;
}

double median_step_s(const std::vector<StepRecord>& steps) {
  if (steps.empty()) return 0;
  std::vector<double> v;
  for (const auto& s : steps) v.push_back(s.step_s);
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

std::vector<StepMarker> step_markers(const RunData& run) {
  std::vector<StepMarker> out;
  std::map<std::string, std::string> codec;  // last codec seen per link
  for (size_t i = 0; i < run.steps.size(); ++i) {
    const StepRecord& s = run.steps[i];
    // A resumed run starts its clock again: elapsed time falls (or a step is skipped).
    if (i > 0 && (s.elapsed_s < run.steps[i - 1].elapsed_s || s.step != run.steps[i - 1].step + 1))
      out.push_back({s.step, "restart"});
    for (const auto& [name, l] : s.links) {
      if (l.codec.empty()) continue;
      const auto it = codec.find(name);
      if (it != codec.end() && it->second != l.codec) out.push_back({s.step, name + " " + l.codec});
      codec[name] = l.codec;
    }
  }
  return out;
}

}  // namespace geopipe::report
