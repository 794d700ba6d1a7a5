// The command that starts a placed job: an Open MPI `mpirun` with one app context per run of
// consecutive ranks on one host (so rank r is the plan's rank r), the files it reads, the
// per-rank environment the comm layer expects, and the same placement as a Slurm script.
#pragma once

#include <geopipe/launch/placement.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

namespace geopipe::launch {

// Network interface to use between regions: one for all, or one per region (REGION=IFACE).
// Empty: leave the choice to Open MPI and NCCL (they skip loopback by default).
struct Interfaces {
  std::string all;
  std::map<std::string, std::string> per_region;
  std::string for_region(const std::string& region) const;
  // Parses "--iface" values: "eth0" or "us-east=ens5"; InputError naming the flag otherwise.
  static Interfaces parse(const std::vector<std::string>& values, const Topology& topology);
};

struct LaunchSpec {
  Placement placement;
  Emulation emulation = Emulation::kSoftware;
  std::string topology_path;          // absolute (every rank reads it through GEOPIPE_TOPOLOGY)
  std::string plan_path;              // absolute; empty without a plan
  std::string job_name = "geopipe";   // Slurm job name
  std::vector<std::string> program;   // PROGRAM ARGS...
  std::string run_dir;                // absolute folder of the generated files
  std::string mpirun = "mpirun";
  Interfaces interfaces;
  // netns only: the namespaces' subnet (CIDR, for Open MPI's TCP interface selection), the
  // launch agent script, and the namespace mpirun itself runs in.
  std::string netns_subnet;
  std::string netns_agent;
  std::string netns_launcher;
  // The value ranks see in GEOPIPE_EMULATE (netns with netem present: "none", the kernel
  // applies latency too); empty: emulation_name(emulation).
  std::string emulate_env;
  bool allow_run_as_root = false;     // pass Open MPI's --allow-run-as-root (mpirun_allows_root)
  // > 0: Open MPI opens this many TCP connections per peer (MCA btl_tcp_links), so one WAN link
  // carries several streams against per-flow rate caps; 0: Open MPI's default (1).
  int tcp_links = 0;
  // Scripted link changes for every rank's shaper (GEOPIPE_LINK_EVENTS; else the caller's
  // environment's, forwarded as it is): read from --link-events FILE and checked.
  std::string link_events;
  // Printed as `# warning: ...` lines in the --dry-run output and the Slurm script (hosts that do
  // not resolve on the machine that wrote them), so the reader of the file sees them too.
  std::vector<std::string> warnings;
};

// Open MPI's mpirun refuses to start as root unless given --allow-run-as-root or both of these
// variables, each set to exactly "1".
inline constexpr const char* kOmpiAllowRunAsRoot = "OMPI_ALLOW_RUN_AS_ROOT";
inline constexpr const char* kOmpiAllowRunAsRootConfirm = "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM";
// Open MPI's MCA parameter for TCP connections per peer (LaunchSpec::tcp_links): `--mca NAME N` on
// mpirun's line, OMPI_MCA_NAME=N in a Slurm script's environment.
inline constexpr const char* kTcpLinksParam = "btl_tcp_links";

// Who would start mpirun.
struct Launcher {
  bool root = false;             // effective uid 0
  bool env_allows_root = false;  // both variables above are "1"
  static Launcher current();     // this process
};

// The one place that decides about Open MPI's root refusal; returns whether mpirun gets
// --allow-run-as-root. Yes when `requested` (geopipe launch --allow-run-as-root) or with
// netns emulation (it needs root, so its mpirun always runs as root). A launch that starts
// mpirun here (`starts_mpirun`: not --dry-run, not --slurm) as root without either and without the
// two variables is an InputError with one line saying what to pass, before anything starts,
// instead of Open MPI's page of text. srun (--slurm) has no such refusal.
bool mpirun_allows_root(Emulation emulation, bool requested, bool starts_mpirun, const Launcher& launcher);

struct GeneratedFile {
  std::string path;
  std::string content;
  bool executable = false;
};

struct MpirunCommand {
  std::vector<std::string> argv;        // argv[0] is mpirun (or `ip netns exec NS mpirun`)
  std::vector<GeneratedFile> files;     // to write before running argv
};

// Environment of one rank: GEOPIPE_REGION, GEOPIPE_TOPOLOGY, GEOPIPE_EMULATE, GEOPIPE_PLAN (with
// a plan), and with an interface NCCL_SOCKET_IFNAME and OMPI_MCA_btl_tcp_if_include.
std::vector<std::pair<std::string, std::string>> rank_environment(const LaunchSpec& spec, const RankPlace& rank);

// The hostfile (`host slots=N`), placement.json (rank, stage, region, host) and the mpirun argv.
MpirunCommand build_mpirun(const LaunchSpec& spec);

// An sbatch script that starts the same placement with `srun --mpi=pmix` (arbitrary
// distribution from a host list in rank order, per-rank environment set by a small bash case),
// with spec.warnings as comments under its header. Needs real hosts: InputError for an emulated
// launch.
std::string build_slurm_script(const LaunchSpec& spec);

// `# warning: TEXT\n`, one line whatever TEXT holds (a newline in it becomes a space).
std::string warning_comment(const std::string& text);

// POSIX shell quoting (single quotes where needed), for printing and for generated scripts.
std::string shell_quote(const std::string& word);
std::string shell_join(const std::vector<std::string>& argv);

// Writes each file (creating its folder); Error naming the path on failure.
void write_files(const std::vector<GeneratedFile>& files);

}  // namespace geopipe::launch
