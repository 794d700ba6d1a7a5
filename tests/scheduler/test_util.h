// Small topologies and jobs for the scheduler tests, built in code so each test shows its numbers.
#pragma once

#include <geopipe/core/config.h>

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace geopipe::scheduler::testing {

struct R {
  std::string name;
  int gpus;
  double tflops;
  double price;
  std::string gpu_type = "H100";
};
struct L {
  std::string a, b;
  double gbps, latency_ms;
  double egress_usd_per_gb = -1;  // < 0: not given (free); a second L b -> a makes it asymmetric
};

inline Topology make_topology(const std::vector<R>& regions, const std::vector<L>& links, double intra_gbps = 100,
                              double intra_latency_ms = 0.5) {
  nlohmann::json doc = {{"name", "test"}, {"intra_region", {{"gbps", intra_gbps}, {"latency_ms", intra_latency_ms}}}};
  doc["regions"] = nlohmann::json::array();
  for (const auto& r : regions)
    doc["regions"].push_back({{"name", r.name},
                              {"gpus", r.gpus},
                              {"gpu_type", r.gpu_type},
                              {"gpu_tflops", r.tflops},
                              {"gpu_mem_gb", 80},
                              {"gpu_power_w", 700},
                              {"pue", 1.2},
                              {"price_usd_per_kwh", r.price}});
  doc["links"] = nlohmann::json::array();
  for (const auto& l : links) {
    doc["links"].push_back({{"a", l.a}, {"b", l.b}, {"gbps", l.gbps}, {"latency_ms", l.latency_ms}});
    if (l.egress_usd_per_gb >= 0) doc["links"].back()["egress_usd_per_gb"] = l.egress_usd_per_gb;
  }
  return parse_topology(doc, "test-topology.json");
}

// A GPT job; `stages` fixed when lo == hi.
inline JobSpec make_job(const std::string& name, int layers, int d_model, int seq_len, int micro_batch,
                        int micro_batches, int iterations, int lo, int hi, double arrival = 0,
                        const std::string& dtype = "bf16") {
  nlohmann::json doc = {{"name", name},
                        {"model",
                         {{"layers", layers},
                          {"d_model", d_model},
                          {"heads", 8},
                          {"seq_len", seq_len},
                          {"vocab", 1024},
                          {"dtype", dtype}}},
                        {"micro_batch", micro_batch},
                        {"micro_batches", micro_batches},
                        {"iterations", iterations},
                        {"arrival_s", arrival}};
  if (lo == hi)
    doc["stages"] = lo;
  else
    doc["stages"] = {lo, hi};
  return parse_job(doc, "test-job.json");
}

}  // namespace geopipe::scheduler::testing
