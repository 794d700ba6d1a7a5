// `geopipe launch`: from a plan (or K ranks per region) and a topology to a running job.
#pragma once

#include <geopipe/launch/command.h>
#include <geopipe/launch/placement.h>

#include <iosfwd>
#include <optional>
#include <string>
#include <vector>

namespace geopipe::launch {

struct LaunchRequest {
  std::string topology_file;
  std::string plan_file;           // empty: ranks_per_region ranks in every region
  int ranks_per_region = 0;
  std::optional<Emulation> emulation;  // unset: none when every region names hosts, else software
  std::string hostfile;            // optional Open MPI hostfile giving the slots of real hosts
  std::vector<std::string> interfaces;  // --iface values: NAME or REGION=NAME
  std::string run_dir;             // where generated files go; empty: $TMPDIR/geopipe-launch-<pid>
  std::string mpirun = "mpirun";
  double timeout_s = 0;            // > 0: stop the job after this long (status 124)
  bool dry_run = false;            // print the command and files, run nothing
  bool slurm = false;              // print an sbatch script, run nothing
  bool allow_run_as_root = false;  // give mpirun Open MPI's --allow-run-as-root (see mpirun_allows_root)
  int tcp_links = 0;               // > 0: TCP connections per peer (LaunchSpec::tcp_links)
  std::string link_events_file;    // scripted link changes, one event per line (LaunchSpec::link_events)
  std::vector<std::string> program;
};

// Loads and checks the inputs and places the ranks: everything short of running.
// InputError (exit 2) for bad files, unknown or short regions, hosts that do not resolve (with
// dry_run or slurm they are spec.warnings instead: the command or script is for another cluster),
// --emulate netns without root (unless dry_run), and a launch as root that Open MPI would refuse.
LaunchSpec prepare_launch(const LaunchRequest& request);

// The events of a --link-events file (core/link_events.h grammar, one per line, '#' starts a
// comment), joined for GEOPIPE_LINK_EVENTS. InputError naming `path`:LINE for a malformed event or
// a region the topology lacks, and for a file that cannot be read.
std::string read_link_events_file(const std::string& path, const Topology& topology);

// Runs the request: prints (dry_run, slurm) or sets up the emulation, runs mpirun, tears the
// emulation down and returns the job's exit status. Progress goes to `out`; warnings go to the
// log (stderr) and, as `# warning:` comments, into what dry_run and slurm print.
int launch(const LaunchRequest& request, std::ostream& out);

}  // namespace geopipe::launch
