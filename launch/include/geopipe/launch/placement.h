// Where each MPI rank runs: a plan (or K ranks per region) placed on the hosts of its region.
// Pure computation on the topology and plan; nothing here starts a process.
#pragma once

#include <geopipe/core/config.h>
#include <geopipe/core/error.h>
#include <geopipe/core/plan.h>

#include <optional>
#include <string>
#include <vector>

namespace geopipe::launch {

// How regions are made real.
//   kNone:     no emulation: each region's hosts from the topology (a real cluster), or, when the
//              topology names no hosts, every rank on this host without any link shaping.
//   kSoftware: every rank on this host; the comm layer's shaper applies each region pair's
//              bandwidth and latency.
//   kNetns:    one network namespace per region on this host, kernel rate limits between them.
enum class Emulation { kNone, kSoftware, kNetns };
const char* emulation_name(Emulation emulation);  // "none", "software", "netns"
std::optional<Emulation> parse_emulation(const std::string& name);

// One line of an Open MPI hostfile: `host slots=N`.
struct HostfileEntry {
  std::string host;
  int slots = 1;
};

// Reads an Open MPI hostfile (`host [slots=N] [max_slots=M]`, `#` comments). InputError naming
// the file and line on anything else.
std::vector<HostfileEntry> parse_hostfile(const std::string& text, const std::string& file);
std::vector<HostfileEntry> load_hostfile(const std::string& path);

// A host and what runs there.
struct HostSlots {
  std::string host;
  std::string region;
  int slots = 0;  // ranks this host may run
};

// The place of one rank.
struct RankPlace {
  int rank = 0;
  int stage = -1;  // -1 when launched without a plan
  std::string region;
  std::string host;
};

struct Placement {
  std::vector<RankPlace> ranks;  // ranks[r].rank == r
  std::vector<HostSlots> hosts;  // every host that runs a rank, in order of first use
  std::vector<std::string> regions_used() const;  // regions in order of their first rank
  int world_size() const { return static_cast<int>(ranks.size()); }
};

// What a named host that does not resolve on this machine means.
//   kRefuse: an error (a launch from here: mpirun must reach the host).
//   kWarn:   a note, and the host is placed anyway (--dry-run and --slurm write a command or a
//            script for another cluster, whose own resolver is the one that counts).
enum class UnresolvedHosts { kRefuse, kWarn };

// A host kept in the inventory although it does not resolve here, and the note saying so
// (file: regions[i].hosts[j]: host "H" of region "R" does not resolve on this machine ...).
struct UnresolvedHost {
  std::string host;
  Diagnostic note;
};

// Which hosts each region offers and how many ranks each may run.
struct Inventory {
  std::vector<std::vector<HostSlots>> per_region;  // indexed like topology.regions
  bool local = false;                              // every host is this machine (emulation)
  std::string hostfile;                            // the hostfile the slots came from, if any
  std::vector<std::vector<std::string>> not_in_hostfile;  // per region: its hosts the hostfile lacks
  std::vector<UnresolvedHost> unresolved;  // kWarn: the named hosts that do not resolve here
};

// kNone with hosts in the topology: each region's hosts, its GPUs spread evenly over them, or
// the slots a hostfile gives them (a host missing from the hostfile has no slot; a region short
// of slots because of it is named with those hosts when ranks are placed).
// kSoftware, kNetns, or kNone without hosts: one local host per region with one slot per GPU
// ("localhost" here; launch_netns renames hosts to its namespaces).
// Hosts that are named but do not resolve are an InputError naming the region and host (kRefuse)
// or listed in `unresolved` (kWarn). A name with characters no host name has (space, quote, `;`,
// a newline...) is always an InputError: it would end up in a generated script.
// GPUs (slots) the h-th of a region's listed hosts offers: the region's GPUs spread evenly over
// its hosts, the first ones taking the remainder.
int host_gpu_share(const Region& region, int host_index);

Inventory make_inventory(const Topology& topology, Emulation emulation,
                         const std::optional<std::vector<HostfileEntry>>& hostfile = std::nullopt,
                         const std::string& hostfile_name = "",
                         UnresolvedHosts unresolved = UnresolvedHosts::kRefuse);

// Places the plan's ranks: stage i's ranks on the hosts of stages[i].region, filling one host
// before the next so a stage's ranks share a host. Checks the plan against the topology first
// (check_plan_against). A region with more ranks than GPUs or slots is an InputError saying
// which region is short and by how much.
Placement place_plan(const Plan& plan, const std::string& plan_file, const Topology& topology,
                     const Inventory& inventory);

// K ranks in every region, region by region in topology order (what the microbenchmarks use).
Placement place_per_region(const Topology& topology, int ranks_per_region, const Inventory& inventory);

}  // namespace geopipe::launch
