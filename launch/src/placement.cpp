#include <geopipe/launch/placement.h>

#include <geopipe/core/error.h>

#include <netdb.h>
#include <sys/socket.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

namespace geopipe::launch {

const char* emulation_name(Emulation emulation) {
  switch (emulation) {
    case Emulation::kNone: return "none";
    case Emulation::kSoftware: return "software";
    case Emulation::kNetns: return "netns";
  }
  return "none";
}

std::optional<Emulation> parse_emulation(const std::string& name) {
  if (name == "none") return Emulation::kNone;
  if (name == "software") return Emulation::kSoftware;
  if (name == "netns") return Emulation::kNetns;
  return std::nullopt;
}

std::vector<HostfileEntry> parse_hostfile(const std::string& text, const std::string& file) {
  std::vector<Diagnostic> problems;
  std::vector<HostfileEntry> entries;
  std::istringstream in(text);
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    if (auto hash = line.find('#'); hash != std::string::npos) line.resize(hash);
    std::istringstream words(line);
    std::string word;
    if (!(words >> word)) continue;
    const std::string where = "line " + std::to_string(number);
    HostfileEntry entry{word, 1};
    while (words >> word) {
      auto eq = word.find('=');
      std::string key = word.substr(0, eq);
      if (eq == std::string::npos || (key != "slots" && key != "max_slots" && key != "max-slots")) {
        problems.push_back({file, where, "expected `host [slots=N] [max_slots=M]`, got \"" + word + "\""});
        continue;
      }
      const std::string value = word.substr(eq + 1);
      int n = 0;
      try {
        size_t used = 0;
        n = std::stoi(value, &used);
        if (used != value.size()) n = 0;
      } catch (const std::exception&) {
        n = 0;
      }
      if (n < 1) {
        problems.push_back({file, where, key + " must be a positive integer, got \"" + value + "\""});
        continue;
      }
      if (key == "slots") entry.slots = n;
    }
    auto same = std::find_if(entries.begin(), entries.end(), [&](const HostfileEntry& e) { return e.host == entry.host; });
    if (same != entries.end())
      problems.push_back({file, where, "host \"" + entry.host + "\" is listed twice"});
    else
      entries.push_back(entry);
  }
  if (!problems.empty()) throw InputError(std::move(problems));
  if (entries.empty()) throw InputError(file, "", "the hostfile names no host");
  return entries;
}

std::vector<HostfileEntry> load_hostfile(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw InputError(path, "", "cannot open hostfile for reading");
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_hostfile(ss.str(), path);
}

std::vector<std::string> Placement::regions_used() const {
  std::vector<std::string> out;
  for (const auto& r : ranks)
    if (std::find(out.begin(), out.end(), r.region) == out.end()) out.push_back(r.region);
  return out;
}

namespace {

bool host_resolves(const std::string& host) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* result = nullptr;
  int rc = getaddrinfo(host.c_str(), nullptr, &hints, &result);
  if (result) freeaddrinfo(result);
  return rc == 0;
}

// Letters, digits and `.-_` (names), `:` and `%` (IPv6 with a scope), not starting with `-`:
// the host is written unquoted into hostfiles, mpirun's argv and Slurm scripts, so a name that
// does not resolve (placed anyway with UnresolvedHosts::kWarn) must not be able to add a line or
// an option there.
bool host_name_is_plain(const std::string& host) {
  return !host.empty() && host[0] != '-' &&
         host.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.-_:%") ==
             std::string::npos;
}

// Whether `host` of `region` may be placed. A name that is not plain, or one that does not
// resolve under kRefuse, is a problem at `where`; one that does not resolve under kWarn is placed
// and noted.
bool admit_host(const std::string& host, const std::string& region, const Diagnostic& where,
                UnresolvedHosts unresolved, std::vector<Diagnostic>& problems, std::vector<UnresolvedHost>& notes) {
  const std::string name = "host \"" + host + "\" of region \"" + region + "\"";
  if (!host_name_is_plain(host)) {
    problems.push_back({where.file, where.path, name + " is not a host name (letters, digits, '.', '-', '_', ':')"});
    return false;
  }
  if (host_resolves(host)) return true;
  if (unresolved == UnresolvedHosts::kRefuse) {
    problems.push_back({where.file, where.path, name + " does not resolve"});
    return false;
  }
  notes.push_back({host, {where.file, where.path,
                          name + " does not resolve on this machine (the cluster that runs the job must resolve it)"}});
  return true;
}

std::string region_path(const Topology& topology, size_t region) {
  return "regions[" + std::to_string(region) + "] (\"" + topology.regions[region].name + "\")";
}

}  // namespace

int host_gpu_share(const Region& region, int host_index) {
  const int n = static_cast<int>(region.hosts.size());
  return n == 0 ? region.gpus : region.gpus / n + (host_index < region.gpus % n ? 1 : 0);
}

Inventory make_inventory(const Topology& topology, Emulation emulation,
                         const std::optional<std::vector<HostfileEntry>>& hostfile, const std::string& hostfile_name,
                         UnresolvedHosts unresolved) {
  Inventory inv;
  inv.per_region.resize(topology.regions.size());
  inv.not_in_hostfile.resize(topology.regions.size());
  inv.hostfile = hostfile_name;
  bool any_hosts = std::any_of(topology.regions.begin(), topology.regions.end(),
                               [](const Region& r) { return !r.hosts.empty(); });
  inv.local = emulation != Emulation::kNone || !any_hosts;
  if (inv.local) {
    if (hostfile)
      throw InputError(hostfile_name, "", "a hostfile places ranks on real hosts; it cannot be used with --emulate " +
                                              std::string(emulation_name(emulation)) +
                                              (any_hosts ? "" : " or with a topology that names no hosts"));
    for (size_t i = 0; i < topology.regions.size(); ++i)
      inv.per_region[i].push_back({"localhost", topology.regions[i].name, topology.regions[i].gpus});
    return inv;
  }

  std::vector<Diagnostic> problems;
  std::map<std::string, std::string> owner;  // host -> region
  for (size_t i = 0; i < topology.regions.size(); ++i) {
    const Region& region = topology.regions[i];
    const int n = static_cast<int>(region.hosts.size());
    for (int h = 0; h < n; ++h) {
      const std::string& host = region.hosts[h];
      const std::string path = "regions[" + std::to_string(i) + "].hosts[" + std::to_string(h) + "]";
      if (auto [it, fresh] = owner.emplace(host, region.name); !fresh) {
        problems.push_back({topology.source, path, "host \"" + host + "\" already belongs to region \"" + it->second + "\""});
        continue;
      }
      int slots = host_gpu_share(region, h);
      if (hostfile) {
        auto e = std::find_if(hostfile->begin(), hostfile->end(), [&](const HostfileEntry& x) { return x.host == host; });
        if (e == hostfile->end()) {
          inv.not_in_hostfile[i].push_back(host);
          continue;
        }
        slots = e->slots;
      }
      if (admit_host(host, region.name, {topology.source, path, ""}, unresolved, problems, inv.unresolved))
        inv.per_region[i].push_back({host, region.name, slots});
    }
  }
  if (!problems.empty()) throw InputError(std::move(problems));
  return inv;
}

namespace {

std::string missing_hosts(const Inventory& inventory, size_t region) {
  const auto& missing = inventory.not_in_hostfile[region];
  if (missing.empty()) return "";
  std::string s = " (not in the hostfile " + inventory.hostfile + ":";
  for (const auto& h : missing) s += " " + h;
  return s + ")";
}

// Assigns ranks to the hosts of their region in rank order, filling each host before the next.
// `region_of_rank[r]` is the topology index of rank r's region.
Placement assign(const Topology& topology, const Inventory& inventory, const std::vector<int>& region_of_rank,
                 const std::vector<int>& stage_of_rank, const std::string& what) {
  const size_t nregions = topology.regions.size();
  std::vector<int> wanted(nregions, 0);
  for (int reg : region_of_rank) ++wanted[reg];

  std::vector<Diagnostic> problems;
  for (size_t i = 0; i < nregions; ++i) {
    if (wanted[i] == 0) continue;
    const Region& region = topology.regions[i];
    int slots = 0;
    for (const auto& h : inventory.per_region[i]) slots += h.slots;
    if (wanted[i] > region.gpus)
      problems.push_back({topology.source, region_path(topology, i),
                          "region \"" + region.name + "\" is short of GPUs: " + what + " places " +
                              std::to_string(wanted[i]) + " ranks there but it has " + std::to_string(region.gpus) +
                              " GPU" + (region.gpus == 1 ? "" : "s")});
    else if (!inventory.local && inventory.per_region[i].empty())
      problems.push_back({topology.source, region_path(topology, i),
                          "region \"" + region.name + "\" has no hosts: add regions[].hosts or use --emulate software"});
    else if (wanted[i] > slots)
      problems.push_back({topology.source, region_path(topology, i),
                          "region \"" + region.name + "\" is short of slots: " + what + " places " +
                              std::to_string(wanted[i]) + " ranks there but its hosts have " + std::to_string(slots) +
                              " slot" + (slots == 1 ? "" : "s") + missing_hosts(inventory, i)});
  }
  if (!problems.empty()) throw InputError(std::move(problems));

  Placement p;
  std::vector<size_t> host_cursor(nregions, 0);
  std::vector<int> used_on_host(nregions, 0);
  std::map<std::pair<std::string, std::string>, size_t> host_index;  // (region, host) -> p.hosts index
  for (size_t r = 0; r < region_of_rank.size(); ++r) {
    const int reg = region_of_rank[r];
    const auto& hosts = inventory.per_region[reg];
    while (used_on_host[reg] >= hosts[host_cursor[reg]].slots) {
      ++host_cursor[reg];
      used_on_host[reg] = 0;
    }
    const HostSlots& h = hosts[host_cursor[reg]];
    ++used_on_host[reg];
    p.ranks.push_back({static_cast<int>(r), stage_of_rank[r], h.region, h.host});
    auto key = std::make_pair(h.region, h.host);
    if (!host_index.count(key)) {
      host_index[key] = p.hosts.size();
      p.hosts.push_back({h.host, h.region, 0});
    }
    ++p.hosts[host_index[key]].slots;
  }
  // On one machine every region is "localhost": merge them into one hostfile line.
  if (inventory.local) {
    std::vector<HostSlots> merged;
    for (const auto& h : p.hosts) {
      auto m = std::find_if(merged.begin(), merged.end(), [&](const HostSlots& x) { return x.host == h.host; });
      if (m == merged.end())
        merged.push_back(h);
      else
        m->slots += h.slots;
    }
    p.hosts = std::move(merged);
  }
  return p;
}

}  // namespace

Placement place_plan(const Plan& plan, const std::string& plan_file, const Topology& topology,
                     const Inventory& inventory) {
  check_plan_against(plan, topology, plan_file);
  const int world = plan.world_size();
  std::vector<int> region_of_rank(world, -1), stage_of_rank(world, -1);
  for (const auto& stage : plan.stages)
    for (int rank : stage.ranks) {
      if (rank < 0 || rank >= world)
        throw InputError(plan_file, "stages[" + std::to_string(stage.index) + "].ranks",
                         "rank " + std::to_string(rank) + " is outside 0.." + std::to_string(world - 1));
      region_of_rank[rank] = topology.region_index(stage.region);
      stage_of_rank[rank] = stage.index;
    }
  for (int r = 0; r < world; ++r)
    if (region_of_rank[r] < 0)
      throw InputError(plan_file, "stages", "rank " + std::to_string(r) + " belongs to no stage");
  return assign(topology, inventory, region_of_rank, stage_of_rank, "the plan " + plan_file);
}

Placement place_per_region(const Topology& topology, int ranks_per_region, const Inventory& inventory) {
  if (ranks_per_region < 1)
    throw InputError("--ranks-per-region", "", "expected at least 1, got " + std::to_string(ranks_per_region));
  std::vector<int> region_of_rank, stage_of_rank;
  for (int i = 0; i < topology.num_regions(); ++i)
    for (int k = 0; k < ranks_per_region; ++k) {
      region_of_rank.push_back(i);
      stage_of_rank.push_back(-1);
    }
  return assign(topology, inventory, region_of_rank, stage_of_rank,
                "--ranks-per-region " + std::to_string(ranks_per_region));
}

}  // namespace geopipe::launch
