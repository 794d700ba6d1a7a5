// The multi-tenant simulator: link sharing, queueing, energy accounting, determinism.
#include <geopipe/core/error.h>
#include <geopipe/scheduler/simulator.h>

#include "test_util.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>

namespace gs = geopipe::scheduler;
using gs::testing::make_job;
using gs::testing::make_topology;

namespace {

// Two regions of 2 GPUs whose intra-region network is (artificially) slower than the link between
// them, so that delay-first runs each 2-stage job across the link a <-> b. One job alone needs
// ~8.7 MB/s per direction; the link has 12.5 MB/s (0.1 Gbit/s): two jobs oversubscribe it.
geopipe::Topology shared_link(double gbps) {
  return make_topology({{"a", 2, 1.0, 0.1}, {"b", 2, 1.0, 0.1}}, {{"a", "b", gbps, 1}}, 0.001, 0.1);
}
geopipe::JobSpec link_job(const std::string& name) { return make_job(name, 2, 1024, 1024, 1, 8, 20, 2, 2); }

geopipe::Workload workload(std::vector<geopipe::JobSpec> jobs) {
  geopipe::Workload w;
  w.name = "test";
  w.jobs = std::move(jobs);
  return w;
}

}  // namespace

TEST(FairShares, WaterFillsCapacityAmongDemands) {
  EXPECT_EQ(gs::fair_shares({1, 4, 10}, 9), (std::vector<double>{1, 4, 4}));
  EXPECT_EQ(gs::fair_shares({10, 1, 4}, 20), (std::vector<double>{10, 1, 4}));
  EXPECT_EQ(gs::fair_shares({6, 6}, 6), (std::vector<double>{3, 3}));
}

TEST(Simulator, OversubscribedLinkSlowsEveryJobOnIt) {
  auto t = shared_link(0.1);
  auto alone = gs::simulate(t, workload({link_job("x")}), gs::Policy::kDelayFirst, {});
  auto both = gs::simulate(t, workload({link_job("x"), link_job("y")}), gs::Policy::kDelayFirst, {});
  ASSERT_EQ(alone.finished, 1);
  ASSERT_EQ(both.finished, 2);
  ASSERT_EQ(both.jobs[0].inter_region_hops, 1);
  ASSERT_EQ(both.jobs[1].inter_region_hops, 1);
  EXPECT_GT(both.max_link_oversubscription, 1.0);
  EXPECT_LE(alone.max_link_oversubscription, 1.0);
  // Each gets half of 12.5 MB/s: 2 MiB take 0.34 s instead of the 0.24 s stage time.
  for (const auto& j : both.jobs) EXPECT_GT(j.jct_s(), 1.3 * alone.jobs[0].jct_s()) << j.name;
  EXPECT_DOUBLE_EQ(both.jobs[0].jct_s(), both.jobs[1].jct_s());
  // With a link wide enough for both, the period is unchanged: only the fill sees the bandwidth
  // the other job takes (well under 0.1 %).
  auto wide = gs::simulate(shared_link(10), workload({link_job("x"), link_job("y")}), gs::Policy::kDelayFirst, {});
  auto wide_alone = gs::simulate(shared_link(10), workload({link_job("x")}), gs::Policy::kDelayFirst, {});
  EXPECT_NEAR(wide.jobs[1].jct_s(), wide_alone.jobs[0].jct_s(), 1e-3 * wide_alone.jobs[0].jct_s());
  EXPECT_LE(wide.max_link_oversubscription, 1.0);
}

TEST(Simulator, BaceDoesNotOversubscribeALinkItHasSeenFillUp) {
  // BACE reads the residual bandwidth: the second job cannot cross a <-> b at full speed, so it
  // waits or goes elsewhere instead of slowing the first.
  auto t = shared_link(0.1);
  auto r = gs::simulate(t, workload({link_job("x"), link_job("y")}), gs::Policy::kBace, {});
  EXPECT_EQ(r.finished, 2);
  EXPECT_LE(r.max_link_oversubscription, 1.0 + 1e-9);
}

TEST(Simulator, AJobWithReplicasHoldsStagesTimesReplicasGpus) {
  // One region of 4 GPUs: a 2-stage job with 2 replicas holds all four, so the next one waits
  // for it, and a third without replicas (2 GPUs) too, behind it in FIFO order.
  auto t = make_topology({{"a", 4, 1.0, 0.1}}, {});
  auto first = link_job("first"), second = link_job("second");
  first.replicas = second.replicas = 2;
  second.arrival_s = 1;
  for (gs::Policy policy : {gs::Policy::kBace, gs::Policy::kFifo, gs::Policy::kDelayFirst, gs::Policy::kCostFirst}) {
    SCOPED_TRACE(gs::policy_name(policy));
    auto r = gs::simulate(t, workload({first, second}), policy, {});
    ASSERT_EQ(r.finished, 2);
    EXPECT_EQ(r.jobs[0].stages, 2);
    EXPECT_EQ(r.jobs[0].replicas, 2);
    EXPECT_EQ(r.jobs[0].start_s, 0.0);
    EXPECT_DOUBLE_EQ(r.jobs[1].start_s, r.jobs[0].end_s);
  }
  // The same job on the empty cluster: the simulator runs it as the planner evaluated it,
  // the all-reduce and all four GPUs' energy included.
  auto placed = gs::place_job(gs::Policy::kBace, t, first, gs::ClusterState::empty(t), {});
  ASSERT_TRUE(placed.placement);
  ASSERT_EQ(placed.placement->replicas, 2);
  EXPECT_GT(placed.placement->iteration_s, placed.placement->timing.iteration_s);
  auto alone = gs::simulate(t, workload({first}), gs::Policy::kBace, {});
  EXPECT_NEAR(alone.jobs[0].jct_s(), placed.placement->job_s, 1e-9 * placed.placement->job_s);
  EXPECT_NEAR(alone.energy_kwh, placed.placement->energy_kwh, 1e-9 * alone.energy_kwh);
}

TEST(Simulator, AJobWithGpuBoundsTakesTheReplicasTheFreeGpusAllow) {
  // 8 GPUs; "gpus": [2, 8] and 8 micro-batches: alone, the job runs 4 replicas of 2 micro-batches
  // (8 GPUs); arriving while a 2-GPU job runs, BACE gives it what is left: 3 replicas do not
  // divide 8, so 2 (4 GPUs).
  auto t = make_topology({{"a", 8, 1.0, 0.1}}, {});
  nlohmann::json doc = geopipe::to_json(link_job("elastic"));
  doc["gpus"] = {2, 8};
  doc["arrival_s"] = 1;
  const geopipe::JobSpec elastic = geopipe::parse_job(doc, "elastic.json");
  auto alone = gs::simulate(t, workload({elastic}), gs::Policy::kBace, {});
  ASSERT_EQ(alone.finished, 1);
  EXPECT_EQ(alone.jobs[0].replicas, 4);
  auto r = gs::simulate(t, workload({link_job("plain"), elastic}), gs::Policy::kBace, {});
  ASSERT_EQ(r.finished, 2);
  EXPECT_EQ(r.jobs[0].replicas, 1);
  EXPECT_EQ(r.jobs[1].replicas, 2);
  EXPECT_DOUBLE_EQ(r.jobs[1].start_s, 1.0);
  // Its step trains the same tokens either way: fewer replicas, a longer run.
  EXPECT_GT(r.jobs[1].jct_s(), alone.jobs[0].jct_s());
}

TEST(Simulator, ReportsAJobStartedWhereThePlannersMemoryModelSaysItDoesNotFit) {
  // The two-stage job in one region runs plain 1F1B: stage 0 holds 2 micro-batches, stage 1 one.
  auto t = make_topology({{"a", 2, 1.0, 0.1}}, {});
  auto job = link_job("small");
  auto placed = gs::place_job(gs::Policy::kBace, t, job, gs::ClusterState::empty(t), {});
  ASSERT_TRUE(placed.placement);
  ASSERT_EQ(placed.placement->timing.warmup, (std::vector<int>{1, 0}));
  // Stage 0: 14,693,376 parameters x 16 bytes + 2 x 4 x (16 N h + 4 N + b a s^2 + N h) with
  // N = 1,024 tokens, h = 1,024, 8 heads, + 1 GB; stage 1: 13,646,848 x 16 + 4 x (the block +
  // 2 N h + 2 N + N V) + 1 GB.
  EXPECT_EQ(gs::placement_memory_bytes(job, *placed.placement, false),
            (std::vector<double>{235094016 + 2 * 104873984 + 1e9, 218349568 + 113270784 + 1e9}));
  auto small = gs::simulate(t, workload({job}), gs::Policy::kBace, {});
  EXPECT_TRUE(small.jobs[0].memory_fits);
  EXPECT_FALSE(small.jobs[0].needs_recompute);
  EXPECT_EQ(small.over_memory, 0);
  // 12 blocks of width 8,192 on two stages: 6 x 805,412,864 parameters x 16 bytes = 77 GB on a
  // stage, over the 72 GB an 80 GB GPU offers even with recomputation. The simulator runs it
  // and says so.
  auto big = gs::simulate(t, workload({make_job("big", 12, 8192, 1024, 1, 8, 10, 2, 2)}), gs::Policy::kBace, {});
  ASSERT_EQ(big.finished, 1);
  EXPECT_FALSE(big.jobs[0].memory_fits);
  EXPECT_EQ(big.over_memory, 1);
  // 8 such blocks with 4,096-token sequences and 64 heads: 4 x 805M x 16 = 51.5 GB of state, and
  // 2 micro-batches of 4 blocks' attention probabilities (4 x 64 x 4,096^2 x 4 bytes = 17.2 GB
  // each) on stage 0 do not fit; keeping only block inputs does.
  geopipe::JobSpec tall = make_job("tall", 8, 8192, 4096, 1, 8, 10, 2, 2);
  tall.model.heads = 64;
  auto recomputed = gs::simulate(t, workload({tall}), gs::Policy::kBace, {});
  ASSERT_EQ(recomputed.finished, 1);
  EXPECT_TRUE(recomputed.jobs[0].memory_fits);
  EXPECT_TRUE(recomputed.jobs[0].needs_recompute);
  EXPECT_EQ(recomputed.needs_recompute, 1);
}

TEST(Simulator, EnergyAndCostOfAJobAloneMatchItsPlan) {
  auto t = shared_link(10);
  auto job = link_job("x");
  auto placed = gs::place_job(gs::Policy::kDelayFirst, t, job, gs::ClusterState::empty(t), {});
  ASSERT_TRUE(placed.placement);
  auto r = gs::simulate(t, workload({job}), gs::Policy::kDelayFirst, {});
  EXPECT_NEAR(r.jobs[0].jct_s(), placed.placement->job_s, 1e-9 * placed.placement->job_s);
  EXPECT_NEAR(r.energy_kwh, placed.placement->energy_kwh, 1e-9 * r.energy_kwh);
  EXPECT_NEAR(r.cost_usd, placed.placement->cost_usd, 1e-9 * r.cost_usd);
}

TEST(Simulator, EgressOfAJobAloneIsItsWireBytesAtEachDirectionsPrice) {
  // shared_link with a -> b at 0.02 USD/GB and b -> a at 0.05; delay-first runs the job across it.
  nlohmann::json doc = geopipe::to_json(shared_link(10));
  doc["links"][0]["egress_usd_per_gb"] = 0.02;
  nlohmann::json reverse = doc["links"][0];
  std::swap(reverse["a"], reverse["b"]);
  reverse["egress_usd_per_gb"] = 0.05;
  doc["links"].push_back(reverse);
  auto t = geopipe::parse_topology(doc, "priced.json");
  auto job = link_job("x");
  gs::SimOptions uncompressed;  // --codec auto would compress the priced hop (hop_codecs)
  uncompressed.planner.codec = "none";
  auto placed = gs::place_job(gs::Policy::kDelayFirst, t, job, gs::ClusterState::empty(t), uncompressed.planner);
  ASSERT_TRUE(placed.placement);
  ASSERT_EQ(placed.placement->inter_region_hops(), 1);
  // 8 micro-batches x 20 iterations x 2,097,152 bytes (bf16, no codec) x (0.02 + 0.05) / 1e9.
  const double egress = 8 * 20 * 2097152 * 0.07 / 1e9;
  EXPECT_NEAR(placed.placement->egress_usd, egress, 1e-12 * egress);
  auto r = gs::simulate(t, workload({job}), gs::Policy::kDelayFirst, uncompressed);
  EXPECT_NEAR(r.jobs[0].egress_usd, 0.0234881024, 1e-9 * egress);
  EXPECT_NEAR(r.egress_usd, 0.0234881024, 1e-9 * egress);
  EXPECT_NEAR(r.electricity_usd, placed.placement->electricity_usd, 1e-9 * r.electricity_usd);
  EXPECT_NEAR(r.cost_usd, r.electricity_usd + r.egress_usd, 1e-12 * r.cost_usd);
  EXPECT_NEAR(r.cost_usd, placed.placement->cost_usd, 1e-9 * r.cost_usd);
  // The table shows both parts and their total.
  const std::string table = gs::format_scenario("t", {r});
  EXPECT_NE(table.find("elec. (USD) egress (USD)   cost (USD)"), std::string::npos) << table;
  EXPECT_NE(table.find("0.02"), std::string::npos) << table;
  const auto j = gs::to_json(r, true);
  EXPECT_DOUBLE_EQ(j["egress_usd"].get<double>(), r.egress_usd);
  EXPECT_DOUBLE_EQ(j["job_records"][0]["electricity_usd"].get<double>(), r.jobs[0].electricity_usd);
}

TEST(Simulator, BacePutsAShortJobAheadOfALongOneThatArrivedFirst) {
  // One region of 4 GPUs. A long 4-stage job runs; another long 4-stage job and then a short
  // 2-stage job arrive behind it. FIFO runs them in arrival order (head-of-line blocking);
  // BACE starts the short one as soon as GPUs free up.
  auto t = make_topology({{"a", 4, 1.0, 0.1}}, {});
  auto w = workload({make_job("long-1", 8, 512, 512, 1, 8, 400, 4, 4, 0),
                     make_job("long-2", 8, 512, 512, 1, 8, 400, 4, 4, 1),
                     make_job("short", 8, 512, 512, 1, 8, 10, 2, 2, 2)});
  auto fifo = gs::simulate(t, w, gs::Policy::kFifo, {});
  auto bace = gs::simulate(t, w, gs::Policy::kBace, {});
  ASSERT_EQ(fifo.finished, 3);
  ASSERT_EQ(bace.finished, 3);
  EXPECT_DOUBLE_EQ(fifo.jobs[2].start_s, fifo.jobs[1].end_s);
  EXPECT_DOUBLE_EQ(bace.jobs[2].start_s, bace.jobs[0].end_s);
  EXPECT_LT(bace.avg_jct_s, fifo.avg_jct_s);
  // Without prioritization BACE keeps arrival order.
  auto noprio = gs::simulate(t, w, gs::Policy::kBaceNoPriority, {});
  EXPECT_GE(noprio.jobs[2].start_s, noprio.jobs[1].start_s);
}

TEST(Simulator, NeverDropsAJobItCannotPlace) {
  auto t = make_topology({{"a", 2, 1.0, 0.1}}, {});
  auto w = workload({make_job("too-big", 8, 512, 512, 1, 8, 10, 3, 3, 0), make_job("fits", 8, 512, 512, 1, 8, 10, 2, 2, 1)});
  for (auto p : {gs::Policy::kBace, gs::Policy::kFifo, gs::Policy::kDelayFirst, gs::Policy::kCostFirst}) {
    auto r = gs::simulate(t, w, p, {});
    EXPECT_EQ(r.finished, 1) << gs::policy_name(p);
    EXPECT_EQ(r.never_started, 1) << gs::policy_name(p);
    EXPECT_LT(r.jobs[0].start_s, 0);
    EXPECT_NE(r.jobs[0].waiting_reason.find("too few GPUs"), std::string::npos) << r.jobs[0].waiting_reason;
    EXPECT_GE(r.jobs[1].end_s, 0);
  }
}

TEST(Simulator, ExactIsNotAQueuePolicy) {
  auto t = make_topology({{"a", 2, 1.0, 0.1}}, {});
  EXPECT_THROW(gs::simulate(t, workload({}), gs::Policy::kExact, {}), geopipe::InputError);
}

TEST(Workload, GeneratedWorkloadIsDeterministicForASeed) {
  auto t = geopipe::load_topology(std::string(GEOPIPE_SOURCE_DIR) + "/examples/topologies/aws6.json");
  auto a = gs::generate_workload(t, {60, 0.8, 3});
  auto b = gs::generate_workload(t, {60, 0.8, 3});
  auto c = gs::generate_workload(t, {60, 0.8, 4});
  ASSERT_EQ(a.jobs.size(), 60u);
  bool differs = false;
  for (size_t i = 0; i < a.jobs.size(); ++i) {
    EXPECT_EQ(a.jobs[i].name, b.jobs[i].name);
    EXPECT_EQ(a.jobs[i].arrival_s, b.jobs[i].arrival_s);
    EXPECT_EQ(a.jobs[i].iterations, b.jobs[i].iterations);
    EXPECT_GE(a.jobs[i].min_stages, 4);
    EXPECT_LE(a.jobs[i].max_stages, 16);
    if (i) {
      EXPECT_GE(a.jobs[i].arrival_s, a.jobs[i - 1].arrival_s);
    }
    differs |= a.jobs[i].arrival_s != c.jobs[i].arrival_s;
  }
  EXPECT_TRUE(differs);
  auto r1 = gs::simulate(t, a, gs::Policy::kBace, {});
  auto r2 = gs::simulate(t, b, gs::Policy::kBace, {});
  EXPECT_EQ(r1.avg_jct_s, r2.avg_jct_s);
  EXPECT_EQ(r1.cost_usd, r2.cost_usd);
  EXPECT_EQ(r1.finished, 60);
}

TEST(Rng, UniformAndExponentialHaveTheRightMeans) {
  gs::Rng rng(1);
  double su = 0, se = 0;
  const int n = 200000;
  for (int i = 0; i < n; ++i) su += rng.uniform(), se += rng.exponential(3.0);
  EXPECT_NEAR(su / n, 0.5, 0.01);
  EXPECT_NEAR(se / n, 3.0, 0.05);
}

TEST(Simulator, AgingReservesGpusForAJobThatWouldOtherwiseStarve) {
  // 4 GPUs; a stream of short 2-stage jobs keeps two of them busy at all times, and a 4-stage
  // job arrives early. Skipping it forever would starve it; once its response ratio reaches the
  // reserve ratio nothing else starts until it runs.
  auto t = make_topology({{"a", 4, 1.0, 0.1}}, {});
  std::vector<geopipe::JobSpec> jobs;
  for (int i = 0; i < 100; ++i) jobs.push_back(make_job("small-" + std::to_string(i), 8, 512, 512, 1, 8, 10, 2, 2, 5.0 * i));
  jobs.push_back(make_job("big", 8, 512, 512, 1, 8, 32, 4, 4, 1.0));
  std::stable_sort(jobs.begin(), jobs.end(), [](const auto& a, const auto& b) { return a.arrival_s < b.arrival_s; });
  auto w = workload(jobs);
  const size_t big = 1;
  ASSERT_EQ(w.jobs[big].name, "big");
  auto reserving = gs::simulate(t, w, gs::Policy::kBace, {});
  gs::SimOptions never;
  never.reserve_ratio = 1e9;
  auto starving = gs::simulate(t, w, gs::Policy::kBace, never);
  ASSERT_EQ(reserving.finished, 101);
  ASSERT_EQ(starving.finished, 101);
  const double last_arrival = w.jobs.back().arrival_s;
  EXPECT_LT(reserving.jobs[big].start_s, 0.5 * last_arrival) << reserving.jobs[big].start_s;
  EXPECT_GT(starving.jobs[big].start_s, last_arrival) << starving.jobs[big].start_s;
}

TEST(Simulator, CostFirstWaitsForItsCheapestPlacementWhileOthersUseFreeGpus) {
  auto t = make_topology({{"dear", 2, 1.0, 0.30}, {"cheap", 2, 1.0, 0.05}}, {{"dear", "cheap", 0.01, 50}});
  auto w = workload({make_job("first", 8, 512, 512, 1, 8, 20, 2, 2, 0), make_job("second", 8, 512, 512, 1, 8, 20, 2, 2, 1)});
  auto cf = gs::simulate(t, w, gs::Policy::kCostFirst, {});
  EXPECT_EQ(cf.jobs[0].regions, "cheap x2");
  EXPECT_EQ(cf.jobs[1].regions, "cheap x2");
  EXPECT_DOUBLE_EQ(cf.jobs[1].start_s, cf.jobs[0].end_s);
  auto bace = gs::simulate(t, w, gs::Policy::kBace, {});
  EXPECT_EQ(bace.jobs[0].regions, "cheap x2");
  EXPECT_EQ(bace.jobs[1].regions, "dear x2");
  EXPECT_DOUBLE_EQ(bace.jobs[1].start_s, 1.0);
  EXPECT_LT(bace.avg_jct_s, cf.avg_jct_s);
  EXPECT_GT(bace.cost_usd, cf.cost_usd);  // the price of not waiting
}

namespace {
// Two 2-GPU regions, one six times the other's electricity price, joined by a thin link.
geopipe::Topology dear_and_cheap() {
  return make_topology({{"dear", 2, 1.0, 0.30}, {"cheap", 2, 1.0, 0.05}}, {{"dear", "cheap", 0.01, 50}});
}
// A job's completion time when it runs alone under BACE.
double alone_jct(const geopipe::Topology& t, const geopipe::JobSpec& job) {
  return gs::simulate(t, workload({job}), gs::Policy::kBace, {}).jobs[0].jct_s();
}
}  // namespace

TEST(Simulator, BaceWaitsForACheaperPlacementOnlyWithinTheMaxSlowdown) {
  // "first" holds the cheap region; "second" (the same job) arrives when 90 % of it is done. It can
  // start at once in the dear region, or wait 0.1 E for the cheap one and end at 1.1 E after its
  // arrival: within a max_slowdown of 0.5, not of 0 or 0.05.
  const auto t = dear_and_cheap();
  const double E = alone_jct(t, make_job("first", 8, 512, 512, 1, 8, 20, 2, 2, 0));
  auto w = workload({make_job("first", 8, 512, 512, 1, 8, 20, 2, 2, 0),
                     make_job("second", 8, 512, 512, 1, 8, 20, 2, 2, 0.9 * E)});
  auto with = [&](double x) {
    gs::SimOptions o;
    o.planner.max_slowdown = x;
    return gs::simulate(t, w, gs::Policy::kBace, o);
  };
  const auto waits = with(0.5);
  EXPECT_EQ(waits.jobs[0].regions, "cheap x2");
  EXPECT_EQ(waits.jobs[1].regions, "cheap x2");
  EXPECT_NEAR(waits.jobs[1].start_s, E, 1e-9 * E);
  EXPECT_NEAR(waits.jobs[1].jct_s(), 1.1 * E, 1e-6 * E);
  for (double x : {0.0, 0.05}) {
    const auto now = with(x);
    EXPECT_EQ(now.jobs[1].regions, "dear x2") << x;
    EXPECT_DOUBLE_EQ(now.jobs[1].start_s, 0.9 * E) << x;
    EXPECT_GT(now.cost_usd, waits.cost_usd) << x;  // what waiting saved
    EXPECT_LT(now.avg_jct_s, waits.avg_jct_s) << x;
  }
}

TEST(Pareto, MarksThePointsNoOtherBeatsOnBothJctAndCost) {
  auto point = [](double x, const char* policy, double jct_h, double cost) {
    gs::ParetoPoint p;
    p.max_slowdown = x;
    p.result.policy = policy;
    p.result.avg_jct_s = jct_h * 3600;
    p.result.cost_usd = cost;
    return p;
  };
  std::vector<gs::ParetoPoint> points = {point(0, "bace", 1.0, 100), point(0.5, "bace", 1.2, 100),
                                         point(1, "bace", 1.5, 80), point(-1, "cost-first", 20, 70),
                                         point(-1, "fifo", 3, 1000)};
  gs::mark_frontier(points);
  EXPECT_EQ(points[0].dominated_by, "");
  EXPECT_EQ(points[1].dominated_by, "bace x=0");
  EXPECT_EQ(points[2].dominated_by, "");
  EXPECT_EQ(points[3].dominated_by, "");
  EXPECT_EQ(points[4].dominated_by, "bace x=0");
  EXPECT_EQ(points[2].label(), "bace x=1");
  EXPECT_EQ(points[3].label(), "cost-first");
  EXPECT_EQ(gs::pareto_slowdowns(), (std::vector<double>{0, 0.05, 0.1, 0.25, 0.5, 1, 2}));
}

TEST(Simulator, AJobWhoseCheaperPlacementGoesToAnotherStartsOnWhatIsFreeWithinItsBound) {
  // "first" holds the cheap region until E. "second" (E long) arrives at 0.9 E and "short"
  // (0.6 E) at 0.92 E; at max_slowdown 0.5 both wait for the cheap region. When it frees, "short"
  // has the higher response ratio and takes it; waiting for it again would end "second" at 2.6 E,
  // past its bound of 2.5 E, so "second" starts at once in the dear region.
  const auto t = dear_and_cheap();
  const double E = alone_jct(t, make_job("first", 8, 512, 512, 1, 8, 20, 2, 2, 0));
  auto w = workload({make_job("first", 8, 512, 512, 1, 8, 20, 2, 2, 0),
                     make_job("second", 8, 512, 512, 1, 8, 20, 2, 2, 0.9 * E),
                     make_job("short", 8, 512, 512, 1, 8, 12, 2, 2, 0.92 * E)});
  gs::SimOptions o;
  o.planner.max_slowdown = 0.5;
  const auto r = gs::simulate(t, w, gs::Policy::kBace, o);
  ASSERT_EQ(r.finished, 3);
  EXPECT_EQ(r.jobs[2].regions, "cheap x2");
  EXPECT_NEAR(r.jobs[2].start_s, E, 1e-9 * E);
  EXPECT_EQ(r.jobs[1].regions, "dear x2");
  EXPECT_NEAR(r.jobs[1].start_s, E, 1e-9 * E);
  EXPECT_LE(r.jobs[1].jct_s(), 1.5 * E);
}
