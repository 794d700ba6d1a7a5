#include "commands.h"

#include <geopipe/core/error.h>
#include <geopipe/launch/launch.h>
#include <geopipe/launch/netns.h>
#include <geopipe/launch/supervise.h>

#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include <unistd.h>

namespace geopipe::cli {

namespace {

struct LaunchOptions {
  launch::LaunchRequest request;
  launch::SuperviseOptions supervise;
  std::string emulate;
  bool cleanup = false;
};

int run_launch(LaunchOptions& o) {
  if (o.cleanup) {
    auto removed = launch::cleanup_leftover_namespaces();
    for (const auto& name : removed) std::cout << "removed network namespace " << name << "\n";
    std::cout << "geopipe launch --cleanup: " << removed.size() << " leftover namespace"
              << (removed.size() == 1 ? "" : "s") << " removed\n";
    if (o.request.topology_file.empty()) return kExitOk;
  }
  if (!o.emulate.empty()) {
    o.request.emulation = launch::parse_emulation(o.emulate);
    if (!o.request.emulation)
      throw InputError("--emulate", "", "expected software, netns or none, got \"" + o.emulate + "\"");
  }
  if (o.supervise.replan && o.supervise.max_restarts < 1)
    throw InputError("--replan", "replan", "needs --max-restarts N (N >= 1): it decides how a restart runs");
  if (o.supervise.max_restarts > 0 && (o.request.dry_run || o.request.slurm))
    throw InputError("--max-restarts", "max-restarts", "restarts a running job: not with --dry-run or --slurm");
  if (o.supervise.max_restarts > 0) return launch::supervise(o.request, o.supervise, std::cout);
  return launch::launch(o.request, std::cout);
}

}  // namespace

void register_launch(CLI::App& app, int& exit_code) {
  auto o = std::make_shared<LaunchOptions>();
  auto& q = o->request;
  auto* cmd = app.add_subcommand(
      "launch",
      "Start a plan's ranks with mpirun across the topology's regions (or emulated regions on this host):\n"
      "  geopipe launch --plan P --topology T [--emulate software|netns|none] -- PROGRAM ARGS...");
  cmd->add_option("--topology", q.topology_file, "Topology file (regions, hosts, links)");
  cmd->add_option("--plan", q.plan_file, "Plan file: stage i's ranks run in stages[i].region");
  cmd->add_option("--ranks-per-region", q.ranks_per_region, "Without a plan: start K ranks in every region");
  cmd->add_option("--emulate", o->emulate,
                  "software (comm shaper on this host), netns (namespaces + tc, root) or none "
                  "(default: none when every region names hosts, else software)");
  cmd->add_option("--hostfile", q.hostfile, "Open MPI hostfile giving the slots of the topology's hosts");
  cmd->add_option("--iface", q.interfaces,
                  "Network interface between regions (Open MPI TCP, NCCL_SOCKET_IFNAME): NAME or REGION=NAME; "
                  "repeat for several regions")
      ->expected(1)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  cmd->add_option("--run-dir", q.run_dir, "Folder for the generated files (default: a temporary one, removed after)");
  cmd->add_option("--mpirun", q.mpirun, "The mpirun to use")->check([](const std::string& mpirun) {
    // A path must name a file now; a bare name is looked up on PATH when the job starts.
    return mpirun.find('/') == std::string::npos || access(mpirun.c_str(), X_OK) == 0
               ? std::string()
               : "no program " + mpirun + " (or it is not executable)";
  });
  cmd->add_option("--timeout", q.timeout_s, "Stop the job after this many seconds (exit 124)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_flag("--dry-run", q.dry_run,
                "Print the exact command and files; run nothing (hosts that do not resolve here are a "
                "'# warning:' line, not an error)");
  cmd->add_flag("--slurm", q.slurm,
                "Print an sbatch script (srun --mpi=pmix) with the same placement (hosts that do not resolve "
                "here are a '# warning:' line, not an error)");
  cmd->add_flag("--allow-run-as-root", q.allow_run_as_root,
                "Let Open MPI's mpirun run as root (passes its --allow-run-as-root). Automatic with --emulate "
                "netns; as root without it (or OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1) a "
                "launch is refused with exit 2. Not needed with --slurm: srun has no such refusal");
  cmd->add_option("--tcp-links", q.tcp_links,
                  "Open MPI opens N TCP connections per peer (MCA btl_tcp_links; mpirun's --mca, or OMPI_MCA_btl_tcp_links "
                  "in a --slurm script): several streams per WAN link against per-flow rate caps (default: Open MPI's 1)")
      ->check(CLI::Range(1, 64));
  cmd->add_option("--link-events", q.link_events_file,
                  "Scripted link changes for the emulated links, one per line: FROM>TO@SECONDS+SECONDS=RATE[,LATENCY] "
                  "or FROM>TO@sSTEP+STEPS=RATE[,LATENCY] (e.g. us-east>us-west@s5+10=62500kbit,80ms); checked here, "
                  "given to every rank as GEOPIPE_LINK_EVENTS")
      ->check(CLI::ExistingFile);
  cmd->add_option("--max-restarts", o->supervise.max_restarts,
                  "When the job fails, relaunch it up to N times, with --resume when the program's --checkpoint-dir "
                  "has a checkpoint (each rank leaves a failure record that says what failed)")
      ->check(CLI::Range(0, 1000));
  cmd->add_flag("--replan", o->supervise.replan,
                "With --max-restarts: when every rank of a region failed (killed, hung, cut off), plan the job again "
                "without that region and relaunch on the new plan (written next to --plan)");
  cmd->add_option("--restart-backoff", o->supervise.backoff_s, "Seconds to wait before each relaunch")
      ->check(CLI::Range(0.0, 3600.0));
  cmd->add_flag("--cleanup", o->cleanup, "Remove network namespaces left by a killed --emulate netns run");
  cmd->add_option("program", q.program, "PROGRAM ARGS... (after --)");
  cmd->callback([o, &exit_code] { exit_code = run_launch(*o); });
}

}  // namespace geopipe::cli
