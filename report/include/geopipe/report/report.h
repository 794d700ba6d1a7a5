// `geopipe report`: a run directory (core/run_dir.h) loaded into typed data, and one
// self-contained HTML page of it (inline SVG, no script, no network); `geopipe simulate --html`
// renders a simulation the same way. Pure C++17 on geopipe_core. What each chart shows and where
// its data comes from: docs/ARCHITECTURE.md, Report.
#pragma once

#include <geopipe/core/config.h>
#include <geopipe/core/plan.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace geopipe::report {

// One directed link in one step, as the JSON step log writes it ("1->2": {...}).
struct LinkSample {
  double mb_per_s = 0, wait_s = 0, busy_s = 0, bytes = 0;
  std::string codec;  // empty when the log does not name it (the plan's or run.json's applies)
};

struct StepRecord {
  int64_t step = 0;  // 1-based, as the progress line and the log number them
  double loss = 0, lr = 0, grad_norm = 0, tokens_per_s = 0, step_s = 0, elapsed_s = 0;
  std::optional<double> val_loss;
  std::map<std::string, LinkSample> links;  // "0->1", "1->0", ...
};

// One "X" event of the merged trace: microseconds on the rank's clock (Unix epoch).
struct Span {
  std::string name;  // "F3", "B3", "SEND_F3", "RECV_B3 wait", "send wait", "OPT"
  double start_us = 0, dur_us = 0;
};

struct RankTrace {
  int rank = 0;
  std::string label;        // the trace's process name, "rank 1 stage 1 (us-west)"
  std::vector<Span> spans;  // sorted by start
};

struct TraceData {
  std::string plan_hash;
  int64_t first_step = 0;  // steps before this trace's first one (a resumed run)
  std::vector<RankTrace> ranks;  // by rank
};

// run.json: how the run was started.
struct RunInfo {
  std::vector<std::string> command;
  std::string start_time;
  std::string plan_hash;
  int world_size = 0;
  std::map<std::string, std::string> link_codecs;  // "0->1" -> codec the run used
};

// One restart of a supervised run: a line `geopipe launch --max-restarts` appends to the step log
// (launch/supervise.h) before it relaunches the job.
struct RestartRecord {
  int64_t restart = 0;                    // 1, 2, ...
  std::string cause;                      // who failed how
  std::string plan;                       // the plan the job was relaunched on
  std::vector<std::string> lost_regions;  // dropped by a re-plan (empty: the same plan)
  std::vector<std::string> lost_hosts;    // "HOST of REGION", dropped by a re-plan
  int64_t resume_step = 0;                // the checkpoint it resumed from (0: the start)
  int64_t steps_redone = 0;
  double seconds_lost = 0;
};

struct CheckpointInfo {
  int64_t step = 0;
  int files = 0;
  std::string path;  // the manifest
};

struct RunData {
  std::string dir;
  Plan plan;
  std::optional<Topology> topology;
  std::optional<RunInfo> info;
  std::vector<StepRecord> steps;
  std::vector<RestartRecord> restarts;  // in the order the log has them
  std::optional<TraceData> trace;
  std::string summary;  // empty when summary.txt is absent
  std::optional<CheckpointInfo> checkpoint;
  std::vector<std::string> notes;  // optional files that were absent, said on the page
};

// Loads DIR's files. plan.json and train.jsonl are required; the others are optional (the page
// says which were absent). Every malformed file, a truncated step log, and a trace or run.json
// whose plan hash is not plan.json's are InputErrors naming the file and field (exit 2).
RunData load_run(const std::string& dir);

// ---- What the page derives from the data (tested on their own) -----------------------------

// One step of one rank in the trace: from its first span after the previous OPT to the end of
// its OPT, the spans in it.
struct StepWindow {
  int64_t step = 0;  // 1-based log step
  double start_us = 0, end_us = 0;
  std::vector<Span> spans;
};
std::vector<StepWindow> step_windows(const RankTrace& rank, int64_t first_step);

enum class SpanKind { kForward, kBackward, kBackwardInput, kBackwardWeight, kSend, kRecvWait, kSendWait,
                      kAllReduce, kOptimizer, kOther };
SpanKind span_kind(const std::string& name);
const char* span_kind_name(SpanKind kind);
const char* span_kind_color(SpanKind kind);

// Fractions of a rank's step time, summed over its steps in the trace.
struct StageFractions {
  int rank = 0;
  std::string label;
  double compute = 0, comm_wait = 0, all_reduce = 0, idle = 0;
  double wall_s = 0;
};
StageFractions stage_fractions(const RankTrace& rank, int64_t first_step);

// A marker on the step axis: a restart (the log's elapsed time starts again) or a link's codec
// changing (the log names codecs per link).
struct StepMarker {
  int64_t step = 0;
  std::string label;
};
std::vector<StepMarker> step_markers(const RunData& run);

// Median step time of the log (the "measured" iteration time).
double median_step_s(const std::vector<StepRecord>& steps);

struct RenderOptions {
  std::optional<int64_t> timeline_step;  // default: the last step in the trace
};
// The whole page. InputError (naming --step) when the timeline's step is not in the trace.
std::string render_run_html(const RunData& run, const RenderOptions& options = {});

// ---- Simulation ------------------------------------------------------------------------------

struct PolicyOutcome {
  std::string policy;
  std::vector<double> jct_s;  // finished jobs
  int never_started = 0;
  double avg_jct_s = 0, p95_jct_s = 0, makespan_s = 0, energy_kwh = 0, cost_usd = 0;
};
struct SimulationScenario {
  std::string title;
  std::vector<PolicyOutcome> policies;
};
std::string render_simulation_html(const std::string& title, const std::vector<SimulationScenario>& scenarios);

// Writes `html` to `path` (temp file + rename); Error naming the path when it cannot.
void write_html(const std::string& path, const std::string& html);

}  // namespace geopipe::report
