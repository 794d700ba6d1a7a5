#include <geopipe/launch/command.h>

#include <geopipe/core/env.h>
#include <geopipe/core/error.h>

#include <nlohmann/json.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace geopipe::launch {

std::string Interfaces::for_region(const std::string& region) const {
  auto it = per_region.find(region);
  return it != per_region.end() ? it->second : all;
}

Interfaces Interfaces::parse(const std::vector<std::string>& values, const Topology& topology) {
  Interfaces out;
  for (const auto& v : values) {
    auto eq = v.find('=');
    const std::string name = eq == std::string::npos ? v : v.substr(eq + 1);
    if (name.empty() || name.find_first_of(" \t,/") != std::string::npos)
      throw InputError("--iface", "", "expected an interface name or REGION=NAME, got \"" + v + "\"");
    if (eq == std::string::npos) {
      out.all = name;
      continue;
    }
    const std::string region = v.substr(0, eq);
    if (topology.region_index(region) < 0)
      throw InputError("--iface", "", "region \"" + region + "\" is not in " + topology.source);
    out.per_region[region] = name;
  }
  return out;
}

Launcher Launcher::current() {
  // Open MPI compares both values with "1" exactly ("yes" still refuses).
  auto is_one = [](const char* name) {
    const char* v = std::getenv(name);
    return v && std::strcmp(v, "1") == 0;
  };
  return {geteuid() == 0, is_one(kOmpiAllowRunAsRoot) && is_one(kOmpiAllowRunAsRootConfirm)};
}

bool mpirun_allows_root(Emulation emulation, bool requested, bool starts_mpirun, const Launcher& launcher) {
  if (requested || emulation == Emulation::kNetns) return true;
  if (starts_mpirun && launcher.root && !launcher.env_allows_root)
    throw InputError("mpirun", "", std::string("Open MPI refuses to run as root: pass --allow-run-as-root to geopipe "
                                               "launch, or export ") +
                                       kOmpiAllowRunAsRoot + "=1 " + kOmpiAllowRunAsRootConfirm + "=1");
  return false;
}

std::string warning_comment(const std::string& text) {
  std::string line = "# warning: " + text;
  std::replace(line.begin(), line.end(), '\n', ' ');
  return line + "\n";
}

std::string shell_quote(const std::string& word) {
  if (!word.empty() && word.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                              "0123456789_@%+=:,./-") == std::string::npos)
    return word;
  std::string out = "'";
  for (char c : word) {
    if (c == '\'')
      out += "'\\''";
    else
      out += c;
  }
  return out + "'";
}

std::string shell_join(const std::vector<std::string>& argv) {
  std::string out;
  for (const auto& a : argv) {
    if (!out.empty()) out += ' ';
    out += shell_quote(a);
  }
  return out;
}

std::vector<std::pair<std::string, std::string>> rank_environment(const LaunchSpec& spec, const RankPlace& rank) {
  std::vector<std::pair<std::string, std::string>> env;
  env.emplace_back(env::kRegion, rank.region);
  env.emplace_back(env::kTopology, spec.topology_path);
  env.emplace_back(env::kEmulate, spec.emulate_env.empty() ? emulation_name(spec.emulation) : spec.emulate_env);
  if (!spec.plan_path.empty()) env.emplace_back(env::kPlan, spec.plan_path);
  // Emulated regions all run on this host; in namespaces MPI cannot tell (core/env.h).
  if (spec.emulation != Emulation::kNone)
    env.emplace_back(env::kRanksOnHost, std::to_string(spec.placement.world_size()));
  // The comm layer's per-job settings, when the caller set them: the authentication key file
  // (the same path on every host) and scripted link events (core/env.h).
  if (const char* key = std::getenv(env::kAuthKeyFile); key && *key) env.emplace_back(env::kAuthKeyFile, key);
  if (const char* dir = std::getenv(env::kFailureDir); dir && *dir) env.emplace_back(env::kFailureDir, dir);
  const char* events = std::getenv(env::kLinkEvents);  // --link-events FILE first, then the caller's
  if (!spec.link_events.empty()) env.emplace_back(env::kLinkEvents, spec.link_events);
  else if (events && *events) env.emplace_back(env::kLinkEvents, events);
  if (spec.emulation == Emulation::kNetns) {
    env.emplace_back("NCCL_SOCKET_IFNAME", "gpeth");
  } else if (const std::string iface = spec.interfaces.for_region(rank.region); !iface.empty()) {
    env.emplace_back("NCCL_SOCKET_IFNAME", iface);
    env.emplace_back("OMPI_MCA_btl_tcp_if_include", iface);
  }
  return env;
}

namespace {

std::string join(const std::vector<std::string>& words, const std::string& sep) {
  std::string out;
  for (const auto& w : words) out += (out.empty() ? "" : sep) + w;
  return out;
}

// Consecutive ranks on the same host and in the same region: one mpirun app context each.
struct RankRun {
  int first = 0;
  int count = 0;
};

std::vector<RankRun> rank_runs(const Placement& p) {
  std::vector<RankRun> runs;
  for (int r = 0; r < p.world_size(); ++r) {
    if (!runs.empty()) {
      const RankPlace& prev = p.ranks[r - 1];
      if (prev.host == p.ranks[r].host && prev.region == p.ranks[r].region) {
        ++runs.back().count;
        continue;
      }
    }
    runs.push_back({r, 1});
  }
  return runs;
}

}  // namespace

MpirunCommand build_mpirun(const LaunchSpec& spec) {
  if (spec.program.empty()) throw InputError("PROGRAM", "", "no program to launch: give it after `--`");
  if (spec.placement.ranks.empty()) throw InputError("placement", "", "no rank to launch");
  MpirunCommand cmd;
  const std::string hostfile = spec.run_dir + "/hostfile";

  std::ostringstream hf;
  hf << "# geopipe launch: " << spec.placement.world_size() << " ranks, emulation "
     << emulation_name(spec.emulation) << "\n";
  for (const auto& h : spec.placement.hosts) hf << h.host << " slots=" << h.slots << "  # " << h.region << "\n";
  cmd.files.push_back({hostfile, hf.str()});

  nlohmann::json pj;
  pj["emulate"] = emulation_name(spec.emulation);
  pj["topology"] = spec.topology_path;
  if (!spec.plan_path.empty()) pj["plan"] = spec.plan_path;
  pj["ranks"] = nlohmann::json::array();
  for (const auto& r : spec.placement.ranks)
    pj["ranks"].push_back({{"rank", r.rank}, {"stage", r.stage}, {"region", r.region}, {"host", r.host}});
  cmd.files.push_back({spec.run_dir + "/placement.json", pj.dump(1) + "\n"});

  auto& a = cmd.argv;
  if (spec.emulation == Emulation::kNetns) {
    // mpirun runs in the hub namespace (the only place that reaches every region's address); the
    // agent starts Open MPI's daemon inside the region namespace named as the host.
    a = {"ip", "netns", "exec", spec.netns_launcher};
    // Every daemon sees the same host name and /tmp: each gets a session folder of its own, or
    // two daemons race creating the same one (and share hwloc's topology file).
    cmd.files.push_back({spec.netns_agent,
                         "#!/bin/sh\n"
                         "# Open MPI launch agent of geopipe launch --emulate netns: `agent NAMESPACE COMMAND...`\n"
                         "# runs Open MPI's daemon command line (one shell string) inside the namespace.\n"
                         "ns=\"$1\"; shift\n"
                         "session=" + shell_quote(spec.run_dir + "/sessions") + "/\"$ns\"\n"
                         "mkdir -p \"$session\" || exit 1\n"
                         "OMPI_MCA_orte_tmpdir_base=\"$session\" exec ip netns exec \"$ns\" /bin/sh -c \"$*\"\n",
                         true});
  }
  a.push_back(spec.mpirun);
  if (spec.allow_run_as_root) a.push_back("--allow-run-as-root");
  a.insert(a.end(), {"--hostfile", hostfile});
  if (spec.tcp_links > 0) a.insert(a.end(), {"--mca", kTcpLinksParam, std::to_string(spec.tcp_links)});
  if (spec.emulation == Emulation::kNetns) {
    a.insert(a.end(), {"--oversubscribe", "--bind-to", "none", "--mca", "plm_rsh_agent", spec.netns_agent, "--mca",
                       "oob_tcp_if_include", spec.netns_subnet, "--mca", "btl_tcp_if_include", spec.netns_subnet});
  } else if (spec.placement.hosts.size() == 1 && spec.placement.hosts[0].host == "localhost") {
    a.insert(a.end(), {"--oversubscribe", "--bind-to", "none"});
  } else {
    std::vector<std::string> ifaces;
    for (const auto& region : spec.placement.regions_used()) {
      const std::string i = spec.interfaces.for_region(region);
      if (!i.empty() && std::find(ifaces.begin(), ifaces.end(), i) == ifaces.end()) ifaces.push_back(i);
    }
    // Daemons accept any listed interface they have (names absent on a host are skipped).
    if (!ifaces.empty()) a.insert(a.end(), {"--mca", "oob_tcp_if_include", join(ifaces, ",")});
  }
  bool first = true;
  for (const RankRun& run : rank_runs(spec.placement)) {
    const RankPlace& r = spec.placement.ranks[run.first];
    if (!first) a.push_back(":");
    first = false;
    a.insert(a.end(), {"-np", std::to_string(run.count), "--host", r.host});
    for (const auto& [k, v] : rank_environment(spec, r)) a.insert(a.end(), {"-x", k + "=" + v});
    a.insert(a.end(), spec.program.begin(), spec.program.end());
  }
  return cmd;
}

std::string build_slurm_script(const LaunchSpec& spec) {
  if (spec.emulation != Emulation::kNone || spec.placement.hosts.empty() ||
      (spec.placement.hosts.size() == 1 && spec.placement.hosts[0].host == "localhost"))
    throw InputError("--slurm", "", "a Slurm script places ranks on real hosts: give regions[].hosts in the "
                                    "topology and --emulate none");
  if (spec.program.empty()) throw InputError("PROGRAM", "", "no program to launch: give it after `--`");
  const Placement& p = spec.placement;
  std::vector<std::string> nodes;
  for (const auto& h : p.hosts) nodes.push_back(h.host);

  // Per-rank environment: one case arm per run of ranks sharing host and region.
  std::ostringstream rank_script;
  rank_script << "case \"$SLURM_PROCID\" in\n";
  for (const RankRun& run : rank_runs(p)) {
    std::vector<std::string> ids;
    for (int r = run.first; r < run.first + run.count; ++r) ids.push_back(std::to_string(r));
    rank_script << "  " << join(ids, "|") << ")";
    for (const auto& [k, v] : rank_environment(spec, p.ranks[run.first]))
      rank_script << " export " << k << "=" << shell_quote(v) << ";";
    rank_script << ";\n";
  }
  rank_script << "  *) echo \"geopipe: rank $SLURM_PROCID is not in the placement\" >&2; exit 2;;\n"
              << "esac\nexec \"$@\"\n";

  std::ostringstream s;
  s << "#!/bin/bash\n"
    << "# Generated by geopipe launch: " << p.world_size() << " ranks on " << nodes.size() << " hosts, rank r on "
    << "line r+1 of the host list (the plan's placement).\n";
  for (const auto& w : spec.warnings) s << warning_comment(w);
  s << "#SBATCH --job-name=" << shell_quote(spec.job_name) << "\n"
    << "#SBATCH --nodes=" << nodes.size() << "\n"
    << "#SBATCH --ntasks=" << p.world_size() << "\n"
    << "#SBATCH --nodelist=" << join(nodes, ",") << "\n"
    << "set -euo pipefail\n"
    << "hostlist=$(mktemp)\n"
    << "trap 'rm -f \"$hostlist\"' EXIT\n"
    << "cat > \"$hostlist\" <<'GEOPIPE_HOSTS'\n";
  for (const auto& r : p.ranks) s << r.host << "\n";
  s << "GEOPIPE_HOSTS\n"
    << "export SLURM_HOSTFILE=\"$hostlist\"\n";
  if (spec.tcp_links > 0) s << "export OMPI_MCA_" << kTcpLinksParam << "=" << spec.tcp_links << "\n";
  std::vector<std::string> srun = {"srun", "--mpi=pmix", "--distribution=arbitrary",
                                    "--ntasks=" + std::to_string(p.world_size()), "--kill-on-bad-exit=1",
                                    "bash", "-c", rank_script.str(), "geopipe-rank"};
  srun.insert(srun.end(), spec.program.begin(), spec.program.end());
  s << shell_join(srun) << "\n";
  return s.str();
}

void write_files(const std::vector<GeneratedFile>& files) {
  for (const auto& f : files) {
    std::error_code ec;
    std::filesystem::path path(f.path);
    if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path(), ec);
    if (ec) throw Error("cannot create folder " + path.parent_path().string() + ": " + ec.message());
    std::ofstream out(f.path, std::ios::binary | std::ios::trunc);
    out << f.content;
    out.close();
    if (!out) throw Error("cannot write " + f.path);
    if (f.executable && chmod(f.path.c_str(), 0755) != 0)
      throw Error("cannot make " + f.path + " executable: " + std::strerror(errno));
  }
}

}  // namespace geopipe::launch
