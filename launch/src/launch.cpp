#include <geopipe/launch/launch.h>

#include <geopipe/core/error.h>
#include <geopipe/core/link_events.h>
#include <geopipe/core/log.h>
#include <geopipe/core/plan.h>
#include <geopipe/launch/netns.h>
#include <geopipe/launch/process.h>

#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <ostream>

namespace geopipe::launch {

namespace {

struct Prepared {
  LaunchSpec spec;
  Topology topology;
  std::optional<NetnsLayout> netns;
  bool own_run_dir = false;
};

std::string absolute(const std::string& path) {
  std::error_code ec;
  auto p = std::filesystem::absolute(path, ec);
  return ec ? path : p.lexically_normal().string();
}

// With netns emulation each region's ranks run in its namespace: the namespace's name is the
// "host", and mpirun runs in the hub.
void place_in_namespaces(Prepared& out) {
  LaunchSpec& s = out.spec;
  out.netns = make_netns_layout(out.topology, s.placement.regions_used(), getpid());
  s.placement.hosts.clear();
  for (auto& r : s.placement.ranks) {
    r.host = out.netns->find(r.region)->netns;
    auto h = std::find_if(s.placement.hosts.begin(), s.placement.hosts.end(),
                          [&](const HostSlots& x) { return x.host == r.host; });
    if (h == s.placement.hosts.end())
      s.placement.hosts.push_back({r.host, r.region, 1});
    else
      ++h->slots;
  }
  s.netns_subnet = out.netns->subnet;
  s.netns_launcher = out.netns->hub;
  s.netns_agent = s.run_dir + "/netns-agent.sh";
}

Prepared prepare(const LaunchRequest& q) {
  Prepared out;
  if (q.topology_file.empty()) throw InputError("--topology", "", "a topology file is required");
  if (q.plan_file.empty() == (q.ranks_per_region == 0))
    throw InputError("--plan", "", "give either --plan PLAN or --ranks-per-region K (not both, not neither)");
  if (q.program.empty()) throw InputError("PROGRAM", "", "no program to launch: give it after `--`");

  out.topology = load_topology(q.topology_file);
  const Topology& topo = out.topology;
  std::optional<Plan> plan;
  if (!q.plan_file.empty()) plan = load_plan(q.plan_file);

  const bool all_hosts = std::all_of(topo.regions.begin(), topo.regions.end(),
                                     [](const Region& r) { return !r.hosts.empty(); });
  const Emulation emulation = q.emulation ? *q.emulation : (all_hosts ? Emulation::kNone : Emulation::kSoftware);

  if (emulation == Emulation::kNetns && !q.dry_run) {
    std::string why = netns_unavailable_reason();
    if (!why.empty()) throw InputError("--emulate netns", "", why);
  }
  LaunchSpec& s = out.spec;
  const bool starts_mpirun = !q.dry_run && !q.slurm;

  std::optional<std::vector<HostfileEntry>> hostfile;
  if (!q.hostfile.empty()) hostfile = load_hostfile(q.hostfile);
  // Only a launch from here needs the hosts to resolve here; a printed command or script runs
  // on a cluster with a resolver of its own.
  Inventory inv = make_inventory(topo, emulation, hostfile, q.hostfile,
                                 starts_mpirun ? UnresolvedHosts::kRefuse : UnresolvedHosts::kWarn);
  s.placement = plan ? place_plan(*plan, q.plan_file, topo, inv) : place_per_region(topo, q.ranks_per_region, inv);
  for (const auto& u : inv.unresolved) {  // only the hosts that got a rank matter to the job
    const auto& hosts = s.placement.hosts;
    if (std::any_of(hosts.begin(), hosts.end(), [&](const HostSlots& h) { return h.host == u.host; }))
      s.warnings.push_back(u.note.str());
  }
  s.emulation = emulation;
  s.topology_path = absolute(q.topology_file);
  if (plan) {
    s.plan_path = absolute(q.plan_file);
    s.job_name = plan->job.name;
  }
  s.program = q.program;
  s.mpirun = q.mpirun;
  s.interfaces = Interfaces::parse(q.interfaces, topo);
  if (q.run_dir.empty()) {
    const char* tmp = std::getenv("TMPDIR");
    s.run_dir = std::string(tmp && *tmp ? tmp : "/tmp") + "/geopipe-launch-" + std::to_string(getpid());
    out.own_run_dir = true;
  } else {
    s.run_dir = absolute(q.run_dir);
  }

  // Last, once the inputs are known good: the one refusal that is about who runs the launch.
  s.allow_run_as_root = mpirun_allows_root(emulation, q.allow_run_as_root, starts_mpirun, Launcher::current());
  s.tcp_links = q.tcp_links;
  if (!q.link_events_file.empty()) {
    if (emulation == Emulation::kNone)
      throw InputError("--link-events", "", "link events change emulated links: use --emulate software or netns");
    s.link_events = read_link_events_file(q.link_events_file, topo);
  }
  if (emulation == Emulation::kNetns) place_in_namespaces(out);
  return out;
}

void print_files(const std::vector<GeneratedFile>& files, std::ostream& out) {
  for (const auto& f : files) {
    out << "# ---- file " << f.path << (f.executable ? " (executable)" : "") << "\n" << f.content;
    if (!f.content.empty() && f.content.back() != '\n') out << "\n";
  }
}

}  // namespace

LaunchSpec prepare_launch(const LaunchRequest& request) { return prepare(request).spec; }

std::string read_link_events_file(const std::string& path, const Topology& topology) {
  std::ifstream in(path);
  if (!in) throw InputError("--link-events", "", "cannot read " + path);
  std::string joined, line;
  for (int n = 1; std::getline(in, line); ++n) {
    line = line.substr(0, line.find('#'));
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = path + ":" + std::to_string(n);
    for (const LinkEvent& e : parse_link_events(line, where)) {  // throws naming the file and line
      for (const std::string& region : {e.from, e.to})
        if (topology.region_index(region) < 0)
          throw InputError(where, "", "event '" + e.text + "': the topology has no region '" + region + "'");
      joined += (joined.empty() ? "" : ";") + e.text;
    }
  }
  return joined;
}

int launch(const LaunchRequest& request, std::ostream& out) {
  Prepared p = prepare(request);
  LaunchSpec& spec = p.spec;
  // Also to stderr: a script redirected to a file still warns whoever wrote it.
  for (const auto& w : spec.warnings) spdlog::warn("geopipe launch: {}", w);

  if (request.slurm) {
    out << build_slurm_script(spec);
    return kExitOk;
  }

  if (request.dry_run) {
    MpirunCommand cmd = build_mpirun(spec);
    out << "# geopipe launch --dry-run: " << spec.placement.world_size() << " ranks, emulation "
        << emulation_name(spec.emulation) << "\n";
    for (const auto& w : spec.warnings) out << warning_comment(w);
    for (const auto& r : spec.placement.ranks)
      out << "# rank " << r.rank << ": stage " << r.stage << ", region " << r.region << ", host " << r.host << "\n";
    print_files(cmd.files, out);
    if (p.netns) {
      out << "# ---- netns setup (netem detected at run time; without it one-way latency stays in the "
             "software shaper)\n";
      for (const auto& c : netns_setup_commands(*p.netns, p.topology, false)) out << shell_join(c) << "\n";
      out << "# ---- netns teardown (also on error and on Ctrl-C)\n";
      for (const auto& c : netns_teardown_commands(*p.netns)) out << shell_join(c) << "\n";
    }
    out << "# ---- command\n" << shell_join(cmd.argv) << "\n";
    return kExitOk;
  }

  // With namespaces to remove, a stop signal waits until they are gone (or reaches the job).
  std::optional<BlockStopSignals> hold;
  if (p.netns) hold.emplace();
  std::optional<NetnsEmulation> netns;
  if (p.netns) {
    const auto t0 = std::chrono::steady_clock::now();
    netns.emplace(*p.netns, p.topology);
    spec.emulate_env = netns->netem() ? "none" : "netns";
    out << "geopipe launch: " << p.netns->regions.size() << " region namespaces up in "
        << std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() << " s (subnet "
        << p.netns->subnet << ", netem " << (netns->netem() ? "present" : "absent") << ")\n";
  }
  if (p.own_run_dir) {
    // A fresh private folder (mkdtemp: mode 0700, a name nobody can prepare in advance), never
    // the predictable $TMPDIR/geopipe-launch-<pid> itself: another user could have made that a
    // folder or link of theirs, and the launch agent written there runs as root with netns.
    std::string made = spec.run_dir + "-XXXXXX";
    if (!mkdtemp(made.data()))
      throw Error("geopipe launch: cannot create a run folder " + made + ": " + std::strerror(errno));
    spec.run_dir = made;
    if (p.netns) spec.netns_agent = spec.run_dir + "/netns-agent.sh";
  }
  MpirunCommand cmd = build_mpirun(spec);
  int status = kExitFailure;
  try {
    write_files(cmd.files);
    out.flush();
    status = run_job(cmd.argv, request.timeout_s);
  } catch (...) {
    if (netns) netns->teardown();
    if (p.own_run_dir) std::filesystem::remove_all(spec.run_dir);
    throw;
  }
  if (netns) netns->teardown();
  if (p.own_run_dir) {
    std::error_code ec;
    std::filesystem::remove_all(spec.run_dir, ec);
  }
  if (status == 124 && request.timeout_s > 0)
    out << "geopipe launch: the job ran past --timeout " << request.timeout_s << " s and was stopped\n";
  return status;
}

}  // namespace geopipe::launch
