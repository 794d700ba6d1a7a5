// The cost model's formulas on hand-computed cases.
#include <geopipe/scheduler/cost_model.h>

#include "test_util.h"

#include <geopipe/scheduler/simulator.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <functional>

namespace gs = geopipe::scheduler;
using geopipe::ModelSpec;
using geopipe::Region;

namespace {
ModelSpec tiny() { return {4, 128, 4, 64, 256, geopipe::DType::kFloat32}; }
// Device times from totals per micro-batch (forward + backward) of a block, the embedding, the head.
gs::DeviceTimes times(double layer, double embedding, double head) {
  gs::DeviceTimes d;
  d.layer.forward_s = layer;
  d.embedding.forward_s = embedding;
  d.head.forward_s = head;
  return d;
}
}  // namespace

TEST(CostModel, LayerFlopsCountMatmulsAndAttention) {
  // 8 * 64 * (24 * 128^2 + 4 * 64 * 128) = 512 * 425984
  gs::Flops f = gs::layer_flops(tiny(), 8);
  EXPECT_DOUBLE_EQ(f.forward, 218103808.0);
  EXPECT_DOUBLE_EQ(f.backward, 2 * 218103808.0);
}

TEST(CostModel, HeadFlopsCountProjectionAndSoftmax) {
  gs::Flops f = gs::head_flops(tiny(), 8);
  EXPECT_DOUBLE_EQ(f.forward, 2.0 * 512 * 128 * 256 + 5.0 * 512 * 256);
  EXPECT_DOUBLE_EQ(f.backward, 4.0 * 512 * 128 * 256);
}

TEST(CostModel, DeviceTimeIsFlopsOverEfficientThroughput) {
  Region r;
  r.gpu_tflops = 1.0;
  geopipe::JobSpec job;
  job.model = tiny();
  job.micro_batch = 8;
  gs::CostParams p;
  p.efficiency = 0.5;
  gs::DeviceTimes d = gs::device_times(r, job, p);
  EXPECT_DOUBLE_EQ(d.layer.total(), 3 * 218103808.0 / 5e11);
  EXPECT_DOUBLE_EQ(d.layer.forward_s, 218103808.0 / 5e11);
  EXPECT_DOUBLE_EQ(d.layer.input_grad_s, 218103808.0 / 5e11);  // the backward halves into I and W
  EXPECT_DOUBLE_EQ(d.layer.weight_grad_s, 218103808.0 / 5e11);
  EXPECT_DOUBLE_EQ(d.embedding.input_grad_s, 0.0);  // token ids have no gradient: all W
  EXPECT_DOUBLE_EQ(d.embedding.weight_grad_s, d.embedding.backward_s);
  EXPECT_FALSE(d.from_profile);
}

TEST(CostModel, BoundaryBytesAreActivationSizeOverCodecRatio) {
  auto job = gs::testing::make_job("j", 4, 512, 1024, 2, 4, 1, 2, 2);
  EXPECT_DOUBLE_EQ(gs::boundary_bytes(job, "none"), 2.0 * 1024 * 512 * 2);
  EXPECT_DOUBLE_EQ(gs::boundary_bytes(job, "int8-block"), 2.0 * 1024 * 512);      // 2x on bf16
  EXPECT_DOUBLE_EQ(gs::boundary_bytes(job, "int4-block"), 2.0 * 1024 * 512 / 2);  // 4x on bf16
  EXPECT_DOUBLE_EQ(gs::codec_ratio("int8-block", geopipe::DType::kFloat32), 4.0);
}

TEST(CostModel, LinkTimeIsBytesOverBandwidthPlusLatency) {
  geopipe::LinkSpec l{8.0, 5.0};  // 8 Gbit/s = 1e9 B/s, 5 ms
  EXPECT_DOUBLE_EQ(gs::link_time_s(1e6, l), 1e-3 + 5e-3);
}

TEST(CostModel, BalanceGivesTheFasterDeviceMoreLayers) {
  std::vector<gs::DeviceTimes> dev = {times(3.0, 0, 0), times(1.0, 0, 0)};
  EXPECT_EQ(gs::balance_layers(8, dev), (std::vector<int>{2, 6}));
}

TEST(CostModel, BalanceCountsTheHeadOnTheLastStage) {
  std::vector<gs::DeviceTimes> dev(4, times(1.0, 0.0, 2.0));  // the head costs two blocks
  auto split = gs::balance_layers(10, dev);
  EXPECT_EQ(split, (std::vector<int>{3, 3, 3, 1}));
  auto t = gs::stage_times(split, dev);
  EXPECT_EQ(t, (std::vector<double>{3, 3, 3, 3}));
}

TEST(CostModel, BalanceGivesEveryStageAtLeastOneLayer) {
  std::vector<gs::DeviceTimes> dev = {times(100.0, 0, 0), times(1.0, 0, 0), times(1.0, 0, 0)};
  auto split = gs::balance_layers(5, dev);
  EXPECT_EQ(split[0], 1);
  EXPECT_EQ(split[0] + split[1] + split[2], 5);
}

TEST(CostModel, UniformPipelineTakesMPlusSMinusOneSlots) {
  auto p = gs::pipeline_timing({1, 1, 1, 1}, {0, 0, 0}, {0, 0, 0}, 8, gs::ScheduleKind::kOneFOneB);
  EXPECT_DOUBLE_EQ(p.iteration_s, 11.0);
  EXPECT_EQ(p.warmup, (std::vector<int>{3, 2, 1, 0}));
  EXPECT_FALSE(p.link_bound);
  EXPECT_FALSE(p.latency_stall);
}

TEST(CostModel, SlowestStageSetsThePeriod) {
  auto p = gs::pipeline_timing({1, 3, 1}, {0, 0}, {0, 0}, 4, gs::ScheduleKind::kGPipe);
  EXPECT_DOUBLE_EQ(p.period_s, 3.0);
  EXPECT_DOUBLE_EQ(p.iteration_s, 3 * 3.0 + 5.0);
}

TEST(CostModel, LinkSlowerThanStagesStallsThePipe) {
  // 1F1B (warm-up deep enough to cover the round trip): period 2 (the link carries one activation
  // and, the other way, one gradient per period), fill 1 + 1 + 2 * 2 = 6, T = 3 * 2 + 6.
  auto p = gs::pipeline_timing({1, 1}, {2}, {0}, 4, gs::ScheduleKind::kOneFOneBLatencyHiding);
  EXPECT_TRUE(p.link_bound);
  EXPECT_DOUBLE_EQ(p.period_s, 2.0);
  EXPECT_DOUBLE_EQ(p.iteration_s, 12.0);
  // GPipe: the 4 activations cross as one wave, the 4 gradients as another: the link is paid
  // twice per micro-batch, period 2 + 2, T = 3 * 4 + 6.
  auto g = gs::pipeline_timing({1, 1}, {2}, {0}, 4, gs::ScheduleKind::kGPipe);
  EXPECT_TRUE(g.link_bound);
  EXPECT_DOUBLE_EQ(g.period_s, 4.0);
  EXPECT_DOUBLE_EQ(g.iteration_s, 18.0);
  // A link faster than the forward (1/3 of t = 3) costs GPipe nothing: period = t.
  EXPECT_DOUBLE_EQ(gs::pipeline_timing({3, 3}, {0.5}, {0}, 4, gs::ScheduleKind::kGPipe).period_s, 3.0);
}

TEST(CostModel, PlainOneFOneBStallsOnLatencyAndLatencyHidingWarmupRemovesIt) {
  // Round trip of stage 0: 1 + 1 + 2 * 2 = 6 s; plain warm-up 1 keeps 2 in flight: period 3.
  auto plain = gs::pipeline_timing({1, 1}, {0}, {2}, 8, gs::ScheduleKind::kOneFOneB);
  EXPECT_TRUE(plain.latency_stall);
  EXPECT_DOUBLE_EQ(plain.period_s, 3.0);
  EXPECT_DOUBLE_EQ(plain.iteration_s, 7 * 3.0 + 6.0);
  // Warm-up 5 keeps 6 in flight: the round trip is hidden.
  auto lh = gs::pipeline_timing({1, 1}, {0}, {2}, 8, gs::ScheduleKind::kOneFOneBLatencyHiding);
  EXPECT_FALSE(lh.latency_stall);
  EXPECT_EQ(lh.warmup, (std::vector<int>{5, 0}));
  EXPECT_DOUBLE_EQ(lh.iteration_s, 7 * 1.0 + 6.0);
  // Warm-up is capped by the micro-batches there are.
  auto few = gs::pipeline_timing({1, 1}, {0}, {2}, 3, gs::ScheduleKind::kOneFOneBLatencyHiding);
  EXPECT_EQ(few.warmup[0], 2);
}

TEST(CostModel, StagesSharingComputeSlotsTakeTurns) {
  // 4 stages of 1 s on 2 slots, 8 micro-batches: the work is 32 s, 16 s on 2 slots, plus the first
  // stage's micro-batch and round trip (1 + 2 * (0.2 + 0.1)) while stage 1 has nothing yet.
  const std::vector<double> t = {1, 1, 1, 1}, x = {0.2, 0.2, 0.2}, lat = {0.1, 0.1, 0.1};
  auto own = gs::pipeline_timing(t, x, lat, 8, gs::ScheduleKind::kGPipe);
  EXPECT_FALSE(own.compute_shared);
  EXPECT_DOUBLE_EQ(own.iteration_s, 7 * 1.0 + 4 + 2 * 3 * 0.3);
  auto shared = gs::pipeline_timing(t, x, lat, 8, gs::ScheduleKind::kGPipe, 2);
  EXPECT_TRUE(shared.compute_shared);
  EXPECT_DOUBLE_EQ(shared.iteration_s, 32.0 / 2 + 1 + 2 * 0.3);
  EXPECT_DOUBLE_EQ(shared.period_s, own.period_s);
  // One slot: everything in turn, nothing to add.
  EXPECT_DOUBLE_EQ(gs::pipeline_timing(t, x, lat, 8, gs::ScheduleKind::kOneFOneB, 1).iteration_s, 32.0);
  // As many slots as stages (or 0, the default): each stage has its own device.
  EXPECT_DOUBLE_EQ(gs::pipeline_timing(t, x, lat, 8, gs::ScheduleKind::kGPipe, 4).iteration_s, own.iteration_s);
  // A link-bound pipe is slower than the shared compute: the pipeline formula stands.
  auto slow_link = gs::pipeline_timing(t, {5, 5, 5}, lat, 8, gs::ScheduleKind::kGPipe, 2);
  EXPECT_FALSE(slow_link.compute_shared);
  EXPECT_DOUBLE_EQ(slow_link.iteration_s, gs::pipeline_timing(t, {5, 5, 5}, lat, 8, gs::ScheduleKind::kGPipe).iteration_s);
}

TEST(CostModel, EnergyCountsBusyAndIdleTimeAtRegionalPrice) {
  Region r;
  r.gpu_power_w = 700;
  r.pue = 1.2;
  r.price_usd_per_kwh = 0.1;
  gs::CostParams p;  // idle at 20 % of board power
  // Busy 2 * 1 s of a 4 s iteration: 700 * 1.2 * (2 + 0.2 * 2) J.
  auto e = gs::iteration_energy({&r}, {1.0}, 4.0, 2, p);
  EXPECT_DOUBLE_EQ(e.energy_j, 2016.0);
  EXPECT_DOUBLE_EQ(e.cost_usd, 2016.0 / 3.6e6 * 0.1);
}

TEST(CostModel, EgressIsWireBytesTimesEachDirectionsPricePerMicroBatch) {
  // b = 2, s = 1024, h = 2048, bf16: 2 * 1024 * 2048 * 2 = 8,388,608 bytes a message each way.
  ModelSpec m{4, 2048, 16, 1024, 256, geopipe::DType::kBFloat16};
  geopipe::JobSpec job;
  job.model = m;
  job.micro_batch = 2;
  const double plain = gs::boundary_bytes(job, "none"), int8 = gs::boundary_bytes(job, "int8-block");
  ASSERT_DOUBLE_EQ(plain, 8388608.0);
  ASSERT_DOUBLE_EQ(int8, 4194304.0);
  geopipe::LinkSpec out, back;
  out.egress_usd_per_gb = 0.02;
  back.egress_usd_per_gb = 0.02;
  // Symmetric: 8 micro-batches x 8,388,608 bytes x 2 directions x 0.02 USD / 1e9 bytes.
  EXPECT_DOUBLE_EQ(gs::boundary_egress_usd(plain, plain, out, back, 8), 0.00268435456);
  // The codec halves the bytes on the wire and the bill.
  EXPECT_DOUBLE_EQ(gs::boundary_egress_usd(int8, int8, out, back, 8), 0.00134217728);
  // Asymmetric: the gradients leave by a link at 0.09: 8 x 8,388,608 x (0.02 + 0.09) / 1e9.
  back.egress_usd_per_gb = 0.09;
  EXPECT_DOUBLE_EQ(gs::boundary_egress_usd(plain, plain, out, back, 8), 0.00738197504);
  // int4 activations out (0.5 byte an element), int8 gradients back: 8 x (2,097,152 x 0.02 + 4,194,304 x 0.09) / 1e9.
  EXPECT_DOUBLE_EQ(gs::boundary_egress_usd(gs::boundary_bytes(job, "int4-block"), int8, out, back, 8), 0.003355443200);
  // A free link (no price in the file) costs nothing.
  EXPECT_DOUBLE_EQ(gs::boundary_egress_usd(plain, plain, geopipe::LinkSpec{}, geopipe::LinkSpec{}, 8), 0.0);
}

TEST(CostModel, BalanceMatchesBruteForceOnRandomCases) {
  geopipe::scheduler::Rng rng(5);
  for (int trial = 0; trial < 300; ++trial) {
    const int S = 1 + static_cast<int>(rng.uniform() * 4);
    const int L = S + static_cast<int>(rng.uniform() * 9);
    std::vector<gs::DeviceTimes> dev(S);
    for (auto& d : dev) d = times(rng.uniform(0.1, 3.0), rng.uniform(0, 2), rng.uniform(0, 4));
    auto split = gs::balance_layers(L, dev);
    int sum = 0;
    for (int n : split) {
      sum += n;
      EXPECT_GE(n, 1);
    }
    ASSERT_EQ(sum, L);
    auto stage_t = gs::stage_times(split, dev);
    const double got = *std::max_element(stage_t.begin(), stage_t.end());
    // Every composition of L into S positive parts.
    double best = 1e300;
    std::vector<int> c(S, 1);
    std::function<void(int, int)> rec = [&](int k, int left) {
      if (k == S - 1) {
        c[k] = left;
        auto t = gs::stage_times(c, dev);
        best = std::min(best, *std::max_element(t.begin(), t.end()));
        return;
      }
      for (int n = 1; n <= left - (S - 1 - k); ++n) c[k] = n, rec(k + 1, left - n);
    };
    rec(0, L);
    EXPECT_NEAR(got, best, 1e-12 * best) << "trial " << trial;
  }
}

TEST(CostModel, ChunkMemoryCountsParametersAndSavedActivations) {
  const ModelSpec m = tiny();  // h 128, 4 heads, s 64, V 256
  // 2 blocks of 12 h^2 + 13 h, plus the embedding (V + s) h.
  EXPECT_DOUBLE_EQ(gs::chunk_parameters(m, 2, true, false), 2 * (12.0 * 128 * 128 + 13 * 128) + (256 + 64) * 128.0);
  EXPECT_DOUBLE_EQ(gs::chunk_parameters(m, 1, false, true), 12.0 * 128 * 128 + 13 * 128 + 2 * 128 + 256 * 128.0);
  // micro-batch 8: N = 512 tokens; a block keeps 16 N h + 4 N + b a s^2 floats, a middle stage its output N h.
  const double block = 16.0 * 512 * 128 + 4 * 512 + 8 * 4 * 64 * 64;  // 1,181,696 floats
  const double head = 2.0 * 512 * 128 + 2 * 512 + 512 * 256;           //   263,168 floats
  gs::ActivationBytes a = gs::chunk_activations(m, 8, 2, false, false);
  EXPECT_DOUBLE_EQ(a.per_micro_batch, 4 * (2 * block + 512 * 128));
  EXPECT_DOUBLE_EQ(a.transient, 0);
  EXPECT_DOUBLE_EQ(gs::chunk_activations(m, 8, 1, true, false).per_micro_batch, 4 * (block + head));
  // Recomputation keeps each block's input (a middle chunk sends its output and keeps nothing
  // of it) and rebuilds one block's graph at a time in the backward.
  a = gs::chunk_activations(m, 8, 2, false, true);
  EXPECT_DOUBLE_EQ(a.per_micro_batch, 4 * 2 * 512.0 * 128);  // 524,288 bytes
  EXPECT_DOUBLE_EQ(a.transient, 4 * block);                 // 4,726,784 bytes
  // The last chunk also keeps the head's input; its transient is the larger of a block and the head.
  a = gs::chunk_activations(m, 8, 1, true, true);
  EXPECT_DOUBLE_EQ(a.per_micro_batch, 4 * 2 * 512.0 * 128);
  EXPECT_DOUBLE_EQ(a.transient, 4 * block);
  ModelSpec big_vocab = m;
  big_vocab.vocab = 8192;  // the head's N V = 4,194,304 floats outgrow a block
  EXPECT_DOUBLE_EQ(gs::chunk_activations(big_vocab, 8, 1, true, true).transient,
                   4 * (2.0 * 512 * 128 + 2 * 512 + 512 * 8192.0));
}

TEST(CostModel, TrainingStateIsSixteenBytesAParameterAndZeroOneShardsTheMoments) {
  using geopipe::DType;
  gs::StateBytes fp32 = gs::state_bytes_per_parameter(DType::kFloat32, 1, false);
  EXPECT_EQ(fp32.weights, 4);
  EXPECT_EQ(fp32.gradients, 4);
  EXPECT_EQ(fp32.optimizer, 8);  // two fp32 moments, no master copy
  gs::StateBytes bf16 = gs::state_bytes_per_parameter(DType::kBFloat16, 1, false);
  EXPECT_EQ(bf16.weights, 2);
  EXPECT_EQ(bf16.gradients, 2);
  EXPECT_EQ(bf16.optimizer, 12);  // fp32 master 4 + moments 8
  EXPECT_EQ(bf16.total(), 16);
  // ZeRO-1 over 4 replicas: each holds a quarter of the moments; without it, replicas change nothing.
  EXPECT_EQ(gs::state_bytes_per_parameter(DType::kBFloat16, 4, true).optimizer, 4 + 2);
  EXPECT_EQ(gs::state_bytes_per_parameter(DType::kFloat32, 4, true).total(), 4 + 4 + 2);
  EXPECT_EQ(gs::state_bytes_per_parameter(DType::kFloat32, 4, false).total(), 16);
}

TEST(CostModel, MessagesHeldOnTheDeviceFollowTheRuntimesBuffers) {
  const int M = 8;
  // A CPU rank's host memory is its device memory: a step's receives and its sends, M each.
  EXPECT_EQ(gs::messages_held(true, false, false, true, M), 8);
  EXPECT_EQ(gs::messages_held(true, false, true, false, M), 8);
  // A GPU rank on NCCL: one receive posted at a time, every send kept to the step's end.
  EXPECT_EQ(gs::messages_held(false, true, false, true, M), 1);
  EXPECT_EQ(gs::messages_held(false, true, false, false, M), 8);
  // A GPU rank on MPI receives into host memory; a plain send keeps its device tensor, a
  // compressed one only host bytes.
  EXPECT_EQ(gs::messages_held(false, false, false, true, M), 0);
  EXPECT_EQ(gs::messages_held(false, false, false, false, M), 8);
  EXPECT_EQ(gs::messages_held(false, false, true, false, M), 0);
}

TEST(CostModel, UsableMemoryIsTheGpusTimesTheSafetyFactor) {
  geopipe::Region r;
  r.gpu_mem_gb = 80;
  EXPECT_DOUBLE_EQ(gs::usable_memory_bytes(r), 72e9);
  r.gpu_mem_gb = 0;
  EXPECT_EQ(gs::usable_memory_bytes(r), 0);  // not given: not checked
}

TEST(CostModel, AllReduceIsARingPerBucketWithTheLastBucketExposed) {
  geopipe::LinkSpec intra;
  intra.gbps = 100;  // 12.5e9 bytes/s
  intra.latency_ms = 0.5;
  // 58,773,504 bytes (a stage of 14,693,376 fp32 gradients): buckets of 26,214,400, 26,214,400
  // and 6,344,704. Two replicas: a bucket of n bytes takes 2(1)/2 n / 12.5e9 + 2(1) 0.0005 s.
  const double bytes = 58773504;
  const double big = 26214400 / 12.5e9 + 0.001, last = 6344704 / 12.5e9 + 0.001;
  gs::AllReduceTime a = gs::allreduce_time(bytes, 0.15, 2, intra);
  EXPECT_NEAR(a.total_s, 0.00770188032, 1e-15);
  EXPECT_NEAR(a.total_s, 2 * big + last, 1e-15);
  // A 0.15 s backward hides the first two buckets: only the last is left.
  EXPECT_NEAR(a.exposed_s, 0.00150757632, 1e-15);
  // A backward of 1 ms hides 1 ms of the whole.
  EXPECT_NEAR(gs::allreduce_time(bytes, 0.001, 2, intra).exposed_s, 0.00670188032, 1e-15);
  // Four replicas: 2(3)/4 n / 12.5e9 + 6 x 0.0005 per bucket.
  gs::AllReduceTime four = gs::allreduce_time(bytes, 0.0, 4, intra);
  EXPECT_NEAR(four.total_s, 1.5 * bytes / 12.5e9 + 3 * 0.003, 1e-15);
  EXPECT_NEAR(four.exposed_s, four.total_s, 1e-15);
  // One bucket: nothing to hide behind.
  EXPECT_NEAR(gs::allreduce_time(1e6, 10.0, 2, intra).exposed_s, 1e6 / 12.5e9 + 0.001, 1e-15);
  // No replicas, nothing to reduce.
  EXPECT_EQ(gs::allreduce_time(bytes, 0.15, 1, intra).total_s, 0.0);
  EXPECT_EQ(gs::allreduce_time(bytes, 0.15, 1, intra).exposed_s, 0.0);
}
