// `geopipe launch --max-restarts N [--replan] [--restart-backoff S]`: runs the job, and when it
// fails, finds out what failed from the ranks' failure records (core/failure.h), re-plans without
// a lost region (with --replan), and relaunches it with --resume from the last complete
// checkpoint. docs/RELIABILITY.md, "The supervisor".
#pragma once

#include <geopipe/core/failure.h>
#include <geopipe/core/plan.h>
#include <geopipe/launch/launch.h>

#include <iosfwd>
#include <set>
#include <string>
#include <vector>

namespace geopipe::launch {

struct SuperviseOptions {
  int max_restarts = 0;
  bool replan = false;     // a lost region: plan the job again without it
  double backoff_s = 0;    // wait before each relaunch
};

// What a failed attempt's records say. A rank is a suspect when it left no record (killed, or
// crashed hard) or when another rank timed out waiting for it (hung, or its link cut); a region
// is lost when every rank it holds is a suspect.
struct Diagnosis {
  std::set<int> suspects;
  std::vector<std::string> lost_regions;
  std::string cause;  // one line: who failed how
};
Diagnosis diagnose(const Plan& plan, const std::vector<FailureRecord>& records);

// `topology` without `regions` (and their links): what a re-plan may use.
Topology without_regions(const Topology& topology, const std::vector<std::string>& regions);

// Runs `request` until it succeeds or has been restarted `options.max_restarts` times; returns the
// last attempt's exit status (0 on success). Each restart is logged to `out` and, when the
// program has --json-log, as a line {"restart": n, "cause", "plan", "lost_regions",
// "steps_redone", "seconds_lost"} of that log. InputError (exit 2) for flags it cannot honour.
int supervise(LaunchRequest request, const SuperviseOptions& options, std::ostream& out);

}  // namespace geopipe::launch
