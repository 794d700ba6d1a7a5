// Emulated regions on one host: one network namespace per region, each joined by a veth pair to
// a bridge in a "hub" namespace, kernel rate limits (tc htb, a class and a destination filter
// per ordered region pair) on each region's interface, one-way latency with netem where the
// kernel has it. Everything lives in namespaces of our own, named geopipe-<pid>-*: no
// interface, address or route of the host's own namespace is touched, and deleting the
// namespaces removes everything.
#pragma once

#include <geopipe/core/config.h>

#include <string>
#include <vector>

namespace geopipe::launch {

inline constexpr const char* kNetnsPrefix = "geopipe-";
inline constexpr const char* kNetnsInterface = "gpeth";  // each region namespace's interface

struct NetnsRegion {
  std::string region;
  int topology_index = 0;
  std::string netns;    // geopipe-<id>-r<k>
  std::string address;  // inside the namespace, no prefix length
};

struct NetnsLayout {
  int id = 0;              // the launching process's pid: names and subnet derive from it
  std::string hub;         // geopipe-<id>-hub: the bridge, and where mpirun runs
  std::string subnet;      // "198.18.X.0/24" (RFC 2544 benchmarking range)
  std::string hub_address;
  std::vector<NetnsRegion> regions;

  std::vector<std::string> namespaces() const;  // hub first
  const NetnsRegion* find(const std::string& region) const;
};

// Layout for the given regions (names from the topology), named and addressed after `id`.
NetnsLayout make_netns_layout(const Topology& topology, const std::vector<std::string>& regions, int id);

// The `ip`/`tc` commands (argument vectors) that build the layout and its rate limits: for
// each ordered pair of regions (a, b), traffic leaving a for b's address goes through an htb
// class at the link's rate (a pair without a link is dropped); with `netem`, a netem qdisc under
// that class adds the link's one-way latency.
std::vector<std::vector<std::string>> netns_setup_commands(const NetnsLayout& layout, const Topology& topology,
                                                           bool netem);
std::vector<std::vector<std::string>> netns_teardown_commands(const NetnsLayout& layout);

// Why netns emulation cannot run here ("" when it can): not root, or `ip netns add` refused.
std::string netns_unavailable_reason();

// Whether this kernel has the netem qdisc (tried on the loopback of a namespace of our own).
bool kernel_has_netem(const std::string& netns);

// Builds the layout on construction (Error, with everything created so far removed, if a
// command fails) and removes it on destruction.
class NetnsEmulation {
 public:
  NetnsEmulation(NetnsLayout layout, const Topology& topology);
  ~NetnsEmulation();
  NetnsEmulation(const NetnsEmulation&) = delete;
  NetnsEmulation& operator=(const NetnsEmulation&) = delete;

  const NetnsLayout& layout() const { return layout_; }
  bool netem() const { return netem_; }
  void teardown();  // idempotent

 private:
  NetnsLayout layout_;
  bool netem_ = false;
  bool up_ = false;
};

// geopipe-* namespaces on this host (from `ip netns list`).
std::vector<std::string> list_geopipe_namespaces();

// Deletes the namespaces of runs whose launching process is gone (their pid is in the name);
// returns the names removed. Namespaces of a live run are left alone.
std::vector<std::string> cleanup_leftover_namespaces();

}  // namespace geopipe::launch
