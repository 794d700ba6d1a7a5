// Helpers shared by the launch tests: shipped topologies and plans built on them.
#pragma once

#include <geopipe/core/config.h>
#include <geopipe/core/plan.h>

#include <string>
#include <utility>
#include <vector>

namespace geopipe::launch::testing {

inline std::string src(const std::string& rel) { return std::string(GEOPIPE_SOURCE_DIR) + "/" + rel; }

inline Topology local4() { return load_topology(src("examples/topologies/local4.json")); }

// aws6 with hosts added: numeric addresses resolve without DNS. Oregon gets two hosts (its 64
// GPUs split 32/32), every other region one.
inline Topology aws6_with_hosts() {
  Topology t = load_topology(src("examples/topologies/aws6.json"));
  for (size_t i = 0; i < t.regions.size(); ++i) {
    const std::string net = "10.0." + std::to_string(i + 1) + ".";
    t.regions[i].hosts = {net + "1"};
    if (i == 0) t.regions[i].hosts.push_back(net + "2");
  }
  return t;
}

// A plan for `topology`: stage i in regions[i].first with regions[i].second ranks, ranks
// numbered in stage order, one layer per stage.
inline Plan make_plan(const Topology& topology, const std::vector<std::pair<std::string, int>>& stages) {
  Plan p;
  p.job = load_job(src("examples/jobs/gpt-tiny.json"));
  p.job.name = "test-job";
  p.job.model.layers = static_cast<int>(stages.size());
  p.job.min_stages = p.job.max_stages = static_cast<int>(stages.size());
  int rank = 0;
  for (size_t i = 0; i < stages.size(); ++i) {
    StagePlan s;
    s.index = static_cast<int>(i);
    s.region = stages[i].first;
    for (int k = 0; k < stages[i].second; ++k) s.ranks.push_back(rank++);
    s.layer_begin = static_cast<int>(i);
    s.layer_end = static_cast<int>(i) + 1;
    p.stages.push_back(s);
    p.schedule.warmup.push_back(static_cast<int>(stages.size() - 1 - i));
    if (i > 0) {
      LinkPlan l;
      l.from_stage = static_cast<int>(i) - 1;
      l.to_stage = static_cast<int>(i);
      l.from_region = stages[i - 1].first;
      l.to_region = stages[i].first;
      p.links.push_back(l);
    }
  }
  p.provenance.policy = "manual";
  p.provenance.generator = "launch tests";
  p.provenance.job_hash = p.job.hash();
  p.provenance.topology_hash = topology.hash();
  p.provenance.topology_name = topology.name;
  return p;
}

}  // namespace geopipe::launch::testing
