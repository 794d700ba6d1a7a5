// Profile files: round trip, strict parsing, the matching rule.
#include <geopipe/core/error.h>
#include <geopipe/core/plan.h>
#include <geopipe/scheduler/cost_model.h>
#include <geopipe/scheduler/profile.h>

#include "test_util.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstdio>

namespace gs = geopipe::scheduler;

namespace {
nlohmann::json good_profile() {
  return {{"version", 1},
          {"device", "cpu"},
          {"model", {{"layers", 4}, {"d_model", 512}, {"heads", 8}, {"seq_len", 1024}, {"vocab", 1024}, {"dtype", "bf16"}}},
          {"micro_batch", 2},
          {"layer", {{"forward_s", 0.1}, {"backward_s", 0.2}}},
          {"embedding", {{"forward_s", 0.01}, {"backward_s", 0.01}}},
          {"head", {{"forward_s", 0.05}, {"backward_s", 0.1}}}};
}
}  // namespace

TEST(Profile, SavedProfileLoadsBackEqual) {
  gs::Profile p = gs::parse_profile(good_profile(), "p.json");
  const std::string path = std::string(GEOPIPE_BINARY_DIR) + "/tests/profile_roundtrip.json";
  gs::save_profile(p, path);
  gs::Profile q = gs::load_profile(path);
  std::remove(path.c_str());
  EXPECT_EQ(q.device, "cpu");
  EXPECT_EQ(q.micro_batch, 2);
  EXPECT_DOUBLE_EQ(q.layer.backward_s, 0.2);
  EXPECT_DOUBLE_EQ(q.head.total(), 0.15);
  EXPECT_EQ(q.model.d_model, 512);
}

TEST(Profile, BadFieldsAreAllReportedByPath) {
  auto doc = good_profile();
  doc["layer"]["forward_s"] = -1;
  doc["head"].erase("backward_s");
  doc["gpu"] = "x";
  try {
    gs::parse_profile(doc, "bad.json");
    FAIL() << "expected InputError";
  } catch (const geopipe::InputError& e) {
    std::string all;
    for (const auto& d : e.diagnostics()) all += d.str() + "\n";
    EXPECT_NE(all.find("layer.forward_s"), std::string::npos) << all;
    EXPECT_NE(all.find("head.backward_s"), std::string::npos) << all;
    EXPECT_NE(all.find("gpu"), std::string::npos) << all;
    EXPECT_NE(all.find("bad.json"), std::string::npos) << all;
    EXPECT_EQ(e.exit_code(), geopipe::kExitBadInput);
  }
}

TEST(Profile, ReplacesFlopsOnlyForRegionsOfItsDevice) {
  gs::Profile p = gs::parse_profile(good_profile(), "p.json");
  auto job = gs::testing::make_job("j", 4, 512, 1024, 2, 4, 1, 2, 2);
  geopipe::Region cpu, gpu;
  cpu.gpu_type = "cpu";
  cpu.gpu_tflops = 1;
  gpu.gpu_type = "H100";
  gpu.gpu_tflops = 989;
  gs::DeviceTimes a = gs::device_times(cpu, job, {}, &p);
  gs::DeviceTimes b = gs::device_times(gpu, job, {}, &p);
  EXPECT_TRUE(a.from_profile);
  EXPECT_DOUBLE_EQ(a.layer.total(), 0.3);
  EXPECT_DOUBLE_EQ(a.head.total(), 0.15);
  EXPECT_FALSE(b.from_profile);
  EXPECT_DOUBLE_EQ(b.layer.total(), gs::device_times(gpu, job, {}).layer.total());
}

TEST(Profile, OfAnotherShapeIsRejectedNamingTheField) {
  gs::Profile p = gs::parse_profile(good_profile(), "p.json");
  auto job = gs::testing::make_job("j", 4, 256, 1024, 2, 4, 1, 2, 2);
  try {
    gs::check_profile_matches(p, job);
    FAIL() << "expected InputError";
  } catch (const geopipe::InputError& e) {
    ASSERT_FALSE(e.diagnostics().empty());
    EXPECT_EQ(e.diagnostics()[0].path, "model.d_model");
  }
  auto same = gs::testing::make_job("j", 12, 512, 1024, 2, 4, 1, 2, 2);  // layer count may differ
  EXPECT_NO_THROW(gs::check_profile_matches(p, same));
}

TEST(Profile, MeasuredSplitBackwardRoundTripsAndReplacesTheEvenSplit) {
  auto doc = good_profile();
  doc["layer"]["input_grad_s"] = 0.12;
  doc["layer"]["weight_grad_s"] = 0.09;
  gs::Profile p = gs::parse_profile(doc, "p.json");
  const std::string path = std::string(GEOPIPE_BINARY_DIR) + "/tests/profile_split.json";
  gs::save_profile(p, path);
  gs::Profile q = gs::load_profile(path);
  std::remove(path.c_str());
  EXPECT_DOUBLE_EQ(q.layer.input_grad_s, 0.12);
  EXPECT_DOUBLE_EQ(q.layer.weight_grad_s, 0.09);
  geopipe::Region cpu;
  cpu.gpu_type = "cpu";
  auto job = gs::testing::make_job("j", 4, 512, 1024, 2, 4, 1, 2, 2);
  gs::DeviceTimes d = gs::device_times(cpu, job, {}, &q);
  EXPECT_DOUBLE_EQ(d.layer.input_grad_s, 0.12);
  EXPECT_DOUBLE_EQ(d.layer.weight_grad_s, 0.09);
  EXPECT_DOUBLE_EQ(d.head.input_grad_s, 0.05);  // not measured: the backward halves
  EXPECT_DOUBLE_EQ(d.embedding.weight_grad_s, 0.01);
}

TEST(Profile, HalfASplitIsRejectedNamingTheMissingField) {
  auto doc = good_profile();
  doc["layer"]["input_grad_s"] = 0.12;
  try {
    gs::parse_profile(doc, "half.json");
    FAIL() << "expected InputError";
  } catch (const geopipe::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("layer.weight_grad_s"), std::string::npos) << e.what();
  }
}

namespace {
// Rows as geopipe-codec-bench --json writes them (fields the profile ignores left out).
nlohmann::json bench_row(const std::string& codec, const std::string& op, double numel, double gbps,
                         const std::string& path = "cuda") {
  return {{"shape", "s"}, {"numel", numel}, {"codec", codec}, {"op", op}, {"path", path}, {"gbps", gbps}};
}
nlohmann::json codec_bench() {
  return {{"benchmark", "geopipe-codec-bench"},
          {"device", "NVIDIA H100 80GB HBM3"},
          {"rows",
           {bench_row("int8-block", "quantize", 1e6, 900), bench_row("int8-block", "quantize", 1e8, 2700),
            bench_row("int8-block", "dequantize", 1e8, 2500), bench_row("int8-block", "dequantize", 1e6, 3000),
            bench_row("int4-block", "quantize", 1e8, 1500, "portable"), bench_row("int4-block", "quantize", 1e8, 1800),
            bench_row("int4-block", "dequantize", 1e8, 2000)}}};
}
}  // namespace

TEST(CodecProfile, KeepsEachCodecsLargestTensorAndItsFastestPath) {
  gs::CodecProfile p = gs::parse_codec_profile(codec_bench(), "codec-gpu.json");
  EXPECT_EQ(p.device, "NVIDIA H100 80GB HBM3");
  ASSERT_EQ(p.codecs.size(), 2u);
  EXPECT_DOUBLE_EQ(p.codecs["int8-block"].encode_bps, 2700e9);  // the 1e8 row, not the 1e6 one
  EXPECT_DOUBLE_EQ(p.codecs["int8-block"].decode_bps, 2500e9);
  EXPECT_DOUBLE_EQ(p.codecs["int4-block"].encode_bps, 1800e9);  // the faster of two paths on one shape
}

TEST(CodecProfile, AppliesToRegionsWhoseGpuTypeItsDeviceNamesAndOtherwiseDefaultsApply) {
  gs::CodecProfile p = gs::parse_codec_profile(codec_bench(), "codec-gpu.json");
  geopipe::Region h100, a100, cpu;
  h100.gpu_type = "h100";  // case does not matter
  a100.gpu_type = "A100";
  cpu.gpu_type = "cpu";
  EXPECT_TRUE(gs::codec_profile_applies(p, h100));
  EXPECT_FALSE(gs::codec_profile_applies(p, a100));
  // A whole word of the device line only: L4 is not L40S, A10 is not A100.
  geopipe::Region l4, a10;
  l4.gpu_type = "L4";
  a10.gpu_type = "A10";
  gs::CodecProfile l40s = p, a100_line = p;
  l40s.device = "NVIDIA L40S";
  a100_line.device = "NVIDIA A100-SXM4-80GB";
  EXPECT_FALSE(gs::codec_profile_applies(l40s, l4));
  EXPECT_FALSE(gs::codec_profile_applies(a100_line, a10));
  EXPECT_TRUE(gs::codec_profile_applies(a100_line, a100));
  l40s.device = "NVIDIA L4";
  EXPECT_TRUE(gs::codec_profile_applies(l40s, l4));
  EXPECT_DOUBLE_EQ(gs::codec_rates(h100, "int8-block", &p).encode_bps, 2700e9);
  // Not measured there: the GPU assumption, and on CPU regions the CPU twins' measured speed.
  EXPECT_DOUBLE_EQ(gs::codec_rates(h100, "fp8-e4m3-block", &p).encode_bps, gs::kAssumedGpuCodecBps);
  EXPECT_DOUBLE_EQ(gs::codec_rates(a100, "int8-block", &p).decode_bps, gs::kAssumedGpuCodecBps);
  EXPECT_DOUBLE_EQ(gs::codec_rates(cpu, "int8-block", &p).encode_bps, 19.20e9);
  EXPECT_DOUBLE_EQ(gs::codec_rates(cpu, "int8-block").decode_bps, 21.03e9);
  EXPECT_DOUBLE_EQ(gs::codec_rates(cpu, "none").encode_bps, 0.0);
}

TEST(CodecProfile, CodecWorkIsTheBytesReadAndWrittenOverTheRate) {
  // 2 x 1024 tokens x 512 wide, bf16: 2,097,152 bytes plain; int4-block packs them into 524,288.
  auto job = gs::testing::make_job("j", 4, 512, 1024, 2, 4, 1, 2, 2);
  const gs::CodecWork w = gs::codec_work(job, "int4-block", {1e9, 2e9});
  EXPECT_DOUBLE_EQ(w.encode_s, (2097152 + 524288) / 1e9);
  EXPECT_DOUBLE_EQ(w.decode_s, (2097152 + 524288) / 2e9);
  const gs::CodecWork none = gs::codec_work(job, "none", {});
  EXPECT_EQ(none.encode_s, 0.0);
  EXPECT_EQ(none.decode_s, 0.0);
}

TEST(CodecProfile, BadRowsAndACodecWithoutBothOpsAreReportedByPath) {
  auto doc = codec_bench();
  doc["rows"].push_back(bench_row("fp8-e4m3-block", "quantize", 1e8, 700));  // no dequantize row
  doc["rows"].push_back(bench_row("int8-block", "encode", 1e8, 700));      // op unknown
  doc["rows"].push_back(bench_row("zzz", "quantize", 1e8, 700));             // codec unknown
  doc["rows"][0]["gbps"] = -3;
  try {
    gs::parse_codec_profile(doc, "codec.json");
    FAIL() << "expected InputError";
  } catch (const geopipe::InputError& e) {
    std::string all;
    for (const auto& d : e.diagnostics()) all += d.str() + "\n";
    EXPECT_NE(all.find("codec.json"), std::string::npos) << all;
    EXPECT_NE(all.find("rows[0]"), std::string::npos) << all;
    EXPECT_NE(all.find("rows[8]"), std::string::npos) << all;
    EXPECT_NE(all.find("rows[9].codec: unknown codec \"zzz\""), std::string::npos) << all;
    EXPECT_NE(all.find("codec fp8-e4m3-block has quantize rows but no dequantize row"), std::string::npos) << all;
    EXPECT_EQ(e.exit_code(), geopipe::kExitBadInput);
  }
  try {
    gs::parse_codec_profile({{"rows", nlohmann::json::array()}}, "empty.json");
    FAIL() << "expected InputError";
  } catch (const geopipe::InputError& e) {
    std::string all;
    for (const auto& d : e.diagnostics()) all += d.str() + "\n";
    EXPECT_NE(all.find("device"), std::string::npos) << all;
    EXPECT_NE(all.find("no codec was measured"), std::string::npos) << all;
  }
}

TEST(CodecProfile, EveryKnownCodecHasADefaultSpeedOnCpuAndGpu) {
  geopipe::Region cpu, gpu;
  cpu.gpu_type = "cpu";
  gpu.gpu_type = "H100";
  for (const std::string& codec : geopipe::known_codec_names()) {
    if (codec == "none") continue;
    EXPECT_GT(gs::codec_rates(cpu, codec).encode_bps, 0) << codec;
    EXPECT_GT(gs::codec_rates(cpu, codec).decode_bps, 0) << codec;
    EXPECT_EQ(gs::codec_rates(gpu, codec).encode_bps, gs::kAssumedGpuCodecBps) << codec;
  }
}
