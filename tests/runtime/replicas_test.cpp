// Data-parallel stage replicas on as many ranks as the test is started with (ctest: 2, one stage
// x 2 replicas; 4, two stages x 2 replicas in two regions): for 1F1B and ZB-H1, with and without
// ZeRO-1, the losses of 10 steps equal one process running both replicas' micro-batches (fp32
// CPU, within 1e-5 relative), and the all-reduce is measured every step; int8 on the
// inter-region link stays within 2 % over 50 steps; resuming a DP checkpoint (each replica's
// optimizer shard with ZeRO-1) continues the same losses, also with the optimizer sharded the
// other way; a replica whose parameters diverged is caught at the next checkpoint.
#include "test_plan.h"
#include "test_world.h"

#include <geopipe/comm/communicator.h>
#include <geopipe/core/plan.h>
#include <geopipe/core/schedule.h>
#include <geopipe/runtime/checkpoint.h>
#include <geopipe/runtime/gpt.h>
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

// One process running both replicas' micro-batches for `iters` steps.
const std::vector<double>& reference(int micro_batches, int iters = 10) {
  static std::map<std::pair<int, int>, std::vector<double>> cache;
  auto it = cache.find({micro_batches, iters});
  if (it == cache.end()) {
    Plan one = testing_support::tiny_plan({{0, kLayers}}, {"us-east"}, "1f1b", "none", micro_batches);
    TrainResult r = run_training(one, testing_support::tiny_config(iters), nullptr);
    std::vector<double> l;
    for (const auto& s : r.steps) l.push_back(s.loss);
    it = cache.emplace(std::make_pair(micro_batches, iters), l).first;
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
  // AdamW's two fp32 moments: for every parameter of the stage, or for this replica's half (ZeRO-1).
  const Plan plan = replica_plan(kind, M);
  const StagePlan& sp = plan.stages[static_cast<size_t>(plan.stage_of_rank(testing_support::world()->rank()))];
  const double moments = 8.0 * static_cast<double>(GptStage(gpt_config(plan.job.model), sp.layer_begin, sp.layer_end,
                                                              sp.layer_begin == 0, sp.layer_end == kLayers, 1)
                                                         .num_parameters());
  if (shard) {
    EXPECT_NEAR(static_cast<double>(a.optimizer_state_bytes), moments / kReplicas, 8.0 * 16);  // bucket padding
  } else {
    EXPECT_EQ(static_cast<double>(a.optimizer_state_bytes), moments);
  }
  if (testing_support::world()->rank() == 0) {  // the summary: every rank's all-reduce per step
    EXPECT_NE(a.summary.find("all-reduce/step  exposed"), std::string::npos) << a.summary;
    EXPECT_NE(a.summary.find("\n  0/1 "), std::string::npos) << a.summary;  // stage 0, replica 1
  }
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

// Activations and gradients cross the regions compressed (int8 blocks); the replicas' gradients
// are averaged in fp32. After 50 steps the loss stays within 2 % of the uncompressed reference.
TEST(Replicas, Int8OnTheInterRegionLinkStaysWithinTwoPercentOver50Steps) {
  if (world_size() / kReplicas < 2) GTEST_SKIP() << "one stage: no inter-region link";
  const int M = 4, kIters = 50;
  TrainConfig cfg = testing_support::tiny_config(kIters);
  cfg.codec = "int8";
  const TrainResult a = run_training(replica_plan("1f1b", M), cfg, testing_support::world().get());
  const std::vector<double>& want = reference(kReplicas * M, kIters);
  ASSERT_EQ(a.steps.size(), want.size());
  EXPECT_LE(std::abs(a.steps.back().loss - want.back()), 0.02 * want.back())
      << a.steps.back().loss << " vs " << want.back();
  EXPECT_LT(a.steps.back().loss, 0.8 * want.front());  // it trained
  if (testing_support::world()->rank() == 0) {  // stage 0's activations went out as int8 blocks
    EXPECT_LT(static_cast<double>(a.steps.back().fwd_wire), 0.35 * static_cast<double>(a.steps.back().fwd_raw));
  }
}

class ReplicaResume : public ::testing::TestWithParam<bool> {};  // ZeRO-1

TEST_P(ReplicaResume, ResumingADataParallelCheckpointContinuesTheSameLosses) {
  const bool shard = GetParam();
  const Plan plan = replica_plan("1f1b", 2);
  TrainConfig cfg = testing_support::tiny_config(6);
  cfg.shard_optimizer = shard;
  cfg.checkpoint_dir = testing_support::shared_dir(shard ? "resume_zero1" : "resume");
  cfg.checkpoint_every = 3;
  TrainConfig part = cfg;
  part.iters = 3;
  part.optim.decay_steps = 6;  // the schedule of the whole run
  run_training(plan, part, testing_support::world().get());
  TrainConfig rest = cfg;
  rest.resume = true;
  const TrainResult resumed = run_training(plan, rest, testing_support::world().get());
  TrainConfig straight = cfg;
  straight.checkpoint_dir.clear();
  const TrainResult whole = run_training(plan, straight, testing_support::world().get());
  ASSERT_EQ(resumed.first_step, 3);
  ASSERT_EQ(resumed.steps.size(), 3u);
  for (size_t i = 0; i < 3; ++i)
    EXPECT_EQ(resumed.steps[i].loss, whole.steps[i + 3].loss) << "step " << i + 4 << ": bit-identical loss expected";
  const auto m = read_manifest(cfg.checkpoint_dir);
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->step, 6);
  EXPECT_EQ(m->replicas, kReplicas);
  EXPECT_EQ(m->optimizer_shards, shard ? kReplicas : 1);
  const size_t stages = static_cast<size_t>(world_size() / kReplicas);
  ASSERT_EQ(m->files.size(), stages * (shard ? kReplicas : 1));
  EXPECT_EQ(m->file(0).path, shard ? "step-000006/stage-0.shard-0.pt" : "step-000006/stage-0.pt");
  if (shard) {
    EXPECT_EQ(m->file(0, 1).path, "step-000006/stage-0.shard-1.pt");
  }
  // Resharded: the step-3 checkpoint once more, resumed with the optimizer sharded the other way
  // (state written whole resumes sliced by ZeRO-1, slices resume whole).
  TrainConfig again = part;
  again.checkpoint_dir = testing_support::shared_dir(shard ? "reshard_zero1" : "reshard");
  run_training(plan, again, testing_support::world().get());
  TrainConfig other = rest;
  other.checkpoint_dir = again.checkpoint_dir;
  other.shard_optimizer = !shard;
  const TrainResult switched = run_training(plan, other, testing_support::world().get());
  ASSERT_EQ(switched.steps.size(), 3u);
  for (size_t i = 0; i < 3; ++i)
    EXPECT_LE(std::abs(switched.steps[i].loss - whole.steps[i + 3].loss), 1e-5 * whole.steps[i + 3].loss)
        << "step " << i + 4 << " resumed " << (shard ? "without" : "with") << " ZeRO-1";
}

INSTANTIATE_TEST_SUITE_P(Optimizer, ReplicaResume, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool>& i) { return i.param ? "zero1" : "replicated"; });

// A manifest written before checkpoints recorded their layout (no "layers", no "model") loads
// only into a plan with its stage count; with the layout recorded, the same files reshard.
TEST(Replicas, CheckpointWithoutARecordedLayoutLoadsOnlyIntoItsOwnStages) {
  const Plan replicated = replica_plan("1f1b", 4);  // world / 2 stages x 2 replicas
  std::vector<std::pair<int, int>> layers;
  std::vector<std::string> regions;
  for (int s = 0; s < world_size(); ++s) {  // world stages x 1 replica, same model
    layers.push_back({s * kLayers / world_size(), (s + 1) * kLayers / world_size()});
    regions.push_back(region_of(s));
  }
  const Plan pipelined = testing_support::tiny_plan(layers, regions, "1f1b", "none", 8);
  TrainConfig cfg = testing_support::tiny_config(1);
  cfg.checkpoint_dir = testing_support::shared_dir("no_layout");
  cfg.checkpoint_every = 1;
  run_training(replicated, cfg, testing_support::world().get());
  TrainConfig resume = cfg;
  resume.resume = true;
  resume.iters = 2;
  resume.checkpoint_every = 0;  // the manifest stays at step 1
  EXPECT_EQ(run_training(pipelined, resume, testing_support::world().get()).first_step, 1);  // resharded
  testing_support::world()->barrier(comm::Seconds(60));
  if (testing_support::world()->rank() == 0) {  // as an older geopipe wrote it
    auto m = read_manifest(cfg.checkpoint_dir);
    m->layers.clear();
    m->model = {};
    m->tensors.clear();
    write_manifest(cfg.checkpoint_dir, *m);
  }
  testing_support::world()->barrier(comm::Seconds(60));
  try {
    run_training(pipelined, resume, testing_support::world().get());
    FAIL() << "a checkpoint without its layout was resharded";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("layers: the checkpoint records no layer split (written before resharding) and "
                                         "has " + std::to_string(world_size() / kReplicas) + " stages, the plan " +
                                         std::to_string(world_size())),
              std::string::npos)
        << e.what();
  }
  EXPECT_EQ(run_training(replicated, resume, testing_support::world().get()).first_step, 1);
}

// GEOPIPE_TEST_FAULT perturb: rank 1 (replica 1 of stage 0) nudges a parameter after step 3.
// The checkpoint of step 2 passes the replica check; the one of step 4 stops every rank, naming
// the stage and both replicas' digests, and manifest.json still names step 2.
TEST(Replicas, AReplicaWhoseParametersDivergedIsCaughtAtTheNextCheckpoint) {
  TrainConfig cfg = testing_support::tiny_config(6);
  cfg.checkpoint_dir = testing_support::shared_dir("perturb");
  cfg.checkpoint_every = 2;
  cfg.test_fault = "perturb:rank=1:step=3";
  try {
    run_training(replica_plan("1f1b", 2), cfg, testing_support::world().get());
    FAIL() << "the diverged replica went unnoticed";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("replica check at step 4: stage 0's replicas hold different parameters (CRC32C replica 0 (rank "
                        "0) "),
              std::string::npos)
        << what;
    EXPECT_NE(what.find(", replica 1 (rank 1) "), std::string::npos) << what;
    EXPECT_NE(what.find("checkpoint not named"), std::string::npos) << what;
  }
  const auto m = read_manifest(cfg.checkpoint_dir);
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->step, 2);
}

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
