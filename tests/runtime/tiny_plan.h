// A tiny GPT plan for tests: small enough to train in seconds on 2 cores. No LibTorch here, so
// drivers that only start geopipe-train (tests/reliability) include this alone.
#pragma once

#include <geopipe/core/plan.h>

#include <nlohmann/json.hpp>

#include <string>
#include <utility>
#include <vector>

namespace geopipe::testing_support {

// Stages with the given layer ranges, stage s on rank s in regions[s], consecutive links with
// `codec` both ways (int4 forward gets int8 back), schedule `kind` (1F1B warm-up S-1-s).
inline Plan tiny_plan(const std::vector<std::pair<int, int>>& layers, const std::vector<std::string>& regions,
                      const std::string& kind = "1f1b", const std::string& codec = "none", int micro_batches = 4) {
  using nlohmann::json;
  const int S = static_cast<int>(layers.size());
  json stages = json::array(), links = json::array(), warmup = json::array();
  for (int s = 0; s < S; ++s) {
    stages.push_back({{"index", s}, {"region", regions[s]}, {"ranks", {s}}, {"layers", {layers[s].first, layers[s].second}}});
    warmup.push_back(S - 1 - s);
    if (s + 1 < S)
      links.push_back({{"from_stage", s},
                       {"to_stage", s + 1},
                       {"region_pair", {regions[s], regions[s + 1]}},
                       {"codec", {{"forward", codec}, {"backward", codec == "int4-block" ? "int8-block" : codec}}},
                       {"transport", "mpi"}});
  }
  json doc = {{"version", 1},
              {"job",
               {{"name", "gpt-test"},
                {"model", {{"layers", layers.back().second}, {"d_model", 32}, {"heads", 2}, {"seq_len", 16},
                           {"vocab", 256}, {"dtype", "fp32"}}},
                {"micro_batch", 2},
                {"micro_batches", micro_batches},
                {"iterations", 10},
                {"stages", S}}},
              {"stages", stages},
              {"links", links},
              {"schedule", {{"kind", kind}, {"warmup", warmup}}},
              {"provenance", {{"policy", "test"}, {"topology_hash", "0000000000000000"}}}};
  return parse_plan(doc, "test-plan.json");
}

}  // namespace geopipe::testing_support
