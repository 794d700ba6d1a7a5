// `geopipe launch --max-restarts N [--replan] [--restart-backoff S]`: runs the job, and when it
// fails, finds out what failed from the ranks' failure records (core/failure.h), re-plans without
// a lost region (with --replan), and relaunches it with --resume from the last complete
// checkpoint. docs/RELIABILITY.md, "The supervisor".
#pragma once

#include <geopipe/core/failure.h>
#include <geopipe/core/plan.h>
#include <geopipe/launch/launch.h>
#include <geopipe/launch/placement.h>

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
// crashed hard), when another rank's waits end at it (hung), or when its region is partitioned
// (waits in a ring across regions: cut links, docs/RELIABILITY.md); a region is lost when every
// rank it holds is a suspect.
// A host is lost when every rank it ran is a suspect while its region keeps ranks on other hosts
// (a real cluster: emulated regions are one host each, so there a lost host is a lost region).
struct LostHost {
  std::string region, host;
  int slots = 0;  // the ranks it ran (without_hosts drops the GPUs the host offered: host_gpu_share)
};
struct Diagnosis {
  std::set<int> suspects;
  std::vector<std::string> lost_regions;
  std::vector<LostHost> lost_hosts;
  std::string cause;  // one line: who failed how
};
// `placement` (optional): where each rank ran, for lost hosts.
Diagnosis diagnose(const Plan& plan, const std::vector<FailureRecord>& records, const Placement* placement = nullptr);

// `topology` without `regions` (and their links): what a re-plan may use.
Topology without_regions(const Topology& topology, const std::vector<std::string>& regions);
// `topology` without `hosts`: each leaves its region's host list, and the region has its slots
// fewer GPUs. InputError naming the region when a host is not in its list.
Topology without_hosts(const Topology& topology, const std::vector<LostHost>& hosts);

// Runs `request` until it succeeds or has been restarted `options.max_restarts` times; returns the
// last attempt's exit status (0 on success). Each restart is logged to `out` and, when the
// program has --json-log (or --run-dir: its train.jsonl), as a line {"restart": n, "cause", "plan",
// "lost_regions", "lost_hosts", "resume_step", "steps_redone", "seconds_lost"} of that log.
// InputError (exit 2) for flags it cannot honour.
int supervise(LaunchRequest request, const SuperviseOptions& options, std::ostream& out);

}  // namespace geopipe::launch
