#include <geopipe/launch/netns.h>

#include <geopipe/core/error.h>
#include <geopipe/core/log.h>
#include <geopipe/launch/process.h>

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <sstream>

namespace geopipe::launch {

namespace {

std::string prefix_of(int id) { return std::string(kNetnsPrefix) + std::to_string(id); }

// tc rate in kbit/s (1000 bit/s), the unit tc prints back.
std::string tc_rate(double gbps) {
  long long kbit = std::max<long long>(8, std::llround(gbps * 1e6));
  return std::to_string(kbit) + "kbit";
}

// Bucket size: 10 ms at the link's rate (at least a few full frames). tc's default (rate/HZ)
// is so small at these rates that timer granularity keeps the class well below its rate.
std::string tc_burst(double gbps) {
  long long bytes = std::max<long long>(16000, std::llround(gbps * 1e9 / 8 * 0.010));
  return std::to_string(bytes) + "b";
}

std::string hex(int v) {
  std::ostringstream s;
  s << std::hex << v;
  return s.str();
}

}  // namespace

std::vector<std::string> NetnsLayout::namespaces() const {
  std::vector<std::string> out{hub};
  for (const auto& r : regions) out.push_back(r.netns);
  return out;
}

const NetnsRegion* NetnsLayout::find(const std::string& region) const {
  for (const auto& r : regions)
    if (r.region == region) return &r;
  return nullptr;
}

NetnsLayout make_netns_layout(const Topology& topology, const std::vector<std::string>& regions, int id) {
  if (regions.size() > 200) throw InputError("--emulate netns", "", "at most 200 regions fit one /24");
  NetnsLayout l;
  l.id = id;
  l.hub = prefix_of(id) + "-hub";
  // 512 /24s of 198.18.0.0/15; the addresses exist only inside our namespaces, so two runs
  // that pick the same subnet still cannot see each other.
  const int block = id % 512;
  const std::string net = "198." + std::to_string(18 + block / 256) + "." + std::to_string(block % 256) + ".";
  l.subnet = net + "0/24";
  l.hub_address = net + "1";
  for (size_t k = 0; k < regions.size(); ++k) {
    int index = topology.region_index(regions[k]);
    if (index < 0) throw InputError(topology.source, "regions", "region \"" + regions[k] + "\" is not in the topology");
    l.regions.push_back({regions[k], index, prefix_of(id) + "-r" + std::to_string(k), net + std::to_string(10 + k)});
  }
  return l;
}

std::vector<std::vector<std::string>> netns_setup_commands(const NetnsLayout& l, const Topology& topology, bool netem) {
  std::vector<std::vector<std::string>> c;
  const std::string bridge = "gpbr";
  for (const auto& ns : l.namespaces()) c.push_back({"ip", "netns", "add", ns});
  c.push_back({"ip", "-n", l.hub, "link", "set", "lo", "up"});
  c.push_back({"ip", "-n", l.hub, "link", "add", bridge, "type", "bridge"});
  c.push_back({"ip", "-n", l.hub, "addr", "add", l.hub_address + "/24", "dev", bridge});
  c.push_back({"ip", "-n", l.hub, "link", "set", bridge, "up"});
  for (size_t k = 0; k < l.regions.size(); ++k) {
    const NetnsRegion& r = l.regions[k];
    const std::string port = "gpv" + std::to_string(k);
    c.push_back({"ip", "-n", l.hub, "link", "add", port, "type", "veth", "peer", "name", kNetnsInterface, "netns", r.netns});
    c.push_back({"ip", "-n", l.hub, "link", "set", port, "master", bridge});
    c.push_back({"ip", "-n", l.hub, "link", "set", port, "up"});
    c.push_back({"ip", "-n", r.netns, "link", "set", "lo", "up"});
    c.push_back({"ip", "-n", r.netns, "addr", "add", r.address + "/24", "dev", kNetnsInterface});
    c.push_back({"ip", "-n", r.netns, "link", "set", kNetnsInterface, "up"});
  }
  // Rate limits on egress of each region's interface: class 1:1 (default) for traffic to the
  // hub (MPI's control connections), one class per destination region.
  for (size_t a = 0; a < l.regions.size(); ++a) {
    const NetnsRegion& from = l.regions[a];
    const std::vector<std::string> tc = {"tc", "-n", from.netns};
    auto cmd = [&](std::initializer_list<std::string> rest) {
      std::vector<std::string> v = tc;
      v.insert(v.end(), rest);
      c.push_back(std::move(v));
    };
    cmd({"qdisc", "add", "dev", kNetnsInterface, "root", "handle", "1:", "htb", "default", "1"});
    cmd({"class", "add", "dev", kNetnsInterface, "parent", "1:", "classid", "1:1", "htb", "rate", "10gbit",
         "quantum", "60000"});
    for (size_t b = 0; b < l.regions.size(); ++b) {
      if (a == b) continue;
      const NetnsRegion& to = l.regions[b];
      auto link = topology.link(from.topology_index, to.topology_index);
      if (!link) {
        cmd({"filter", "add", "dev", kNetnsInterface, "parent", "1:", "protocol", "ip", "prio", "1", "u32", "match",
             "ip", "dst", to.address + "/32", "action", "drop"});
        continue;
      }
      const std::string minor = hex(static_cast<int>(16 + b));
      const std::string rate = tc_rate(link->gbps);
      const std::string burst = tc_burst(link->gbps);
      cmd({"class", "add", "dev", kNetnsInterface, "parent", "1:", "classid", "1:" + minor, "htb", "rate", rate,
           "ceil", rate, "burst", burst, "cburst", burst, "quantum", "60000"});
      if (netem && link->latency_ms > 0) {
        std::ostringstream delay;
        delay << link->latency_ms << "ms";
        cmd({"qdisc", "add", "dev", kNetnsInterface, "parent", "1:" + minor, "handle", minor + ":", "netem", "delay",
             delay.str(), "limit", "100000"});
      }
      cmd({"filter", "add", "dev", kNetnsInterface, "parent", "1:", "protocol", "ip", "prio", "1", "u32", "match", "ip",
           "dst", to.address + "/32", "flowid", "1:" + minor});
    }
  }
  return c;
}

std::vector<std::vector<std::string>> netns_teardown_commands(const NetnsLayout& l) {
  // Deleting a namespace deletes its interfaces (and a veth's peer with it).
  std::vector<std::vector<std::string>> c;
  auto names = l.namespaces();
  for (auto it = names.rbegin(); it != names.rend(); ++it) c.push_back({"ip", "netns", "delete", *it});
  return c;
}

std::string netns_unavailable_reason() {
  if (geteuid() != 0) return "--emulate netns needs root (network namespaces and tc); use --emulate software";
  const std::string probe = prefix_of(getpid()) + "-probe";
  CommandResult r = run_capture({"ip", "netns", "add", probe}, 10);
  if (r.exit_code != 0) return "`ip netns add` was refused here: " + r.output;
  run_capture({"ip", "netns", "delete", probe}, 10);
  return "";
}

bool kernel_has_netem(const std::string& netns) {
  CommandResult r = run_capture({"tc", "-n", netns, "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"}, 10);
  if (r.exit_code != 0) return false;
  run_capture({"tc", "-n", netns, "qdisc", "del", "dev", "lo", "root"}, 10);
  return true;
}

NetnsEmulation::NetnsEmulation(NetnsLayout layout, const Topology& topology) : layout_(std::move(layout)) {
  up_ = true;  // from the first command on, the destructor/teardown must clean up
  try {
    // The namespaces first, then probe netem inside the hub (never on a host interface).
    auto setup = netns_setup_commands(layout_, topology, false);
    const size_t n_ns = layout_.namespaces().size();
    for (size_t i = 0; i < n_ns; ++i) run_checked(setup[i], 10);
    netem_ = kernel_has_netem(layout_.hub);
    setup = netns_setup_commands(layout_, topology, netem_);
    for (size_t i = n_ns; i < setup.size(); ++i) run_checked(setup[i], 10);
  } catch (...) {
    teardown();
    throw;
  }
  spdlog::debug("netns: {} regions in {} ({}), netem {}", layout_.regions.size(), layout_.hub, layout_.subnet,
                netem_ ? "present" : "absent: one-way latency stays in the software shaper");
}

NetnsEmulation::~NetnsEmulation() { teardown(); }

void NetnsEmulation::teardown() {
  if (!up_) return;
  up_ = false;
  for (const auto& cmd : netns_teardown_commands(layout_)) {
    CommandResult r = run_capture(cmd, 10);
    // A namespace that was never created is not an error here; anything else is reported.
    if (r.exit_code != 0 && r.output.find("No such file") == std::string::npos)
      spdlog::warn("netns teardown: `ip netns delete {}` failed: {}", cmd.back(), r.output);
  }
}

std::vector<std::string> list_geopipe_namespaces() {
  CommandResult r = run_capture({"ip", "netns", "list"}, 10);
  std::vector<std::string> out;
  if (r.exit_code != 0) return out;
  std::istringstream in(r.output);
  std::string line;
  while (std::getline(in, line)) {
    std::string name = line.substr(0, line.find(' '));  // "name (id: 3)"
    if (name.rfind(kNetnsPrefix, 0) == 0) out.push_back(name);
  }
  return out;
}

std::vector<std::string> cleanup_leftover_namespaces() {
  std::vector<std::string> removed;
  for (const auto& name : list_geopipe_namespaces()) {
    // geopipe-<pid>-<suffix>
    const std::string rest = name.substr(std::string(kNetnsPrefix).size());
    long pid = 0;
    try {
      pid = std::stol(rest.substr(0, rest.find('-')));
    } catch (const std::exception&) {
      continue;  // not one of ours
    }
    if (pid <= 0) continue;
    if (kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM) continue;  // its run is alive
    CommandResult r = run_capture({"ip", "netns", "delete", name}, 10);
    if (r.exit_code == 0)
      removed.push_back(name);
    else
      spdlog::warn("cleanup: `ip netns delete {}` failed: {}", name, r.output);
  }
  return removed;
}

}  // namespace geopipe::launch
