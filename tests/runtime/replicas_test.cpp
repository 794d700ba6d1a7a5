// Data-parallel stage replicas on as many ranks as the test is started with (ctest: 2, one stage
// x 2 replicas; 4, two stages x 2 replicas in two regions): for 1F1B and ZB-H1, with and without
// ZeRO-1, the losses of 10 steps equal one process running both replicas' micro-batches (fp32
// CPU, within 1e-5 relative), and the all-reduce is measured every step.
#include "test_plan.h"
#include "test_world.h"

#include <geopipe/comm/communicator.h>
#include <geopipe/core/plan.h>
#include <geopipe/core/schedule.h>
#include <geopipe/runtime/trainer.h>

#include <geopipe/core/error.h>

#include <gtest/gtest.h>
#include <mpi.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <tuple>

using namespace geopipe;
using namespace geopipe::runtime;

namespace {

using testing_support::region_of;
using testing_support::world_size;
const auto* const kWorldEnvironment = ::testing::AddGlobalTestEnvironment(new testing_support::WorldEnvironment);

constexpr int kLayers = 4;
constexpr int kReplicas = 2;

// World / 2 stages, each on 2 ranks (replicas) of one region: stage s on ranks 2s and 2s + 1.
Plan replica_plan(const std::string& kind, int M) {
  const int S = world_size() / kReplicas;
  std::vector<std::pair<int, int>> layers;
  std::vector<std::string> regions;
  for (int s = 0; s < S; ++s) {
    layers.push_back({s * kLayers / S, (s + 1) * kLayers / S});
    regions.push_back(region_of(kReplicas * s));
  }
  nlohmann::json doc = to_json(testing_support::tiny_plan(layers, regions, kind, "none", M));
  for (int s = 0; s < S; ++s) doc["stages"][static_cast<size_t>(s)]["ranks"] = {kReplicas * s, kReplicas * s + 1};
  doc["provenance"] = {{"policy", "test"}, {"topology_hash", "0000000000000000"}};
  return parse_plan(doc, "replica-plan.json");
}

// One process running both replicas' micro-batches.
const std::vector<double>& reference(int micro_batches) {
  static std::map<int, std::vector<double>> cache;
  auto it = cache.find(micro_batches);
  if (it == cache.end()) {
    Plan one = testing_support::tiny_plan({{0, kLayers}}, {"us-east"}, "1f1b", "none", micro_batches);
    TrainResult r = run_training(one, testing_support::tiny_config(10), nullptr);
    std::vector<double> l;
    for (const auto& s : r.steps) l.push_back(s.loss);
    it = cache.emplace(micro_batches, l).first;
  }
  return it->second;
}

using Case = std::tuple<std::string, bool>;  // schedule kind, ZeRO-1

class Replicas : public ::testing::TestWithParam<Case> {};

TEST_P(Replicas, TwoReplicasMatchOneProcessWithTwiceTheMicroBatches) {
  const auto& [kind, shard] = GetParam();
  const int M = 4;
  TrainConfig cfg = testing_support::tiny_config(10);
  cfg.shard_optimizer = shard;
  const TrainResult a = run_training(replica_plan(kind, M), cfg, testing_support::world().get());
  const std::vector<double>& want = reference(kReplicas * M);
  ASSERT_EQ(a.steps.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_LE(std::abs(a.steps[i].loss - want[i]), 1e-5 * std::abs(want[i]))
        << kind << " step " << i << ": " << a.steps[i].loss << " vs " << want[i];
    EXPECT_GT(a.steps[i].allreduce_s, 0.0) << "step " << i;
    EXPECT_LE(a.steps[i].allreduce_exposed_s, a.steps[i].allreduce_s + 1e-3) << "step " << i;
  }
  EXPECT_LT(a.steps.back().loss, a.steps.front().loss);
}

std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  std::string kind = std::get<0>(info.param);
  for (char& c : kind)
    if (c == '-') c = '_';
  return kind + (std::get<1>(info.param) ? "_zero1" : "");
}

INSTANTIATE_TEST_SUITE_P(Kinds, Replicas,
                         ::testing::Combine(::testing::Values("1f1b", "zb-h1"), ::testing::Values(false, true)),
                         case_name);

TEST(Replicas, ShardOptimizerWithoutReplicasIsRefused) {
  TrainConfig cfg = testing_support::tiny_config(1);
  cfg.shard_optimizer = true;
  Plan one = testing_support::tiny_plan({{0, kLayers}}, {"us-east"}, "1f1b", "none", 2);
  try {
    run_training(one, cfg, nullptr);
    FAIL() << "accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("--shard-optimizer"), std::string::npos) << e.what();
  }
}

}  // namespace
