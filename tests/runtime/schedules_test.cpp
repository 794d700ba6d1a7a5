// Every schedule the runtime runs, on as many ranks as the test is started with (ctest starts it on
// 2 and on 4): GPipe, 1F1B, ZB-H1 (split backward), interleaved 1F1B and ZB-V (two stages per
// rank), with M = 4 and 8 micro-batches, with and without activation recomputation — each gives
// the losses of one process training the same model for 10 steps (fp32 CPU, within 1e-5
// relative), and the same run twice is bit-identical.
#include "test_plan.h"
#include "test_world.h"

#include <geopipe/comm/communicator.h>
#include <geopipe/core/plan.h>
#include <geopipe/core/schedule.h>
#include <geopipe/runtime/trainer.h>

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

constexpr int kLayers = 8;  // enough for 2 stages per rank on 4 ranks, one block each

// A plan of `kind` on every rank of the world: R * V stages placed as the kind places them.
Plan schedule_plan(const std::string& kind, int V, int M) {
  const int R = world_size(), S = R * V;
  const std::vector<int> ranks = stage_ranks(chunk_placement_of(kind), R, V);
  std::vector<std::pair<int, int>> layers;
  std::vector<std::string> regions;
  for (int s = 0; s < S; ++s) {
    layers.push_back({s * kLayers / S, (s + 1) * kLayers / S});
    regions.push_back(region_of(ranks[static_cast<size_t>(s)]));
  }
  nlohmann::json doc = to_json(testing_support::tiny_plan(layers, regions, "1f1b", "none", M));
  for (int s = 0; s < S; ++s) doc["stages"][static_cast<size_t>(s)]["ranks"] = {ranks[static_cast<size_t>(s)]};
  doc["schedule"] = {{"kind", kind}, {"virtual_stages", V}};
  doc["provenance"] = {{"policy", "test"}, {"topology_hash", "0000000000000000"}};
  return parse_plan(doc, "schedule-plan.json");
}

TrainConfig config(const std::string& recompute) {
  TrainConfig c = testing_support::tiny_config(10);
  c.recompute = recompute;
  return c;
}

std::vector<double> losses(const TrainResult& r) {
  std::vector<double> l;
  for (const auto& s : r.steps) l.push_back(s.loss);
  return l;
}

// One process, the same model and micro-batches (every rank computes it: it is deterministic).
const std::vector<double>& reference(int M) {
  static std::map<int, std::vector<double>> cache;
  auto it = cache.find(M);
  if (it == cache.end()) {
    Plan one = testing_support::tiny_plan({{0, kLayers}}, {"us-east"}, "1f1b", "none", M);
    it = cache.emplace(M, losses(run_training(one, config("none"), nullptr))).first;
  }
  return it->second;
}

using Case = std::tuple<std::string, int, int, std::string>;  // kind, stages per rank, M, recompute

class Schedules : public ::testing::TestWithParam<Case> {};

TEST_P(Schedules, MatchOneProcessFor10StepsAndRerunBitIdentically) {
  const auto& [kind, V, M, recompute] = GetParam();
  const Plan plan = schedule_plan(kind, V, M);
  const TrainResult a = run_training(plan, config(recompute), testing_support::world().get());
  const std::vector<double>& want = reference(M);
  ASSERT_EQ(a.steps.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i)
    EXPECT_LE(std::abs(a.steps[i].loss - want[i]), 1e-5 * std::abs(want[i]))
        << kind << " step " << i << ": " << a.steps[i].loss << " vs " << want[i];
  EXPECT_LT(a.steps.back().loss, a.steps.front().loss);
  const TrainResult b = run_training(plan, config(recompute), testing_support::world().get());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(a.steps[i].loss, b.steps[i].loss) << kind << " step " << i;
    EXPECT_EQ(a.steps[i].grad_norm, b.steps[i].grad_norm) << kind << " step " << i;
  }
}

std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  std::string kind = std::get<0>(info.param);
  for (char& c : kind)
    if (c == '-') c = '_';
  return kind + "_V" + std::to_string(std::get<1>(info.param)) + "_M" + std::to_string(std::get<2>(info.param)) +
         "_" + std::get<3>(info.param);
}

INSTANTIATE_TEST_SUITE_P(AllKinds, Schedules,
                         ::testing::Combine(::testing::Values("gpipe", "1f1b", "zb-h1"), ::testing::Values(1),
                                            ::testing::Values(4, 8), ::testing::Values("none", "full")),
                         case_name);
INSTANTIATE_TEST_SUITE_P(TwoStagesPerRank, Schedules,
                         ::testing::Combine(::testing::Values("interleaved", "zbv"), ::testing::Values(2),
                                            ::testing::Values(4, 8), ::testing::Values("none", "full")),
                         case_name);

// A plan made to fit by recomputation says so; the runtime recomputes whatever --recompute says,
// holding what --recompute full holds and computing the same losses.
TEST(Schedules, APlanThatRecomputesIsRunRecomputing) {
  Plan plan = schedule_plan("1f1b", 1, 4);
  const TrainResult kept = run_training(plan, config("none"), testing_support::world().get());
  const TrainResult full = run_training(plan, config("full"), testing_support::world().get());
  plan.schedule.recompute = true;
  const TrainResult planned = run_training(plan, config("none"), testing_support::world().get());
  ASSERT_EQ(planned.steps.size(), full.steps.size());
  for (size_t i = 0; i < full.steps.size(); ++i) {
    EXPECT_EQ(planned.steps[i].loss, full.steps[i].loss) << "step " << i;
    EXPECT_EQ(planned.steps[i].peak_activation_bytes, full.steps[i].peak_activation_bytes) << "step " << i;
  }
  EXPECT_LT(planned.steps[0].peak_activation_bytes, kept.steps[0].peak_activation_bytes);
}

TEST(Schedules, CheckpointOfTwoStagesPerRankResumesTheSameTrajectory) {
  const Plan plan = schedule_plan("interleaved", 2, 4);
  TrainConfig part = config("none");
  part.iters = 4;
  part.optim.decay_steps = 10;
  part.checkpoint_dir = std::string(GEOPIPE_BINARY_DIR) + "/tests/schedules_test_ckpt_np" + std::to_string(world_size());
  part.checkpoint_every = 4;
  if (testing_support::world()->rank() == 0) std::filesystem::remove_all(part.checkpoint_dir);
  testing_support::world()->barrier(comm::Seconds(60));
  run_training(plan, part, testing_support::world().get());
  TrainConfig rest = config("none");
  rest.checkpoint_dir = part.checkpoint_dir;
  rest.resume = true;
  const TrainResult r = run_training(plan, rest, testing_support::world().get());
  const std::vector<double>& want = reference(4);
  ASSERT_EQ(r.steps.size(), 6u);
  for (size_t i = 0; i < 6; ++i) EXPECT_LE(std::abs(r.steps[i].loss - want[4 + i]), 1e-5 * want[4 + i]) << "step " << 4 + i;
}

}  // namespace
