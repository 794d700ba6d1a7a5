// time_schedule(): the replay of concrete action lists on hand-computed cases, and the planner's
// schedule options built on it.
#include <geopipe/core/error.h>
#include <geopipe/core/schedule.h>
#include <geopipe/scheduler/planner.h>
#include <geopipe/scheduler/schedule_model.h>

#include "test_util.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>

namespace gs = geopipe::scheduler;
using geopipe::Schedule;
using gs::testing::make_job;
using gs::testing::make_topology;

namespace {

std::vector<gs::ChunkCost> uniform(int n, double f, double b) { return std::vector<gs::ChunkCost>(n, {f, b, b / 2, b / 2}); }
std::vector<gs::BoundaryCost> links(int n, double xfer, double latency) {
  return std::vector<gs::BoundaryCost>(n > 0 ? n - 1 : 0, {xfer, xfer, latency});
}
Schedule lowered(const std::string& kind, int R, int M, int V = 1) {
  return geopipe::lower(geopipe::schedule_for(kind, R, M, V, {}));
}

}  // namespace

TEST(ScheduleModel, FreeLinksGiveTheTextbookPipelineTimes) {
  // F = 1, B = 2 on 4 stages, 8 micro-batches: 1F1B and GPipe both take (M + S - 1)(F + B) = 33.
  for (const char* kind : {"1f1b", "gpipe"}) {
    gs::ScheduleTiming t = gs::time_schedule(lowered(kind, 4, 8), uniform(4, 1, 2), links(4, 0, 0));
    EXPECT_DOUBLE_EQ(t.iteration_s, 33.0) << kind;
    EXPECT_EQ(t.rank_compute_s, std::vector<double>(4, 24.0)) << kind;
  }
  EXPECT_EQ(gs::time_schedule(lowered("1f1b", 4, 8), uniform(4, 1, 2), links(4, 0, 0)).peak_activations,
            (std::vector<int>{4, 3, 2, 1}));
}

TEST(ScheduleModel, OneMicroBatchPaysEveryTransferAndLatencyBothWays) {
  // F0 + (x + lat) + F1 + B1 + (x + lat) + B0 = 1 + 0.75 + 1 + 2 + 0.75 + 2.
  gs::ScheduleTiming t = gs::time_schedule(lowered("1f1b", 2, 1), uniform(2, 1, 2), links(2, 0.25, 0.5));
  EXPECT_DOUBLE_EQ(t.iteration_s, 7.5);
  EXPECT_DOUBLE_EQ(t.rank_end_s[1], 4.75);  // rank 1 ends after its backward
}

TEST(ScheduleModel, ALinkCarriesOneMessageAtATime) {
  // GPipe, 2 stages, 3 micro-batches, F = 1, B = 0 (to isolate the link), transfer 2, no latency:
  // the activations leave at 1, 2, 3 but the link delivers them at 3, 5, 7; rank 1 ends at 8.
  std::vector<gs::ChunkCost> c = {{1, 0, 0, 0}, {1, 0, 0, 0}};
  std::vector<gs::BoundaryCost> l = {{2, 0, 0}};
  EXPECT_DOUBLE_EQ(gs::time_schedule(lowered("gpipe", 2, 3), c, l).rank_end_s[1], 8.0);
}

TEST(ScheduleModel, SharedComputeSlotsSerializeTheRanks) {
  // Two ranks on one slot: nothing overlaps, the iteration is all the compute, 2 * M * (F + B).
  gs::ScheduleTiming t = gs::time_schedule(lowered("1f1b", 2, 4), uniform(2, 1, 2), links(2, 0, 0), 1);
  EXPECT_DOUBLE_EQ(t.iteration_s, 24.0);
  // Two slots for two ranks: no sharing, as without slots.
  EXPECT_DOUBLE_EQ(gs::time_schedule(lowered("1f1b", 2, 4), uniform(2, 1, 2), links(2, 0, 0), 2).iteration_s,
                   gs::time_schedule(lowered("1f1b", 2, 4), uniform(2, 1, 2), links(2, 0, 0)).iteration_s);
}

TEST(ScheduleModel, ZeroBubbleTakesTheWeightGradientOffTheRoundTrip) {
  // 2 stages, latency 3 (as long as a forward): 1F1B stalls on the round trip, ZB-H1 sends the
  // input gradient before the weight gradient and stalls less, with 1F1B's peak activations.
  const auto c = uniform(2, 3, 6);
  const auto l = links(2, 0, 3);
  gs::ScheduleTiming one = gs::time_schedule(lowered("1f1b", 2, 8), c, l);
  gs::ScheduleTiming zb = gs::time_schedule(lowered("zb-h1", 2, 8), c, l);
  EXPECT_LT(zb.iteration_s, 0.95 * one.iteration_s);
  EXPECT_EQ(zb.peak_activations, one.peak_activations);
  EXPECT_EQ(zb.rank_compute_s, one.rank_compute_s);  // the same work, I + W = B
}

TEST(ScheduleModel, ADeadlockedScheduleIsRefusedNamingEachRank) {
  // Rank 0 runs its backward before sending the forward the backward depends on.
  Schedule s = geopipe::parse_schedule(
      "0RECV_B0 0F0 0B0 0SEND_F0 0OPT\n1RECV_F0 1F0 1B0 1SEND_B0 1OPT\n", "deadlock.txt");
  std::swap(s.ranks[0][1], s.ranks[0][2]);  // 0B0 before 0F0 is still a list; its input never comes
  try {
    gs::time_schedule(s, uniform(2, 1, 2), links(2, 0, 0));
    FAIL() << "expected InputError";
  } catch (const geopipe::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("deadlocks"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("rank 1 at 1F0"), std::string::npos) << e.what();
  }
}

// ---- Schedule options on a placement --------------------------------------------------------

namespace {

geopipe::Topology two_regions(double latency_ms, double mem_gb = 80) {
  auto t = make_topology({{"a", 1, 1.0, 0.1}, {"b", 1, 1.0, 0.1}}, {{"a", "b", 100, latency_ms}});
  for (auto& r : t.regions) r.gpu_mem_gb = mem_gb;
  return t;
}

}  // namespace

TEST(ScheduleOptions, ZbvSplitsTheLayersIntoAVOfChunks) {
  auto t = two_regions(10);
  auto job = make_job("j", 8, 256, 256, 1, 8, 10, 2, 2);
  gs::PlannerOptions o;
  o.schedule = "zbv";
  geopipe::Plan p = gs::plan_job(gs::Policy::kBace, t, job, o);
  EXPECT_EQ(p.schedule.kind, "zbv");
  EXPECT_EQ(p.schedule.virtual_stages, 2);
  ASSERT_EQ(p.num_stages(), 4);
  std::vector<int> ranks, layers;
  for (const auto& s : p.stages) ranks.push_back(s.ranks[0]), layers.push_back(s.layer_end - s.layer_begin);
  EXPECT_EQ(ranks, (std::vector<int>{0, 1, 1, 0}));
  EXPECT_EQ(std::accumulate(layers.begin(), layers.end(), 0), 8);
  ASSERT_EQ(p.links.size(), 3u);
  EXPECT_EQ(p.links[1].from_region, p.links[1].to_region);  // chunks 1 and 2: one rank, no WAN
  EXPECT_EQ(p.predicted.link_utilisation[1], 0.0);
  EXPECT_EQ(p.predicted.peak_activations.size(), 2u);
  EXPECT_NO_THROW(geopipe::check_plan_against(geopipe::parse_plan(geopipe::to_json(p), "zbv.json"), t, "zbv.json", 2));
}

TEST(ScheduleOptions, InterleavedTakesTheRequestedChunkCountAndNeedsWholeGroups) {
  auto t = two_regions(10);
  auto job = make_job("j", 6, 256, 256, 1, 8, 10, 2, 2);
  gs::PlannerOptions o;
  o.schedule = "interleaved";
  o.virtual_stages = 3;
  geopipe::Plan p = gs::plan_job(gs::Policy::kBace, t, job, o);
  EXPECT_EQ(p.num_stages(), 6);
  EXPECT_EQ(p.stages[5].ranks[0], 1);  // looped: chunk 5 on rank 5 % 2
  auto odd = make_job("j", 6, 256, 256, 1, 7, 10, 2, 2);  // 7 micro-batches on 2 ranks
  try {
    gs::plan_job(gs::Policy::kBace, t, odd, o);
    FAIL() << "expected InfeasibleError";
  } catch (const geopipe::InfeasibleError& e) {
    EXPECT_NE(std::string(e.what()).find("interleaved"), std::string::npos) << e.what();
  }
}

TEST(ScheduleOptions, AutoTakesTheFastestOptionThatFits) {
  auto t = two_regions(40);
  auto job = make_job("j", 8, 256, 256, 1, 8, 10, 2, 2);
  std::vector<gs::ScheduleOption> all;
  geopipe::Plan p = gs::plan_job(gs::Policy::kBace, t, job, {}, &all);
  ASSERT_EQ(all.size(), geopipe::known_schedule_kinds().size());
  double fastest = 1e300;
  for (const auto& o : all)
    if (o.fits()) fastest = std::min(fastest, o.timing.iteration_s);
  EXPECT_DOUBLE_EQ(p.predicted.iteration_s, fastest);
  // GPU memory just above what 1F1B needs: GPipe (8 micro-batches in flight) no longer fits, and
  // the plan is the fastest of what does, within the limit.
  auto one = std::find_if(all.begin(), all.end(), [](const gs::ScheduleOption& o) { return o.kind == "1f1b"; });
  ASSERT_NE(one, all.end());
  const double limit = 1.01 * one->peak_memory_bytes();
  std::vector<gs::ScheduleOption> fitting;
  geopipe::Plan q =
      gs::plan_job(gs::Policy::kBace, two_regions(40, limit / gs::kMemorySafetyFactor / 1e9), job, {}, &fitting);
  EXPECT_NE(q.schedule.kind, "gpipe");
  for (double m : q.predicted.memory_bytes) EXPECT_LE(m, limit);
  for (const auto& o : fitting)
    if (o.fits()) {
      EXPECT_GE(o.timing.iteration_s, q.predicted.iteration_s) << o.kind;
    }
  EXPECT_FALSE(std::find_if(fitting.begin(), fitting.end(), [](const gs::ScheduleOption& o) {
                 return o.kind == "gpipe";
               })->fits());
}

TEST(ScheduleOptions, ARequestedScheduleThatDoesNotFitNamesTheStageAndTheBytes) {
  auto t = two_regions(10, 0.001);  // 1 MB GPUs: 900,000 bytes usable
  auto job = make_job("j", 8, 256, 256, 1, 8, 10, 2, 2);
  gs::PlannerOptions o;
  o.schedule = "gpipe";
  try {
    gs::plan_job(gs::Policy::kBace, t, job, o);
    FAIL() << "expected InfeasibleError";
  } catch (const geopipe::InfeasibleError& e) {
    // Recomputation was tried last (the stage count is fixed): its refusal is the one reported.
    const std::string w = e.what();
    EXPECT_NE(w.find("gpipe: stage 0 needs "), std::string::npos) << w;
    EXPECT_NE(w.find("8 micro-batches in flight with recomputation"), std::string::npos) << w;
    EXPECT_NE(w.find("framework 1.00 GB), its GPU offers 900000 bytes (0.00 GB, gpu_mem_gb x 0.9)"), std::string::npos)
        << w;
  }
}

// Hand-computed: 4 blocks, h = s = 256, 8 heads, V = 1024, bf16, micro-batch 1 (N = 256 tokens),
// M = 4, 1F1B on two H100 regions joined by MPI, no codec.
TEST(ScheduleOptions, MemoryOfEachRankAddsUpItsParts) {
  auto t = two_regions(10);
  auto job = make_job("j", 4, 256, 256, 1, 4, 10, 2, 2);
  gs::PlannerOptions o;
  o.schedule = "1f1b";
  o.codec = "none";
  std::vector<gs::ScheduleOption> all;
  geopipe::Plan p = gs::plan_job(gs::Policy::kBace, t, job, o, &all);
  ASSERT_EQ(all.size(), 1u);
  const gs::ScheduleOption& one = all[0];
  ASSERT_EQ(one.chunk_layers, (std::vector<int>{2, 2}));
  // Parameters: stage 0 two blocks (12 h^2 + 13 h each) and the embedding (V + s) h = 1,907,200;
  // stage 1 two blocks and the head 2h + V h = 1,842,176. bf16: 2 + 2 bytes, master + moments 12.
  EXPECT_DOUBLE_EQ(one.memory[0].weights, 2.0 * 1907200);
  EXPECT_DOUBLE_EQ(one.memory[0].gradients, 2.0 * 1907200);
  EXPECT_DOUBLE_EQ(one.memory[0].optimizer, 12.0 * 1907200);
  EXPECT_DOUBLE_EQ(one.memory[1].optimizer, 12.0 * 1842176);
  // A block keeps 16 N h + 4 N + b a s^2 = 1,573,888 floats; stage 0 adds its output N h, stage 1
  // the head's 2 N h + 2 N + N V. 1F1B holds 2 micro-batches on rank 0 and 1 on rank 1.
  EXPECT_EQ(one.timing.peak_activations, (std::vector<int>{2, 1}));
  EXPECT_DOUBLE_EQ(one.memory[0].activations, 2 * 4.0 * (2 * 1573888 + 65536));   // 25,706,496
  EXPECT_DOUBLE_EQ(one.memory[1].activations, 4.0 * (2 * 1573888 + 393728));      // 14,166,016
  // Between regions the link is MPI: a GPU rank keeps its 4 plain sends (N h bf16 = 131,072 bytes
  // each) on the device until the step ends and receives into host memory.
  EXPECT_DOUBLE_EQ(one.memory[0].buffers, 4 * 131072.0);
  EXPECT_DOUBLE_EQ(one.memory[1].buffers, 4 * 131072.0);
  EXPECT_DOUBLE_EQ(one.memory[0].framework, 1e9);
  EXPECT_DOUBLE_EQ(one.memory[0].total(), 1056745984.0);
  EXPECT_DOUBLE_EQ(one.memory[1].total(), 1044165120.0);
  EXPECT_EQ(one.memory_limit_bytes, (std::vector<double>{72e9, 72e9}));
  EXPECT_EQ(p.predicted.memory_bytes, (std::vector<double>{1056745984.0, 1044165120.0}));
  // The same buffers from the plan alone (what a run's tensor accounting leaves out).
  EXPECT_DOUBLE_EQ(gs::plan_buffer_bytes(p, t, 0), 4 * 131072.0);
  EXPECT_DOUBLE_EQ(gs::plan_buffer_bytes(p, t, 1), 4 * 131072.0);
  EXPECT_FALSE(p.schedule.recompute);
}

TEST(ScheduleOptions, ZeroOneAndRecomputationShrinkTheirTerms) {
  auto job = make_job("j", 4, 256, 256, 1, 4, 10, 2, 2);
  gs::PlannerOptions o;
  o.schedule = "1f1b";
  o.codec = "none";
  o.recompute = "full";
  std::vector<gs::ScheduleOption> all;
  gs::plan_job(gs::Policy::kBace, two_regions(10), job, o, &all);
  // Two block inputs N h per micro-batch (the output is sent, not kept) x 2 in flight, plus one
  // block's full activations while the backward recomputes it.
  EXPECT_DOUBLE_EQ(all[0].memory[0].activations, 2 * 4.0 * 2 * 65536 + 4.0 * 1573888);
  // The last stage keeps the head's input too; the head (393,728 floats) is smaller than a block.
  EXPECT_DOUBLE_EQ(all[0].memory[1].activations, 4.0 * 3 * 65536 + 4.0 * 1573888);
  // ZeRO-1 over 2 replicas: each holds half of the moments (4 of their 8 bytes a parameter).
  auto t = make_topology({{"a", 2, 1.0, 0.1}, {"b", 2, 1.0, 0.1}}, {{"a", "b", 100, 10}});
  job.replicas = 2;
  o.recompute = "none";
  o.shard_optimizer = true;
  gs::plan_job(gs::Policy::kBace, t, job, o, &all);
  EXPECT_DOUBLE_EQ(all[0].memory[0].optimizer, (4.0 + 4.0) * 1907200);
}

// A hop's per-micro-batch figures for hop_codecs: plain transfer, compute period, codec work.
gs::HopCodecInputs hop(double plain_s, double period_s, double codec_s = 0) {
  gs::HopCodecInputs h;
  h.plain_xfer_s = plain_s;
  h.compute_period_s = period_s;
  h.codec_s = codec_s;
  return h;
}

TEST(ScheduleOptions, HopCodecsCompressAHopSlowerThanTheCompute) {
  using Pair = std::pair<std::string, std::string>;
  EXPECT_EQ(gs::hop_codecs("auto", hop(0.5, 1.0)), (Pair{"none", "none"}));
  EXPECT_EQ(gs::hop_codecs("auto", hop(2.0, 1.0)), (Pair{"int8-block", "int8-block"}));
  // The bandwidth check asks for it even when the codec's work is large: the stages pay it.
  EXPECT_EQ(gs::hop_codecs("auto", hop(1.2, 1.0, 0.5)), (Pair{"int8-block", "int8-block"}));
  // A hop that keeps up is not compressed to shorten the fill, however cheap the codec.
  EXPECT_EQ(gs::hop_codecs("auto", hop(0.99, 1.0, 1e-6)), (Pair{"none", "none"}));
  EXPECT_EQ(gs::hop_codecs("adaptive", hop(2.0, 1.0)), (Pair{"int8-block", "int8-block"}));
  EXPECT_EQ(gs::hop_codecs("int4-block", hop(0.1, 1.0)), (Pair{"int4-block", "int8-block"}));  // int4: activations only
  EXPECT_EQ(gs::hop_codecs("fp8-e4m3-block", hop(0.1, 1.0)), (Pair{"fp8-e4m3-block", "fp8-e4m3-block"}));
  EXPECT_EQ(gs::hop_codecs("none", hop(2.0, 1.0)), (Pair{"none", "none"}));
}

TEST(ScheduleOptions, AutoCompressesAFastHopWhenTheEgressSavedPaysForTheCodec) {
  using Pair = std::pair<std::string, std::string>;
  gs::HopCodecInputs h = hop(0.5, 1.0, 0.05);  // fits uncompressed; the codec makes the period 5 % longer
  h.egress_saved_usd = 1e-3;
  h.codec_usd = 1e-6;
  h.max_slowdown = 0.10;
  EXPECT_EQ(gs::hop_codecs("auto", h), (Pair{"int8-block", "int8-block"}));
  EXPECT_EQ(gs::hop_codecs("adaptive", h), (Pair{"none", "none"}));  // the runtime adapts to time, not money
  h.weigh_price = false;  // delay-first, bace-no-price and BACE's fastest-path pass
  EXPECT_EQ(gs::hop_codecs("auto", h), (Pair{"none", "none"}));
  h.weigh_price = true;
  h.max_slowdown = 0.04;  // 1.05 s > 1.0 s x 1.04
  EXPECT_EQ(gs::hop_codecs("auto", h), (Pair{"none", "none"}));
  h.max_slowdown = 0.10;
  h.codec_usd = 2e-3;  // the codec's electricity costs more than the egress it saves
  EXPECT_EQ(gs::hop_codecs("auto", h), (Pair{"none", "none"}));
}

TEST(ScheduleOptions, CodecInputsOfAHopComeFromItsLinksRegionsAndTheCodecsSpeed) {
  // bf16, 1 x 256 x 256: a message is 131,072 B plain, 65,536 B as int8-block; CPU regions use the
  // CPU twins' measured int8-block speed (19.20 / 21.03 GB/s read + written).
  auto t = make_topology({{"a", 2, 1.0, 0.1, "cpu"}, {"b", 2, 1.0, 0.2, "cpu"}},
                         {{"a", "b", 8, 10, 0.02}, {"b", "a", 8, 10, 0.09}});
  auto job = make_job("j", 4, 256, 256, 1, 8, 10, 2, 2);
  gs::PlannerOptions o;
  o.max_slowdown = 0.25;
  const gs::HopCodecInputs h = gs::hop_codec_inputs(t, job, o, 0, 1, 1e9, 0.5e9, 0.01);
  EXPECT_DOUBLE_EQ(h.plain_xfer_s, 131072 / 0.5e9);
  EXPECT_DOUBLE_EQ(h.compute_period_s, 0.01);
  const double encode = 196608 / 19.20e9, decode = 196608 / 21.03e9;
  EXPECT_DOUBLE_EQ(h.codec_s, encode + decode);  // each end encodes one direction and decodes the other
  EXPECT_NEAR(h.egress_saved_usd, 65536 * (0.02 + 0.09) / 1e9, 1e-18);
  const double usd_per_s_a = 700 * 1.2 * 0.1 / 3.6e6, usd_per_s_b = 700 * 1.2 * 0.2 / 3.6e6;
  EXPECT_NEAR(h.codec_usd, (encode + decode) * (usd_per_s_a + usd_per_s_b), 1e-18);
  EXPECT_DOUBLE_EQ(h.max_slowdown, 0.25);
  EXPECT_TRUE(h.weigh_price);
  o.price_term = false;
  EXPECT_FALSE(gs::hop_codec_inputs(t, job, o, 0, 1, 1e9, 0.5e9, 0.01).weigh_price);
}

TEST(ScheduleOptions, AutoCompressesAPricedHopAndItsStagesCarryTheCodecWork) {
  // Two one-GPU regions: the job must cross; the link is fast enough without a codec.
  auto t = make_topology({{"a", 1, 100.0, 0.1}, {"b", 1, 100.0, 0.1}}, {{"a", "b", 100, 10}});
  const auto priced_topology = make_topology({{"a", 1, 100.0, 0.1}, {"b", 1, 100.0, 0.1}}, {{"a", "b", 100, 10, 0.02}});
  auto job = make_job("j", 4, 1024, 1024, 1, 8, 10, 2, 2);
  gs::PlannerOptions o;
  o.schedule = "1f1b";
  const auto free_plan = gs::evaluate_path(t, job, {0, 1}, gs::ClusterState::empty(t), o);
  ASSERT_TRUE(free_plan);
  EXPECT_EQ(free_plan->codec_fwd[0], "none");  // egress costs nothing: no reason to compress
  const auto priced = gs::evaluate_path(priced_topology, job, {0, 1}, gs::ClusterState::empty(priced_topology), o);
  ASSERT_TRUE(priced);
  EXPECT_EQ(priced->codec_fwd[0], "int8-block");
  EXPECT_EQ(priced->codec_bwd[0], "int8-block");
  // Each stage encodes one direction and decodes the other on its GPU (assumed 1 TB/s):
  // 1024 x 1024 bf16 = 2 MiB plain + 1 MiB packed moved per message.
  const double codec_s = 2 * (3 * 1048576 / gs::kAssumedGpuCodecBps);
  EXPECT_NEAR(priced->stage_s[0] - free_plan->stage_s[0], codec_s, 1e-15);
  EXPECT_NEAR(priced->stage_s[1] - free_plan->stage_s[1], codec_s, 1e-15);
  // Both directions of 8 micro-batches x 10 iterations at 1 MiB (not 2) x 0.02 USD/GB.
  EXPECT_NEAR(priced->egress_usd, 2 * 80 * 1048576 * 0.02 / 1e9, 1e-15);
  // The replayed schedule (what the plan records) carries the same work.
  geopipe::Plan p = gs::plan_job(gs::Policy::kBace, priced_topology, job, o);
  EXPECT_EQ(p.links[0].codec_forward, "int8-block");
  EXPECT_EQ(gs::plan_job(gs::Policy::kBace, t, job, o).links[0].codec_forward, "none");
  // Policies that ignore price choose codecs for time alone, whatever --max-slowdown says.
  for (double x : {0.0, 0.1, 2.0}) {
    o.max_slowdown = x;
    EXPECT_EQ(gs::plan_job(gs::Policy::kDelayFirst, priced_topology, job, o).links[0].codec_forward, "none") << x;
    EXPECT_EQ(gs::plan_job(gs::Policy::kBaceNoPrice, priced_topology, job, o).links[0].codec_forward, "none") << x;
  }
  o.max_slowdown = 0;  // no slowdown allowed: the codec's (small) work is not free
  EXPECT_EQ(gs::plan_job(gs::Policy::kBace, priced_topology, job, o).links[0].codec_forward, "none");
  o.codec = "none";
  EXPECT_EQ(gs::plan_job(gs::Policy::kBace, priced_topology, job, o).links[0].codec_forward, "none");
}

TEST(ScheduleOptions, AdaptiveCodecsMarkOnlyTheLinksBetweenRegions) {
  // Region a has two GPUs: stages 0 and 1 share it, stage 2 is in b.
  auto t = make_topology({{"a", 2, 1.0, 0.1}, {"b", 1, 1.0, 0.1}}, {{"a", "b", 100, 10}});
  auto job = make_job("j", 6, 256, 256, 1, 8, 10, 3, 3);
  gs::PlannerOptions o;
  o.codec = "adaptive";
  o.schedule = "1f1b";
  geopipe::Plan p = gs::plan_job(gs::Policy::kBace, t, job, o);
  ASSERT_EQ(p.links.size(), 2u);
  for (const auto& l : p.links) {
    EXPECT_EQ(l.adaptive, l.from_region != l.to_region) << l.from_stage << "->" << l.to_stage;
    EXPECT_EQ(l.codec_forward, "none");  // a fast link: starts where auto would, uncompressed
  }
  EXPECT_TRUE(p.links[0].adaptive || p.links[1].adaptive);
}
