// BACE-Pipe's pathfinder and allocator, the baselines' placements, the exact solver, and plans.
#include <geopipe/core/error.h>
#include <geopipe/core/plan.h>
#include <geopipe/scheduler/planner.h>
#include <geopipe/scheduler/simulator.h>

#include "test_util.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <set>

namespace gs = geopipe::scheduler;
using gs::testing::make_job;
using gs::testing::make_topology;

namespace {

// Two 1-GPU regions joined by one link; a 2-stage job whose stages take ~0.24 s per micro-batch
// and send 2 MiB (bf16) per micro-batch: the link must carry 2 MiB in 0.24 s (~0.07 Gbit/s).
geopipe::Topology two_regions(double gbps) {
  return make_topology({{"a", 1, 1.0, 0.1}, {"b", 1, 1.0, 0.1}}, {{"a", "b", gbps, 10}});
}
geopipe::JobSpec two_stage_job() { return make_job("j", 2, 1024, 1024, 1, 8, 10, 2, 2); }

std::string infeasible_message(gs::Policy p, const geopipe::Topology& t, const geopipe::JobSpec& j,
                               const gs::PlannerOptions& o) {
  try {
    gs::plan_job(p, t, j, o);
  } catch (const geopipe::InfeasibleError& e) {
    EXPECT_EQ(e.exit_code(), geopipe::kExitInfeasible);
    return e.what();
  }
  ADD_FAILURE() << "expected InfeasibleError";
  return "";
}

}  // namespace

TEST(Pathfinder, RejectsLinkSlowerThanStage) {
  gs::PlannerOptions o;
  o.codec = "none";
  std::string msg = infeasible_message(gs::Policy::kBace, two_regions(0.05), two_stage_job(), o);
  EXPECT_NE(msg.find("bandwidth"), std::string::npos) << msg;
  EXPECT_NE(msg.find("best without it"), std::string::npos) << msg;
  // The same link is fine when it is fast enough.
  EXPECT_NO_THROW(gs::plan_job(gs::Policy::kBace, two_regions(1.0), two_stage_job(), o));
}

TEST(Pathfinder, CompressesAHopToMakeAnOtherwiseInfeasiblePathFeasible) {
  gs::PlannerOptions o;  // codec auto
  geopipe::Plan p = gs::plan_job(gs::Policy::kBace, two_regions(0.05), two_stage_job(), o);
  ASSERT_EQ(p.links.size(), 1u);
  EXPECT_EQ(p.links[0].codec_forward, "int8-block");
  EXPECT_EQ(p.links[0].codec_backward, "int8-block");
  // A fast link stays uncompressed; a link too slow even for int8 stays infeasible.
  EXPECT_EQ(gs::plan_job(gs::Policy::kBace, two_regions(1.0), two_stage_job(), o).links[0].codec_forward, "none");
  infeasible_message(gs::Policy::kBace, two_regions(0.01), two_stage_job(), o);
}

TEST(Pathfinder, TooFewGpusIsInfeasibleNamingTheConstraint) {
  auto job = make_job("big", 8, 256, 128, 1, 8, 10, 3, 3);
  std::string msg = infeasible_message(gs::Policy::kBace, two_regions(1.0), job, {});
  EXPECT_NE(msg.find("too few GPUs"), std::string::npos) << msg;
  EXPECT_NE(msg.find("needs at least 3"), std::string::npos) << msg;
}

TEST(Pathfinder, AvoidsALinkWhoseResidualBandwidthIsUsedUp) {
  auto t = make_topology({{"a", 1, 1.0, 0.05}, {"b", 1, 1.0, 0.05}, {"c", 1, 1.0, 0.2}},
                         {{"a", "b", 1, 10}, {"a", "c", 1, 10}, {"b", "c", 1, 10}});
  auto job = two_stage_job();
  auto state = gs::ClusterState::empty(t);
  auto free_net = gs::place_job(gs::Policy::kBace, t, job, state, {});
  ASSERT_TRUE(free_net.placement);
  std::set<int> used(free_net.placement->region.begin(), free_net.placement->region.end());
  EXPECT_EQ(used, (std::set<int>{0, 1}));  // the two cheap regions
  state.residual_bps[0 * 3 + 1] = state.residual_bps[1 * 3 + 0] = 0;  // running jobs fill a <-> b
  auto busy_net = gs::place_job(gs::Policy::kBace, t, job, state, {});
  ASSERT_TRUE(busy_net.placement);
  used = std::set<int>(busy_net.placement->region.begin(), busy_net.placement->region.end());
  EXPECT_TRUE(used.count(2)) << "expected the path to go through c";
  // Delay-first reads link capacity and does not notice.
  auto df = gs::place_job(gs::Policy::kDelayFirst, t, job, state, {});
  ASSERT_TRUE(df.placement);
}

TEST(Allocator, TakesTheCheapRegionWhenItIsWithinTheMaxSlowdown) {
  // "fast" is 4/3 faster and 6x dearer than "cheap".
  auto t = make_topology({{"fast", 4, 2.0, 0.30}, {"cheap", 4, 1.5, 0.05}}, {{"fast", "cheap", 0.001, 50}});
  auto job = make_job("j", 8, 1024, 1024, 1, 8, 10, 4, 4);
  gs::PlannerOptions o;
  o.max_slowdown = 0.5;
  EXPECT_EQ(gs::plan_job(gs::Policy::kBace, t, job, o).stages[0].region, "cheap");
  o.max_slowdown = 0.1;
  EXPECT_EQ(gs::plan_job(gs::Policy::kBace, t, job, o).stages[0].region, "fast");
  o.max_slowdown = 0;
  for (const auto& s : gs::plan_job(gs::Policy::kBace, t, job, o).stages) EXPECT_EQ(s.region, "fast");
  o.max_slowdown = 0.5;
  for (const auto& s : gs::plan_job(gs::Policy::kBace, t, job, o).stages) EXPECT_EQ(s.region, "cheap");
  // Without the price term BACE takes the fastest path whatever the max_slowdown.
  o.max_slowdown = 0.5;
  EXPECT_EQ(gs::plan_job(gs::Policy::kBaceNoPrice, t, job, o).stages[0].region, "fast");
  EXPECT_EQ(gs::plan_job(gs::Policy::kDelayFirst, t, job, o).stages[0].region, "fast");
  EXPECT_EQ(gs::plan_job(gs::Policy::kCostFirst, t, job, o).stages[0].region, "cheap");
}

TEST(Allocator, BalancesLayersByRegionSpeed) {
  // One GPU in a 3x faster region and one in a slow one: the fast stage takes more blocks.
  auto t = make_topology({{"fast", 1, 3.0, 0.1}, {"slow", 1, 1.0, 0.1}}, {{"fast", "slow", 100, 1}});
  auto job = make_job("j", 16, 512, 512, 1, 8, 10, 2, 2);
  auto p = gs::plan_job(gs::Policy::kBace, t, job, {});
  const auto& fast = p.stages[0].region == "fast" ? p.stages[0] : p.stages[1];
  const auto& slow = p.stages[0].region == "fast" ? p.stages[1] : p.stages[0];
  EXPECT_GT(fast.layer_end - fast.layer_begin, 2 * (slow.layer_end - slow.layer_begin));
}

TEST(Baselines, FifoTakesFreeGpusInTheTopologysRegionOrder) {
  auto t = make_topology({{"a", 1, 1.0, 0.3}, {"b", 2, 1.0, 0.2}, {"c", 4, 1.0, 0.1}},
                         {{"a", "b", 10, 1}, {"b", "c", 10, 1}, {"a", "c", 10, 1}});
  auto job = make_job("j", 6, 256, 256, 1, 8, 10, 3, 3);
  auto r = gs::place_job(gs::Policy::kFifo, t, job, gs::ClusterState::empty(t), {});
  ASSERT_TRUE(r.placement);
  EXPECT_EQ(r.placement->region, (std::vector<int>{0, 1, 1}));
}

TEST(Baselines, DelayFirstIsFastestAndCostFirstCheapestOnRandomInstances) {
  gs::Rng rng(7);
  for (int trial = 0; trial < 20; ++trial) {
    std::vector<gs::testing::R> regions;
    std::vector<gs::testing::L> links;
    const int R = 3 + trial % 3;
    for (int i = 0; i < R; ++i)
      regions.push_back({"r" + std::to_string(i), 1 + static_cast<int>(rng.uniform() * 3), rng.uniform(0.5, 2.0),
                         rng.uniform(0.05, 0.25)});
    for (int i = 0; i < R; ++i)
      for (int k = i + 1; k < R; ++k) links.push_back({"r" + std::to_string(i), "r" + std::to_string(k), rng.uniform(0.05, 2), rng.uniform(1, 60)});
    auto t = make_topology(regions, links);
    auto job = make_job("j", 12, 1024, 1024, 1, 16, 10, 2, 4);
    auto st = gs::ClusterState::empty(t);
    auto bace = gs::place_job(gs::Policy::kBace, t, job, st, {});
    auto df = gs::place_job(gs::Policy::kDelayFirst, t, job, st, {});
    auto cf = gs::place_job(gs::Policy::kCostFirst, t, job, st, {});
    ASSERT_TRUE(df.placement && cf.placement);
    if (!bace.placement) continue;
    EXPECT_LE(df.placement->iteration_s, bace.placement->iteration_s * (1 + 1e-9)) << "trial " << trial;
    EXPECT_LE(cf.placement->cost_usd, bace.placement->cost_usd * (1 + 1e-9)) << "trial " << trial;
  }
}

TEST(Exact, IsNeverBeatenOnItsObjective) {
  gs::Rng rng(11);
  int compared = 0;
  for (int trial = 0; trial < 25; ++trial) {
    std::vector<gs::testing::R> regions;
    std::vector<gs::testing::L> links;
    const int R = 2 + trial % 4;
    for (int i = 0; i < R; ++i)
      regions.push_back({"r" + std::to_string(i), 1 + static_cast<int>(rng.uniform() * 3), rng.uniform(0.5, 2.0),
                         rng.uniform(0.05, 0.25)});
    for (int i = 0; i < R; ++i)
      for (int k = i + 1; k < R; ++k) links.push_back({"r" + std::to_string(i), "r" + std::to_string(k), rng.uniform(0.05, 2), rng.uniform(1, 60)});
    auto t = make_topology(regions, links);
    auto job = make_job("j", 12, 1024, 1024, 1, 16, 10, 2, 5);
    auto st = gs::ClusterState::empty(t);
    gs::PlannerOptions o;
    auto exact = gs::exact_placement(t, job, st, o);
    auto bace = gs::place_job(gs::Policy::kBace, t, job, st, o);
    EXPECT_TRUE(exact.placement || !bace.placement) << "exact found nothing where BACE did, trial " << trial;
    if (!exact.placement || !bace.placement) continue;
    gs::PlannerOptions fastest = o;
    fastest.max_slowdown = 0;
    const double t_fast = gs::exact_placement(t, job, st, fastest).placement->iteration_s;
    EXPECT_LE(t_fast, bace.placement->iteration_s * (1 + 1e-9));
    if (bace.placement->iteration_s <= t_fast * (1 + o.max_slowdown)) {
      EXPECT_LE(exact.placement->cost_usd, bace.placement->cost_usd * (1 + 1e-9)) << "trial " << trial;
      ++compared;
    }
  }
  EXPECT_GT(compared, 10);
}

TEST(Exact, RefusesInstancesBeyondItsLimits) {
  std::vector<gs::testing::R> regions;
  for (int i = 0; i < 7; ++i) regions.push_back({"r" + std::to_string(i), 1, 1.0, 0.1});
  auto t = make_topology(regions, {{"r0", "r1", 1, 1}});
  auto job = make_job("j", 4, 256, 256, 1, 8, 10, 2, 2);
  EXPECT_THROW(gs::exact_placement(t, job, gs::ClusterState::empty(t), {}), geopipe::InputError);
}

TEST(Plan, Local4DemoPlanIsValidAndUsesEveryRegionOnce) {
  auto t = geopipe::load_topology(std::string(GEOPIPE_SOURCE_DIR) + "/examples/topologies/local4.json");
  auto job = geopipe::load_job(std::string(GEOPIPE_SOURCE_DIR) + "/examples/jobs/gpt-tiny.json");
  geopipe::Plan p = gs::plan_job(gs::Policy::kBace, t, job, {});
  geopipe::Plan back = geopipe::parse_plan(geopipe::to_json(p), "roundtrip.json");  // the core validator
  EXPECT_NO_THROW(geopipe::check_plan_against(back, t, "roundtrip.json", 4));
  ASSERT_EQ(p.world_size(), 4);
  ASSERT_EQ(p.num_stages(), 4 * p.schedule.virtual_stages);
  std::set<std::string> regions;
  for (int r = 0; r < 4; ++r) {
    const auto chunks = p.stages_of_rank(r);
    ASSERT_EQ(static_cast<int>(chunks.size()), p.schedule.virtual_stages);
    for (int c : chunks) EXPECT_EQ(p.stages[c].region, p.stages[chunks[0]].region);  // one region per rank
    regions.insert(p.stages[chunks[0]].region);
  }
  EXPECT_EQ(regions.size(), 4u);
  for (const auto& l : p.links) EXPECT_EQ(l.transport, "mpi");  // CPU "GPUs": no NCCL
  gs::PlannerOptions lh;
  lh.schedule = "1f1b-lh";
  geopipe::Plan q = gs::plan_job(gs::Policy::kBace, t, job, lh);
  EXPECT_EQ(q.schedule.warmup.size(), 4u);
  for (int k = 0; k < 4; ++k) EXPECT_GE(q.schedule.warmup.at(k), 3 - k);
  EXPECT_EQ(p.provenance.topology_hash, t.hash());
  EXPECT_EQ(p.provenance.job_hash, job.hash());
  EXPECT_EQ(p.provenance.policy, "bace");
  EXPECT_GT(p.predicted.iteration_s, 0);
  EXPECT_NEAR(p.predicted.jct_s, p.predicted.iteration_s * job.iterations, 1e-9);
}

TEST(Plan, NcclOnlyJoinsStagesInsideAGpuRegion) {
  auto t = geopipe::load_topology(std::string(GEOPIPE_SOURCE_DIR) + "/examples/topologies/aws6.json");
  auto job = geopipe::load_job(std::string(GEOPIPE_SOURCE_DIR) + "/examples/jobs/gpt-1.3b.json");
  geopipe::Plan p = gs::plan_job(gs::Policy::kBace, t, job, {});
  for (const auto& l : p.links) EXPECT_EQ(l.transport, l.from_region == l.to_region ? "nccl" : "mpi");
  EXPECT_NO_THROW(geopipe::parse_plan(geopipe::to_json(p), "aws6-plan.json"));
}

TEST(Plan, LongLinksGetTheLatencyHidingSchedule) {
  // 40 ms one way between two fast stages: plain 1F1B would stall on the round trip.
  auto t = make_topology({{"a", 1, 1.0, 0.1}, {"b", 1, 1.0, 0.1}}, {{"a", "b", 100, 40}});
  auto job = make_job("j", 2, 256, 256, 1, 16, 10, 2, 2);
  gs::PlannerOptions lh;
  lh.schedule = "1f1b-lh";
  auto p = gs::plan_job(gs::Policy::kBace, t, job, lh);
  EXPECT_EQ(p.schedule.kind, "1f1b-lh");
  ASSERT_EQ(p.schedule.warmup.size(), 2u);
  EXPECT_GT(p.schedule.warmup[0], 1);
  gs::PlannerOptions plain;
  plain.schedule = "1f1b";
  auto q = gs::plan_job(gs::Policy::kBace, t, job, plain);
  EXPECT_EQ(q.schedule.warmup[0], 1);
  EXPECT_GT(q.predicted.iteration_s, p.predicted.iteration_s);
}

// ---- Replicas ----------------------------------------------------------------------------------

namespace {

// Two regions of `gpus` GPUs each; the two-stage job with `replicas` replicas per stage.
geopipe::Topology two_regions_of(int gpus) {
  return make_topology({{"a", gpus, 1.0, 0.1}, {"b", gpus, 1.0, 0.2}}, {{"a", "b", 10, 10}});
}
geopipe::JobSpec replicated(geopipe::JobSpec job, int replicas) {
  job.replicas = replicas;
  return job;
}

}  // namespace

TEST(PlanReplicas, EveryStageGetsItsReplicasInItsRegionRanksGroupedByStage) {
  // Two GPUs a region and two per stage: each region holds exactly one stage.
  auto t = two_regions_of(2);
  geopipe::Plan p = gs::plan_job(gs::Policy::kBace, t, replicated(two_stage_job(), 2), {});
  ASSERT_EQ(p.num_stages(), 2);
  EXPECT_EQ(p.world_size(), 4);
  EXPECT_EQ(p.replicas(), 2);
  EXPECT_EQ(p.job.replicas, 2);
  EXPECT_EQ(p.stages[0].ranks, (std::vector<int>{0, 1}));
  EXPECT_EQ(p.stages[1].ranks, (std::vector<int>{2, 3}));
  EXPECT_NE(p.stages[0].region, p.stages[1].region);
  EXPECT_EQ(p.replica_of(3), 1);
  EXPECT_EQ(p.rank_of(1, 0), 2);
  // Per-rank predictions: one entry per rank, a stage's replicas alike.
  ASSERT_EQ(p.predicted.memory_bytes.size(), 4u);
  ASSERT_EQ(p.predicted.peak_activations.size(), 4u);
  EXPECT_EQ(p.predicted.memory_bytes[2], p.predicted.memory_bytes[3]);
  EXPECT_EQ(p.predicted.peak_activations[0], p.predicted.peak_activations[1]);

  geopipe::Plan back = geopipe::parse_plan(geopipe::to_json(p), "replicas.json");
  EXPECT_EQ(back.stages[0].ranks, (std::vector<int>{0, 1}));
  EXPECT_EQ(back.stages[1].ranks, (std::vector<int>{2, 3}));
  EXPECT_EQ(back.job.replicas, 2);
  EXPECT_EQ(back.provenance.job_hash, back.job.hash());
  // The all-reduce predictions come back as written (and a plan without replicas writes none).
  ASSERT_EQ(p.predicted.allreduce_s.size(), 4u);
  EXPECT_EQ(back.predicted.allreduce_s, p.predicted.allreduce_s);
  EXPECT_EQ(back.predicted.allreduce_exposed_s, p.predicted.allreduce_exposed_s);
  EXPECT_EQ(geopipe::to_json(back), geopipe::to_json(p));
  const nlohmann::json plain = geopipe::to_json(gs::plan_job(gs::Policy::kBace, t, two_stage_job(), {}));
  EXPECT_FALSE(plain["predicted"].contains("allreduce_s"));
  EXPECT_FALSE(plain["predicted"].contains("allreduce_exposed_s"));
  EXPECT_NO_THROW(geopipe::check_plan_against(back, t, "replicas.json", 4));
}

TEST(PlanReplicas, IterationAddsTheSlowestExposedAllReduceAndEnergyCountsEveryReplica) {
  // One region: both stages in it, so the replicas share no link and add only the all-reduce.
  auto one_region = [](int gpus) { return make_topology({{"a", gpus, 1.0, 0.1}}, {}); };
  geopipe::Plan one = gs::plan_job(gs::Policy::kBace, one_region(2), two_stage_job(), {});
  geopipe::Plan two = gs::plan_job(gs::Policy::kBace, one_region(4), replicated(two_stage_job(), 2), {});
  ASSERT_EQ(two.schedule.kind, one.schedule.kind);
  EXPECT_TRUE(one.predicted.allreduce_s.empty());
  // Stage 0 (a block and the embedding: 14,693,376 parameters, 58,773,504 fp32 bytes) and stage 1
  // (a block and the head: 13,646,848, 54,587,392 bytes) send three 25 MiB buckets each; their
  // 0.15 s backward hides all but the last, 6,344,704 and 2,158,592 bytes: a ring of two over
  // 100 Gbit/s takes n / 12.5e9 s + 2 x 0.5 ms latency.
  ASSERT_EQ(two.predicted.allreduce_exposed_s.size(), 4u);
  EXPECT_NEAR(two.predicted.allreduce_s[0], 0.00770188032, 1e-12);
  EXPECT_NEAR(two.predicted.allreduce_exposed_s[0], 0.00150757632, 1e-12);
  EXPECT_NEAR(two.predicted.allreduce_exposed_s[1], 0.00150757632, 1e-12);
  EXPECT_NEAR(two.predicted.allreduce_exposed_s[2], 0.00117268736, 1e-12);
  EXPECT_NEAR(two.predicted.iteration_s, one.predicted.iteration_s + 0.00150757632, 1e-12);
  // Both replicas' GPUs: each pipeline's energy plus its 2 GPUs idling (0.2 x 700 W x PUE 1.2)
  // through the exposed all-reduce, over 10 iterations.
  const double idle_j = 2 * 0.2 * 700 * 1.2 * 0.00150757632 * 10;
  EXPECT_NEAR(two.predicted.energy_kwh, 2 * (one.predicted.energy_kwh + idle_j / 3.6e6), 1e-12);
}

TEST(PlanReplicas, TheReplicasPipelinesShareTheLinkBetweenTheirRegions) {
  geopipe::Plan two = gs::plan_job(gs::Policy::kBace, two_regions_of(2), replicated(two_stage_job(), 2), {});
  ASSERT_NE(two.stages[0].region, two.stages[1].region);
  // 2 pipelines x 8 micro-batches x 2,097,152 bytes per iteration over 10 Gbit/s (1.25e9 B/s).
  ASSERT_EQ(two.links.size(), 1u);
  EXPECT_NEAR(two.predicted.link_utilisation[0], 2 * 8 * 2097152 / two.predicted.iteration_s / 1.25e9, 1e-12);
  // Each pipeline's message crosses at half the link: 2,097,152 bytes at 0.625e9 B/s, not 1.25e9.
  gs::PlannerOptions plain;
  plain.codec = "none";
  const auto t = two_regions_of(2);
  const auto one = gs::evaluate_path(t, two_stage_job(), {0, 1}, gs::ClusterState::empty(t), plain);
  const auto shared = gs::evaluate_path(t, replicated(two_stage_job(), 2), {0, 1}, gs::ClusterState::empty(t), plain);
  ASSERT_TRUE(one && shared);
  EXPECT_DOUBLE_EQ(one->hop_xfer_s[0], 2097152 / 1.25e9);
  EXPECT_DOUBLE_EQ(shared->hop_xfer_s[0], 2097152 / 0.625e9);
  // The replayed schedule (the plan) sends each pipeline's messages at the same half.
  std::vector<gs::ScheduleOption> considered;
  gs::plan_job(gs::Policy::kBace, t, replicated(two_stage_job(), 2), plain, &considered);
  std::vector<gs::ScheduleOption> alone;
  gs::plan_job(gs::Policy::kBace, two_regions_of(1), two_stage_job(), plain, &alone);
  ASSERT_FALSE(considered.empty());
  ASSERT_FALSE(alone.empty());
  EXPECT_GT(considered[0].timing.iteration_s, alone[0].timing.iteration_s + 2 * (2097152 / 0.625e9 - 2097152 / 1.25e9) * 0.99);
}

TEST(PlanReplicas, ARegionWithRoomForTwoReplicatedStagesHostsBoth) {
  // a: 4 GPUs (two stages of two replicas), b: 1 GPU (none); the link is too slow to want anyway.
  auto t = make_topology({{"a", 4, 1.0, 0.1}, {"b", 1, 1.0, 0.1}}, {{"a", "b", 0.001, 100}});
  geopipe::Plan p = gs::plan_job(gs::Policy::kBace, t, replicated(two_stage_job(), 2), {});
  ASSERT_EQ(p.num_stages(), 2);
  EXPECT_EQ(p.stages[0].region, "a");
  EXPECT_EQ(p.stages[1].region, "a");
  EXPECT_EQ(p.stages[1].ranks, (std::vector<int>{2, 3}));
}

TEST(PlanReplicas, ARankIsTheSameReplicaOfEveryChunkAtItsPosition) {
  // ZB-V: position 0 holds chunks 0 and 3, position 1 chunks 1 and 2.
  auto t = two_regions_of(2);
  gs::PlannerOptions o;
  o.schedule = "zbv";
  geopipe::Plan p = gs::plan_job(gs::Policy::kBace, t, replicated(make_job("j", 4, 1024, 1024, 1, 8, 10, 2, 2), 2), o);
  ASSERT_EQ(p.num_stages(), 4);
  EXPECT_EQ(p.stages[0].ranks, (std::vector<int>{0, 1}));
  EXPECT_EQ(p.stages[1].ranks, (std::vector<int>{2, 3}));
  EXPECT_EQ(p.stages[2].ranks, (std::vector<int>{2, 3}));
  EXPECT_EQ(p.stages[3].ranks, (std::vector<int>{0, 1}));
  EXPECT_EQ(p.stages_of_rank(1), (std::vector<int>{0, 3}));
  EXPECT_EQ(p.replica_of(1), 1);
  EXPECT_EQ(p.stages[3].region, p.stages[0].region);
  EXPECT_NO_THROW(geopipe::parse_plan(geopipe::to_json(p), "zbv-replicas.json"));
}

TEST(PlanReplicas, RegionsTooSmallForTheReplicasAreNamedWithTheirGpus) {
  auto t = make_topology({{"a", 1, 1.0, 0.1}, {"b", 3, 1.0, 0.1}}, {{"a", "b", 10, 10}});
  EXPECT_EQ(infeasible_message(gs::Policy::kBace, t, replicated(two_stage_job(), 2), {}),
            "cannot place job \"j\" on test (policy bace): too few GPUs for 2 replicas: each stage needs 2 GPUs in "
            "one region and the job at least 2 stages (4 GPUs); a has 1 GPU (0 stages), b has 3 GPUs (1 stage)");
  // Every policy goes through the same check.
  EXPECT_NE(infeasible_message(gs::Policy::kExact, t, replicated(two_stage_job(), 2), {}).find("b has 3 GPUs (1 stage)"),
            std::string::npos);
}

// ---- GPU bounds: the planner chooses the replicas -----------------------------------------

namespace {

// The job with "gpus": [lo, hi], as the job parser reads it.
geopipe::JobSpec bounded(const geopipe::JobSpec& job, int lo, int hi) {
  nlohmann::json doc = geopipe::to_json(job);
  doc["gpus"] = {lo, hi};
  return geopipe::parse_job(doc, "bounded.json");
}
geopipe::Topology one_region_of(int gpus) { return make_topology({{"a", gpus, 1.0, 0.1}}, {}); }

}  // namespace

TEST(PlanGpuBounds, BaceTakesReplicasWhenARegionHasSpareGpusAndTheyAreFaster) {
  // 8 GPUs, a 2-stage job of 8 micro-batches allowed 2..8 GPUs: 4 replicas of 2 micro-batches
  // each take (2 + 1) stage times a step instead of (8 + 1): the fastest, and alone within the slack.
  const auto job = bounded(two_stage_job(), 2, 8);
  geopipe::Plan p = gs::plan_job(gs::Policy::kBace, one_region_of(8), job, {});
  EXPECT_EQ(p.replicas(), 4);
  EXPECT_EQ(p.world_size(), 8);
  // The plan's job is what the runtime runs: 4 replicas of 2 micro-batches, the step's 8 in all.
  EXPECT_EQ(p.job.replicas, 4);
  EXPECT_EQ(p.job.micro_batches, 2);
  EXPECT_FALSE(p.job.chooses_replicas());
  EXPECT_EQ(p.provenance.job_hash, job.hash());
  geopipe::Plan plain = gs::plan_job(gs::Policy::kBace, one_region_of(8), two_stage_job(), {});
  EXPECT_LT(p.predicted.iteration_s, 0.5 * plain.predicted.iteration_s);
  // Delay-first and the exact solver take the fastest too; fifo the fewest replicas that fit.
  EXPECT_EQ(gs::plan_job(gs::Policy::kDelayFirst, one_region_of(8), job, {}).replicas(), 4);
  EXPECT_EQ(gs::plan_job(gs::Policy::kExact, one_region_of(8), job, {}).replicas(), 4);
  EXPECT_EQ(gs::plan_job(gs::Policy::kFifo, one_region_of(8), job, {}).replicas(), 1);
}

TEST(PlanGpuBounds, StagesTimesReplicasStayWithinTheBoundsAndTheFreeGpus) {
  struct Case {
    int gpus, lo, hi, replicas;
  };
  // Stages fixed at 2; replicas divide the 8 micro-batches: 2 x {1, 2, 4, 8} GPUs.
  for (const Case& c : {Case{8, 2, 4, 2}, Case{8, 2, 2, 1}, Case{6, 2, 16, 2}, Case{16, 3, 8, 4}, Case{16, 9, 16, 8}}) {
    SCOPED_TRACE(std::to_string(c.gpus) + " GPUs, bounds [" + std::to_string(c.lo) + ", " + std::to_string(c.hi) + "]");
    geopipe::Plan p = gs::plan_job(gs::Policy::kBace, one_region_of(c.gpus), bounded(two_stage_job(), c.lo, c.hi), {});
    EXPECT_EQ(p.replicas(), c.replicas);
    EXPECT_GE(p.world_size(), c.lo);
    EXPECT_LE(p.world_size(), std::min(c.hi, c.gpus));
    EXPECT_EQ(p.job.micro_batches * p.replicas(), 8);
  }
  // --replicas fixes the choice (it must divide the micro-batches).
  gs::PlannerOptions o;
  o.fixed_replicas = 2;
  EXPECT_EQ(gs::plan_job(gs::Policy::kBace, one_region_of(8), bounded(two_stage_job(), 2, 8), o).replicas(), 2);
  o.fixed_replicas = 3;
  try {
    gs::plan_job(gs::Policy::kBace, one_region_of(8), bounded(two_stage_job(), 2, 8), o);
    ADD_FAILURE() << "3 replicas of 8 micro-batches";
  } catch (const geopipe::InputError& e) {
    EXPECT_EQ(std::string(e.what()), "--replicas: 3 replicas do not divide job \"j\"'s 8 micro-batches (with "
                                     "\"gpus\", each replica runs micro_batches / R)");
  }
}

TEST(PlanGpuBounds, BoundsBeyondTheFreeGpusAreRefusedSayingSo) {
  // At least 8 GPUs (4 replicas of 2 stages) on a region of 6.
  EXPECT_EQ(infeasible_message(gs::Policy::kBace, one_region_of(6), bounded(two_stage_job(), 8, 16), {}),
            "cannot place job \"j\" on test (policy bace): too few GPUs: job \"j\" needs at least 2 stages of 4 "
            "replicas (8 GPUs), each stage's replicas in one region; the free GPUs hold 1 such stage");
}

// ---- Egress ------------------------------------------------------------------------------------

namespace {

// `t` with egress prices: its first link's a -> b at `forward`, b -> a at `backward` (given as
// the reverse link when they differ), and `intra` inside a region.
geopipe::Topology priced(const geopipe::Topology& t, double forward, double backward, double intra = 0) {
  nlohmann::json doc = geopipe::to_json(t);
  if (intra > 0) doc["intra_region"]["egress_usd_per_gb"] = intra;
  if (!doc["links"].empty()) {
    doc["links"][0]["egress_usd_per_gb"] = forward;
    if (backward != forward) {
      nlohmann::json reverse = doc["links"][0];
      std::swap(reverse["a"], reverse["b"]);
      reverse["egress_usd_per_gb"] = backward;
      doc["links"].push_back(reverse);
    }
  }
  return geopipe::parse_topology(doc, "priced-topology.json");
}

// two_stage_job(): 1 x 1024 tokens x 1024 wide, bf16: 2,097,152 bytes a message each way, 8
// micro-batches, 10 iterations.
constexpr double kMessage = 2097152, kMessages = 8 * 10;

// Uncompressed hops (--codec none): auto would compress a priced hop (hop_codecs).
gs::PlannerOptions uncompressed() {
  gs::PlannerOptions o;
  o.codec = "none";
  return o;
}

}  // namespace

TEST(PlanEgress, TwoRegionJobPaysBothDirectionsOfEveryMicroBatchAndIteration) {
  auto t = priced(two_regions(10), 0.02, 0.02);  // a 10 Gbit/s link needs no codec
  geopipe::Plan p = gs::plan_job(gs::Policy::kBace, t, two_stage_job(), uncompressed());
  ASSERT_EQ(p.links.size(), 1u);
  ASSERT_EQ(p.links[0].codec_forward, "none");
  // 80 messages x 2 directions x 2,097,152 bytes x 0.02 USD / 1e9 bytes.
  EXPECT_NEAR(p.predicted.egress_usd, 0.0067108864, 1e-15);
  EXPECT_DOUBLE_EQ(p.predicted.cost_usd, p.predicted.electricity_usd + p.predicted.egress_usd);
  EXPECT_GT(p.predicted.electricity_usd, 0);
  // The placement the allocator weighed carries the same two parts.
  auto placed = gs::place_job(gs::Policy::kBace, t, two_stage_job(), gs::ClusterState::empty(t), uncompressed());
  ASSERT_TRUE(placed.placement);
  EXPECT_NEAR(placed.placement->egress_usd, 0.0067108864, 1e-15);
  EXPECT_DOUBLE_EQ(placed.placement->cost_usd, placed.placement->electricity_usd + placed.placement->egress_usd);
  // With a codec the bill is for the compressed bytes: int8-block halves bf16.
  gs::PlannerOptions int8;
  int8.codec = "int8-block";
  geopipe::Plan c = gs::plan_job(gs::Policy::kBace, t, two_stage_job(), int8);
  ASSERT_EQ(c.links[0].codec_forward, "int8-block");
  EXPECT_NEAR(c.predicted.egress_usd, 0.0033554432, 1e-15);
  EXPECT_LE(c.predicted.electricity_usd, p.predicted.electricity_usd);  // shorter messages: no longer an iteration
  EXPECT_DOUBLE_EQ(c.predicted.cost_usd, c.predicted.electricity_usd + c.predicted.egress_usd);
  // --codec auto compresses the priced hop for the egress it saves: the same bill.
  geopipe::Plan a = gs::plan_job(gs::Policy::kBace, t, two_stage_job(), {});
  EXPECT_EQ(a.links[0].codec_forward, "int8-block");
  EXPECT_NEAR(a.predicted.egress_usd, 0.0033554432, 1e-15);
  // Without prices the job pays electricity only, as before, and auto sends it uncompressed.
  geopipe::Plan free = gs::plan_job(gs::Policy::kBace, two_regions(10), two_stage_job(), {});
  EXPECT_EQ(free.predicted.egress_usd, 0.0);
  EXPECT_EQ(free.links[0].codec_forward, "none");
}

TEST(PlanEgress, AsymmetricPricesChargeEachDirectionAtItsOwnRate) {
  auto t = priced(two_regions(10), 0.02, 0.09);
  geopipe::Plan p = gs::plan_job(gs::Policy::kBace, t, two_stage_job(), uncompressed());
  // Both directions carry the same bytes: 80 x 2,097,152 x (0.02 + 0.09) / 1e9, whichever way round.
  EXPECT_NEAR(p.predicted.egress_usd, kMessages * kMessage * 0.11 / 1e9, 1e-15);
  EXPECT_NEAR(p.predicted.egress_usd, 0.0184549376, 1e-15);
  // int4 activations (524,288 bytes) and int8 gradients (1,048,576): the heavier gradients should
  // leave by the cheap direction, a -> b, so stage 0 goes to b. Both orders are equally fast and
  // use equally priced GPUs: the egress alone decides.
  gs::PlannerOptions int4;
  int4.codec = "int4-block";
  geopipe::Plan q = gs::plan_job(gs::Policy::kBace, t, two_stage_job(), int4);
  EXPECT_EQ(q.stages[0].region, "b");
  EXPECT_NEAR(q.predicted.egress_usd, kMessages * (524288 * 0.09 + 1048576 * 0.02) / 1e9, 1e-15);
  EXPECT_NEAR(q.predicted.egress_usd, 0.0054525952, 1e-15);
}

TEST(PlanEgress, InsideARegionTheDefaultIsFreeAndIntraRegionSetsThePrice) {
  auto one = make_topology({{"a", 2, 1.0, 0.1}}, {});
  geopipe::Plan free = gs::plan_job(gs::Policy::kBace, one, two_stage_job(), {});
  ASSERT_EQ(free.stages[1].region, "a");
  EXPECT_EQ(free.predicted.egress_usd, 0.0);
  geopipe::Plan paid = gs::plan_job(gs::Policy::kBace, priced(one, 0, 0, 0.01), two_stage_job(), {});
  EXPECT_NEAR(paid.predicted.egress_usd, 0.0033554432, 1e-15);  // 80 x 2 x 2,097,152 x 0.01 / 1e9
  EXPECT_DOUBLE_EQ(paid.predicted.electricity_usd, free.predicted.electricity_usd);
}

TEST(PlanEgress, EveryReplicasPipelinePaysItsOwnTraffic) {
  auto t = priced(two_regions_of(2), 0.02, 0.02);
  geopipe::Plan one =
      gs::plan_job(gs::Policy::kBace, priced(two_regions_of(1), 0.02, 0.02), two_stage_job(), uncompressed());
  geopipe::Plan two = gs::plan_job(gs::Policy::kBace, t, replicated(two_stage_job(), 2), uncompressed());
  ASSERT_NE(two.stages[0].region, two.stages[1].region);
  EXPECT_NEAR(one.predicted.egress_usd, 0.0067108864, 1e-15);
  EXPECT_NEAR(two.predicted.egress_usd, 2 * 0.0067108864, 1e-15);
  EXPECT_DOUBLE_EQ(two.predicted.cost_usd, two.predicted.electricity_usd + two.predicted.egress_usd);
}

TEST(Allocator, EgressKeepsAPipelineInOneRegionWhenCrossingCostsMoreThanTheElectricitySaved) {
  // "cheap" has half the electricity price; a 4-stage job fits in either region alone or across.
  auto base = make_topology({{"dear", 4, 1.0, 0.2}, {"cheap", 2, 1.0, 0.1}}, {{"dear", "cheap", 100, 1}});
  auto job = make_job("j", 8, 1024, 1024, 1, 8, 10, 4, 4);
  gs::PlannerOptions o;
  o.max_slowdown = 1.0;
  geopipe::Plan unpriced = gs::plan_job(gs::Policy::kBace, base, job, o);
  std::set<std::string> regions;
  for (const auto& s : unpriced.stages) regions.insert(s.region);
  EXPECT_EQ(regions.size(), 2u) << "without egress half the stages run where power is cheap";
  // At 10 USD/GB the crossing costs more than the electricity it saves.
  geopipe::Plan paid = gs::plan_job(gs::Policy::kBace, priced(base, 10, 10), job, o);
  for (const auto& s : paid.stages) EXPECT_EQ(s.region, "dear");
  EXPECT_EQ(paid.predicted.egress_usd, 0.0);
  // It pays more for power than the split placement did, and far less than that placement's
  // one crossing would cost: 80 x 2 x 2,097,152 x 10 / 1e9 = 3.36 USD.
  EXPECT_GT(paid.predicted.electricity_usd, unpriced.predicted.electricity_usd);
  EXPECT_LT(paid.predicted.cost_usd, unpriced.predicted.electricity_usd + kMessages * 2 * kMessage * 10 / 1e9);
}

// ---- Memory: plans that fit ----------------------------------------------------------------

namespace {

geopipe::Topology with_memory(geopipe::Topology t, double gpu_mem_gb) {
  for (auto& r : t.regions) r.gpu_mem_gb = gpu_mem_gb;
  return t;
}

}  // namespace

TEST(PlanMemory, MoreStagesSpreadAModelTooBigForOneGpu) {
  // 8 blocks of h = 1024: 12,596,224 parameters, 201.5 MB at 16 bytes each. One micro-batch a
  // step, so the search alone takes one stage (a pipeline would only add hops).
  auto job = make_job("big", 8, 1024, 64, 1, 1, 10, 1, 8);
  auto one_region = make_topology({{"a", 8, 1.0, 0.1}}, {});
  EXPECT_EQ(gs::plan_job(gs::Policy::kBace, one_region, job, {}).num_stages(), 1);
  // 1.75 GB GPUs offer 1.575 GB, 0.575 GB beyond the framework's 1 GB: two blocks fit, three
  // (604.6 MB) do not, with or without recomputation. 3 stages split 3, 3, 2; 4 stages 2 each.
  geopipe::Plan p = gs::plan_job(gs::Policy::kBace, with_memory(one_region, 1.75), job, {});
  ASSERT_EQ(p.num_stages(), 4);
  EXPECT_FALSE(p.schedule.recompute);
  // Stage 0: two blocks and the embedding 420,904,960 bytes of state, one micro-batch of
  // activations (2 x 1,081,600 + 65,536 floats), one NCCL message each way (131,072 bytes).
  EXPECT_DOUBLE_EQ(p.predicted.memory_bytes[0], 420904960.0 + 4 * 2228736.0 + 2 * 131072.0 + 1e9);
  for (double m : p.predicted.memory_bytes) EXPECT_LE(m, 1.575e9);
  // At most 3 stages: nothing fits, and the refusal names the last attempt's stage and bytes.
  auto three = make_job("big", 8, 1024, 64, 1, 1, 10, 1, 3);
  const std::string w = infeasible_message(gs::Policy::kBace, with_memory(one_region, 1.75), three, {});
  EXPECT_NE(w.find("cannot place job \"big\""), std::string::npos) << w;
  EXPECT_NE(w.find("stage 0 needs "), std::string::npos) << w;
  EXPECT_NE(w.find("its GPU offers 1575000000 bytes (1.57 GB, gpu_mem_gb x 0.9)"), std::string::npos) << w;
  EXPECT_NE(w.find("with recomputation"), std::string::npos) << w;
  EXPECT_NE(w.find("(with 3 stages)"), std::string::npos) << w;
}

TEST(PlanMemory, RecomputationMakesLongSequencesFit) {
  // s = 1024, 4 sequences a micro-batch: a block keeps 50.3 M floats (the attention
  // probabilities b a s^2 two thirds of them); recomputation keeps its 1 M-float input.
  auto job = make_job("long", 2, 256, 1024, 4, 8, 10, 2, 2);
  auto t = with_memory(two_regions(100), 80);
  gs::PlannerOptions none;
  none.recompute = "none";
  std::vector<gs::ScheduleOption> plain, recomputed;
  gs::plan_job(gs::Policy::kBace, t, job, none, &plain);
  gs::PlannerOptions full;
  full.recompute = "full";
  gs::plan_job(gs::Policy::kBace, t, job, full, &recomputed);
  double least_plain = 1e300, least_recomputed = 1e300;
  for (const auto& o : plain)
    if (o.unavailable.empty()) least_plain = std::min(least_plain, o.peak_memory_bytes());
  for (const auto& o : recomputed)
    if (o.unavailable.empty()) least_recomputed = std::min(least_recomputed, o.peak_memory_bytes());
  ASSERT_LT(least_recomputed, least_plain);
  // GPUs between the two: only recomputation fits, and auto turns it on.
  const double usable = (least_plain + least_recomputed) / 2;
  auto tight = with_memory(two_regions(100), usable / gs::kMemorySafetyFactor / 1e9);
  geopipe::Plan p = gs::plan_job(gs::Policy::kBace, tight, job, {});
  EXPECT_TRUE(p.schedule.recompute);
  for (double m : p.predicted.memory_bytes) EXPECT_LE(m, usable * (1 + 1e-12));
  EXPECT_TRUE(geopipe::parse_plan(geopipe::to_json(p), "long.json").schedule.recompute);
  const std::string w = infeasible_message(gs::Policy::kBace, tight, job, none);
  EXPECT_NE(w.find("micro-batches in flight, message buffers"), std::string::npos) << w;
}

TEST(PlanMemory, LatencyHidingLowersItsWarmupToFit) {
  // 200 ms between the regions: 1F1B-LH deepens rank 0's warm-up to cover the round trip.
  auto job = make_job("j", 4, 256, 256, 1, 16, 10, 2, 2);
  gs::PlannerOptions o;
  o.schedule = "1f1b-lh";
  o.codec = "none";
  geopipe::Plan deep = gs::plan_job(gs::Policy::kBace, with_memory(two_regions(100), 80), job, o);
  ASSERT_GT(deep.schedule.warmup[0], 2);
  // Rank 0 holds 30,515,200 bytes of state, 16 plain sends of 131,072 bytes and the framework's
  // 1 GB, and 12,853,248 bytes a micro-batch in flight: room for 3 micro-batches, warm-up 2.
  const double usable = 30515200.0 + 16 * 131072.0 + 1e9 + 3 * 12853248.0 + 1000;
  geopipe::Plan p =
      gs::plan_job(gs::Policy::kBace, with_memory(two_regions(100), usable / gs::kMemorySafetyFactor / 1e9), job, o);
  EXPECT_EQ(p.schedule.kind, "1f1b-lh");
  EXPECT_EQ(p.schedule.warmup[0], 2);
  EXPECT_EQ(p.schedule.warmup[1], deep.schedule.warmup[1]);
  EXPECT_EQ(p.predicted.peak_activations[0], 3);
  EXPECT_FALSE(p.schedule.recompute);
}
