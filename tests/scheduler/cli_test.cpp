// `geopipe plan` and `geopipe simulate`, run as a user runs them: outputs and exit codes.
#include <geopipe/core/config.h>
#include <geopipe/core/plan.h>

#include "../support/run_command.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <fstream>
#include <map>
#include <set>
#include <string>

namespace {

using Result = geopipe::test_support::CommandResult;

Result run(const std::string& args) { return geopipe::test_support::run_command(std::string(GEOPIPE_CLI) + " " + args); }

std::string src(const std::string& rel) { return std::string(GEOPIPE_SOURCE_DIR) + "/" + rel; }
std::string out(const std::string& name) { return std::string(GEOPIPE_BINARY_DIR) + "/tests/" + name; }

}  // namespace

TEST(CliPlan, DemoPlanIsWrittenAndValid) {
  const std::string plan = out("cli_plan_local4.json");
  std::remove(plan.c_str());
  Result r = run("plan --topology " + src("examples/topologies/local4.json") + " --job " +
                 src("examples/jobs/gpt-tiny.json") + " -o " + plan);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("4 stages"), std::string::npos) << r.output;
  geopipe::Plan p = geopipe::load_plan(plan);
  EXPECT_EQ(p.num_stages(), 4);
  EXPECT_NO_THROW(geopipe::check_plan_against(p, geopipe::load_topology(src("examples/topologies/local4.json")), plan, 4));
  // The summary shows the cost's two parts, as the plan records them; local4's links are priced.
  EXPECT_GT(p.predicted.egress_usd, 0.0);
  EXPECT_DOUBLE_EQ(p.predicted.cost_usd, p.predicted.electricity_usd + p.predicted.egress_usd);
  char parts[128];
  std::snprintf(parts, sizeof parts, "cost %.4f USD (electricity %.4f + egress %.4f)", p.predicted.cost_usd,
                p.predicted.electricity_usd, p.predicted.egress_usd);
  EXPECT_NE(r.output.find(parts), std::string::npos) << r.output;
  Result v = run("validate --topology " + src("examples/topologies/local4.json") + " " + plan);
  EXPECT_EQ(v.exit_code, 0) << v.output;
}

TEST(CliPlan, WithoutOutputPrintsThePlanJson) {
  Result r = run("plan --topology " + src("examples/topologies/aws6.json") + " --job " +
                 src("examples/jobs/gpt-1.3b.json") + " --policy cost-first --stages 4 --schedule 1f1b");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto doc = nlohmann::json::parse(r.output);
  EXPECT_EQ(doc["stages"].size(), 4u);
  EXPECT_EQ(doc["provenance"]["policy"], "cost-first");
}

TEST(CliPlan, ScheduleAndVirtualStagesShapeThePlan) {
  const std::string base = "plan --topology " + src("examples/topologies/aws6.json") + " --job " +
                           src("examples/jobs/gpt-1.3b.json") + " --stages 4";
  Result z = run(base + " --schedule zbv -o " + out("cli_plan_zbv.json"));
  ASSERT_EQ(z.exit_code, 0) << z.output;
  EXPECT_NE(z.output.find("4 ranks, 8 stages, schedule zbv (2 stages per rank)"), std::string::npos) << z.output;
  geopipe::Plan p = geopipe::load_plan(out("cli_plan_zbv.json"));
  EXPECT_EQ(p.stages_of_rank(0), (std::vector<int>{0, 7}));  // the V: rank 0 holds the first and last chunk
  Result i = run("plan --topology " + src("examples/topologies/aws6.json") + " --job " +
                 src("tests/scheduler/data/gpt-12-layers.json") + " --schedule interleaved --virtual-stages 3 -o " +
                 out("cli_plan_int3.json"));
  ASSERT_EQ(i.exit_code, 0) << i.output;
  EXPECT_EQ(geopipe::load_plan(out("cli_plan_int3.json")).num_stages(), 12);
  // The 1.3B model's activations, 15 micro-batches in flight on rank 0, exceed an 80 GB GPU:
  // the planner recomputes, unless told not to.
  Result big = run(base + " --schedule interleaved --virtual-stages 3 -o " + out("cli_plan_int3_big.json"));
  ASSERT_EQ(big.exit_code, 0) << big.output;
  EXPECT_NE(big.output.find("schedule interleaved (3 stages per rank), recomputation (only block inputs kept)"),
            std::string::npos) << big.output;
  EXPECT_TRUE(geopipe::load_plan(out("cli_plan_int3_big.json")).schedule.recompute);
  Result plain = run(base + " --schedule interleaved --virtual-stages 3 --recompute none");
  EXPECT_EQ(plain.exit_code, 3) << plain.output;
  EXPECT_NE(plain.output.find("interleaved: stages 0, 4 and 8 need 78521420288 bytes (78.52 GB: weights, gradients "
                              "and optimizer state 6.55 GB, activations 65.44 GB for 15 micro-batches in flight"),
            std::string::npos) << plain.output;
  Result a = run(base + " -o " + out("cli_plan_auto.json"));  // auto lists every option it weighed
  ASSERT_EQ(a.exit_code, 0) << a.output;
  for (const char* kind : {"gpipe ", "1f1b ", "1f1b-lh ", "interleaved ", "zb-h1 ", "zbv "})
    EXPECT_NE(a.output.find(std::string("    ") + kind), std::string::npos) << kind << "\n" << a.output;
  EXPECT_NE(a.output.find("<- chosen"), std::string::npos) << a.output;
  Result bad = run(base + " --schedule zb-h1 --virtual-stages 2");
  EXPECT_EQ(bad.exit_code, 2) << bad.output;
  EXPECT_NE(bad.output.find("--virtual-stages"), std::string::npos) << bad.output;
}

TEST(CliPlan, AModelTooBigForItsGpusExitsThreeNamingTheStageAndTheBytes) {
  // Llama-7B on one 80 GB GPU: 6,723,084,288 parameters x 16 bytes = 107.57 GB before any activation.
  Result r = run("plan --topology " + src("examples/topologies/aws6.json") + " --job " +
                 src("examples/jobs/llama-7b.json") + " --stages 1 -o " + out("never.json"));
  EXPECT_EQ(r.exit_code, 3) << r.output;
  // With recomputation, the last attempt: state + 33 kept inputs and one block's graph (5.44 GB) + 1 GB.
  EXPECT_NE(r.output.find("1f1b: stage 0 needs 114005232128 bytes (114.01 GB: weights, gradients and optimizer state "
                          "107.57 GB, activations 5.44 GB for 1 micro-batch in flight with recomputation, message "
                          "buffers 0.00 GB, framework 1.00 GB), its GPU offers 72000000000 bytes (72.00 GB, "
                          "gpu_mem_gb x 0.9)"),
            std::string::npos) << r.output;
  // Two stages fit once the blocks' activations are recomputed.
  Result two = run("plan --topology " + src("examples/topologies/aws6.json") + " --job " +
                   src("examples/jobs/llama-7b.json") + " --stages 2 -o " + out("cli_plan_llama2.json"));
  ASSERT_EQ(two.exit_code, 0) << two.output;
  const geopipe::Plan p = geopipe::load_plan(out("cli_plan_llama2.json"));
  EXPECT_TRUE(p.schedule.recompute);
  for (double m : p.predicted.memory_bytes) EXPECT_LE(m, 72e9);
}

TEST(CliPlan, InfeasibleJobExitsThreeSayingWhy) {
  Result r = run("plan --topology " + src("examples/topologies/local4.json") + " --job " +
                 src("tests/scheduler/data/gpt-tiny-8stages.json") + " -o " + out("never.json"));
  EXPECT_EQ(r.exit_code, 3) << r.output;
  EXPECT_NE(r.output.find("too few GPUs"), std::string::npos) << r.output;
}

TEST(CliPlan, ReplicasGiveEveryStageRanksInItsRegion) {
  const std::string topology = src("tests/scheduler/data/two-regions-2gpus.json");
  const std::string plan = out("cli_plan_replicas.json");
  std::remove(plan.c_str());
  Result r = run("plan --topology " + topology + " --job " + src("examples/jobs/gpt-tiny.json") +
                 " --stages 2 --replicas 2 --schedule 1f1b -o " + plan);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("4 ranks, 2 stages x 2 replicas, schedule 1f1b"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("  stage 0   ranks 0-1 "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("  stage 1   ranks 2-3 "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("  ranks 2-3 peak activations 1 micro-batches"), std::string::npos) << r.output;
  geopipe::Plan p = geopipe::load_plan(plan);
  ASSERT_EQ(p.num_stages(), 2);
  EXPECT_EQ(p.stages[0].ranks, (std::vector<int>{0, 1}));
  EXPECT_EQ(p.stages[1].ranks, (std::vector<int>{2, 3}));
  EXPECT_NE(p.stages[0].region, p.stages[1].region);  // each region has room for one stage of 2
  EXPECT_EQ(p.job.replicas, 2);
  EXPECT_NO_THROW(geopipe::check_plan_against(p, geopipe::load_topology(topology), plan, 4));
  Result v = run("validate --topology " + topology + " " + plan);
  EXPECT_EQ(v.exit_code, 0) << v.output;
}

TEST(CliPlan, TheJobsReplicasFieldPlansReplicasAndTheFlagOverridesIt) {
  const std::string base = "plan --topology " + src("tests/scheduler/data/two-regions-2gpus.json") + " --job " +
                           src("tests/scheduler/data/gpt-tiny-2x2.json") + " --schedule 1f1b";
  Result field = run(base);
  ASSERT_EQ(field.exit_code, 0) << field.output;
  auto doc = nlohmann::json::parse(field.output);
  EXPECT_EQ(doc["stages"][1]["ranks"], nlohmann::json::array({2, 3}));
  EXPECT_EQ(doc["job"]["replicas"], 2);
  Result flag = run(base + " --replicas 1");
  ASSERT_EQ(flag.exit_code, 0) << flag.output;
  auto one = nlohmann::json::parse(flag.output);
  EXPECT_EQ(one["stages"][1]["ranks"], nlohmann::json::array({1}));
  EXPECT_FALSE(one["job"].contains("replicas"));
  Result zero = run(base + " --replicas 0");
  EXPECT_EQ(zero.exit_code, 2) << zero.output;
  EXPECT_NE(zero.output.find("--replicas: Value 0 not in range 1 to 4096"), std::string::npos) << zero.output;
}

TEST(CliPlan, GpuBoundsLetThePlannerChooseTheReplicasAndPrintTheAllReduce) {
  const std::string topology = src("tests/scheduler/data/two-regions-2gpus.json");
  const std::string plan = out("cli_plan_gpus.json");
  std::remove(plan.c_str());
  // gpt-tiny's 8 micro-batches on 4 GPUs as 2 stages: 2 replicas of 4 micro-batches each.
  Result r = run("plan --topology " + topology + " --job " + src("examples/jobs/gpt-tiny.json") +
                 " --stages 2 --gpus 4,4 --schedule 1f1b -o " + plan);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("4 ranks, 2 stages x 2 replicas, schedule 1f1b"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("  ranks 0-1 peak activations 2 micro-batches"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find(", gradient all-reduce "), std::string::npos) << r.output;
  geopipe::Plan p = geopipe::load_plan(plan);
  EXPECT_EQ(p.job.replicas, 2);
  EXPECT_EQ(p.job.micro_batches, 4);
  ASSERT_EQ(p.predicted.allreduce_exposed_s.size(), 4u);
  EXPECT_GT(p.predicted.allreduce_exposed_s[0], 0.0);
  EXPECT_NO_THROW(geopipe::check_plan_against(p, geopipe::load_topology(topology), plan, 4));
  // --replicas fixes the choice; bounds the job parser refuses are refused naming the flag.
  Result one = run("plan --topology " + topology + " --job " + src("examples/jobs/gpt-tiny.json") +
                   " --stages 2 --gpus 2,4 --replicas 1 --schedule 1f1b");
  ASSERT_EQ(one.exit_code, 0) << one.output;
  EXPECT_EQ(nlohmann::json::parse(one.output)["stages"][1]["ranks"], nlohmann::json::array({1}));
  // --replicas or --stages that leave no S x R within the bounds contradict them: exit 2 naming the flag.
  Result contra = run("plan --topology " + topology + " --job " + src("examples/jobs/gpt-tiny.json") +
                      " --stages 2 --gpus 2,4 --replicas 4");
  EXPECT_EQ(contra.exit_code, 2) << contra.output;
  EXPECT_NE(contra.output.find("--replicas: job \"gpt-tiny\": no stages x replicas within its \"gpus\" bounds "
                               "[2, 4]: stages 2 x replicas 4"),
            std::string::npos)
      << contra.output;
  Result stages = run("plan --topology " + topology + " --job " + src("examples/jobs/gpt-tiny.json") +
                      " --stages 3 --gpus 4,4");
  EXPECT_EQ(stages.exit_code, 2) << stages.output;
  EXPECT_NE(stages.output.find("--stages: job \"gpt-tiny\": no stages x replicas within its \"gpus\" bounds [4, 4]: "
                               "stages 3 x replicas 1, 2, 4"),
            std::string::npos)
      << stages.output;
  // One number is a fixed count, as in the job file: 4 GPUs, 2 stages x 2 replicas again.
  Result four = run("plan --topology " + topology + " --job " + src("examples/jobs/gpt-tiny.json") +
                    " --stages 2 --gpus 4 --schedule 1f1b");
  ASSERT_EQ(four.exit_code, 0) << four.output;
  EXPECT_EQ(nlohmann::json::parse(four.output)["stages"][1]["ranks"], nlohmann::json::array({2, 3}));
  Result bad = run("plan --topology " + topology + " --job " + src("examples/jobs/gpt-tiny.json") + " --gpus 0,4");
  EXPECT_EQ(bad.exit_code, 2) << bad.output;
  EXPECT_NE(bad.output.find("--gpus: gpus: expected [min, max] with 1 <= min <= max"), std::string::npos)
      << bad.output;
}

TEST(CliPlan, ReplicasThatNoRegionHasRoomForExitThreeNamingTheRegions) {
  Result r = run("plan --topology " + src("examples/topologies/local4.json") + " --job " +
                 src("examples/jobs/gpt-tiny.json") + " --replicas 2 -o " + out("never.json"));
  EXPECT_EQ(r.exit_code, 3) << r.output;
  EXPECT_NE(r.output.find("too few GPUs for 2 replicas: each stage needs 2 GPUs in one region and the job at least 4 "
                          "stages (8 GPUs); us-east has 1 GPU (0 stages), us-west has 1 GPU (0 stages), eu-central has "
                          "1 GPU (0 stages), ap-southeast has 1 GPU (0 stages)"),
            std::string::npos)
      << r.output;
}

TEST(CliPlan, ProfileReplacesTheFlopsModel) {
  Result a = run("plan --topology " + src("examples/topologies/local4.json") + " --job " +
                 src("examples/jobs/gpt-tiny.json") + " --profile " + src("tests/scheduler/data/profile-cpu-gpt-tiny.json") +
                 " --codec none");
  ASSERT_EQ(a.exit_code, 0) << a.output;
  auto doc = nlohmann::json::parse(a.output);
  // Stage 1 runs one block: 0.004 + 0.008 s per micro-batch from the profile (no codec work).
  EXPECT_NEAR(doc["predicted"]["stage_compute_s"][1].get<double>(), 0.012, 1e-12);
}

TEST(CliPlan, AutoCodecsWeighTheCodecsMeasuredSpeedAgainstTheEgressItSaves) {
  // local4's links are priced: at the CPU twins' measured speed int8-block pays for itself; a
  // codec profile 2,000 times slower makes each stage too slow for the saving (beyond the 10 %).
  const std::string base = "plan --topology " + src("examples/topologies/local4.json") + " --job " +
                           src("examples/jobs/gpt-tiny.json");
  Result fast = run(base);
  Result slow = run(base + " --codec-profile " + src("tests/scheduler/data/codec-cpu-slow.json"));
  ASSERT_EQ(fast.exit_code, 0) << fast.output;
  ASSERT_EQ(slow.exit_code, 0) << slow.output;
  auto a = nlohmann::json::parse(fast.output), b = nlohmann::json::parse(slow.output);
  for (const auto& l : a["links"]) EXPECT_EQ(l["codec"]["forward"], "int8-block") << l;
  for (const auto& l : b["links"]) EXPECT_EQ(l["codec"]["forward"], "none") << l;
  EXPECT_LT(a["predicted"]["egress_usd"].get<double>(), b["predicted"]["egress_usd"].get<double>() / 1.99);
  Result bad = run(base + " --codec-profile " + src("tests/scheduler/data/codec-bad.json"));
  EXPECT_EQ(bad.exit_code, 2) << bad.output;
  EXPECT_NE(bad.output.find("codec-bad.json"), std::string::npos) << bad.output;
  EXPECT_NE(bad.output.find("codec int8-block has quantize rows but no dequantize row"), std::string::npos)
      << bad.output;
}

TEST(CliPlan, SharedComputeSlotsLengthenTheIterationOfCoLocatedStages) {
  // With a slow device gpt-tiny's 4 stages on local4 are compute-bound (120-185 ms per micro-batch
  // against 5-40 ms links): on 2 shared slots they take turns, so the iteration is at least the 8
  // micro-batches' work over 2 slots (2.36 s against 1.98 s with one device per stage).
  const std::string base = "plan --topology " + src("examples/topologies/local4.json") + " --job " +
                           src("examples/jobs/gpt-tiny.json") + " --profile " +
                           src("tests/scheduler/data/profile-cpu-gpt-tiny-compute-bound.json") + " --schedule gpipe";
  Result own = run(base);
  Result shared = run(base + " --shared-compute-slots 2");
  ASSERT_EQ(own.exit_code, 0) << own.output;
  ASSERT_EQ(shared.exit_code, 0) << shared.output;
  auto a = nlohmann::json::parse(own.output), b = nlohmann::json::parse(shared.output);
  double work = 0;
  for (const auto& t : b["predicted"]["stage_compute_s"]) work += 8 * t.get<double>();
  EXPECT_GE(b["predicted"]["iteration_s"].get<double>(), work / 2);
  EXPECT_GT(b["predicted"]["iteration_s"].get<double>(), a["predicted"]["iteration_s"].get<double>() * 1.1);
  EXPECT_EQ(run(base + " --shared-compute-slots -1").exit_code, 2);
}

TEST(CliPlan, BadInputExitsTwoNamingTheField) {
  Result bad = run("plan --topology " + src("examples/topologies/local4.json") + " --job " +
                   src("examples/jobs/gpt-tiny.json") + " --profile " + src("tests/scheduler/data/profile-bad.json"));
  EXPECT_EQ(bad.exit_code, 2) << bad.output;
  EXPECT_NE(bad.output.find("layer.forward_s"), std::string::npos) << bad.output;
  Result shape = run("plan --topology " + src("examples/topologies/aws6.json") + " --job " +
                     src("examples/jobs/gpt-1.3b.json") + " --profile " + src("tests/scheduler/data/profile-cpu-gpt-tiny.json"));
  EXPECT_EQ(shape.exit_code, 2) << shape.output;
  EXPECT_NE(shape.output.find("model.d_model"), std::string::npos) << shape.output;
  EXPECT_EQ(run("plan --topology " + src("examples/topologies/local4.json") + " --job " +
                src("examples/jobs/gpt-tiny.json") + " --policy banana").exit_code, 2);
  EXPECT_EQ(run("plan --topology " + src("examples/topologies/aws6.json") + " --job " +
                src("examples/jobs/llama-7b.json") + " --policy exact").exit_code, 2);
}

TEST(CliSimulate, GeneratesAWorkloadAndPrintsTheComparison) {
  const std::string json = out("cli_sim.json"), csv = out("cli_sim.csv");
  Result r = run("simulate --topology " + src("examples/topologies/aws6.json") +
                 " --seed 1 --jobs 40 --bandwidth-scale 0.5,1 --json " + json + " --csv " + csv);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("bandwidth x0.5"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("cost-first"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("bace           fifo"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("energy (kWh)  elec. (USD) egress (USD)   cost (USD)"), std::string::npos) << r.output;
  auto doc = geopipe::read_json_file(json);
  ASSERT_EQ(doc["scenarios"].size(), 2u);
  EXPECT_EQ(doc["scenarios"][0]["results"].size(), 4u);
  EXPECT_EQ(doc["scenarios"][1]["results"][0]["finished"], 40);
  std::ifstream in(csv);
  int lines = 0;
  for (std::string line; std::getline(in, line);) ++lines;
  EXPECT_EQ(lines, 1 + 2 * 4 * 40);
  const auto& first = doc["scenarios"][0]["results"][0];
  EXPECT_NEAR(first["cost_usd"].get<double>(),
              first["electricity_usd"].get<double>() + first["egress_usd"].get<double>(),
              1e-9 * first["cost_usd"].get<double>());
}

TEST(CliSimulate, JobsWithReplicasHoldTheirGpusAndTheOutputsSayHowMany) {
  // "fixed" (2 stages x 2 replicas) holds all four GPUs; "bounded" ([2, 4] GPUs) arrives while it
  // runs and starts when it ends: BACE and delay-first with 2 replicas of 4 micro-batches (the
  // fastest), cost-first and fifo with one pipeline of 8.
  const std::string json = out("cli_sim_replicas.json"), csv = out("cli_sim_replicas.csv");
  Result r = run("simulate --topology " + src("tests/scheduler/data/two-regions-2gpus.json") + " --workload " +
                 src("tests/scheduler/data/workload-replicas.json") + " --json " + json + " --csv " + csv);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto doc = geopipe::read_json_file(json);
  const std::map<std::string, int> bounded_replicas = {{"bace", 2}, {"delay-first", 2}, {"cost-first", 1}, {"fifo", 1}};
  for (const auto& result : doc["scenarios"][0]["results"]) {
    SCOPED_TRACE(result["policy"].get<std::string>());
    const auto& jobs = result["job_records"];
    ASSERT_EQ(jobs.size(), 2u);
    EXPECT_EQ(jobs[0]["replicas"], 2);
    EXPECT_EQ(jobs[0]["stages"], 2);
    EXPECT_EQ(jobs[1]["replicas"], bounded_replicas.at(result["policy"]));
    EXPECT_DOUBLE_EQ(jobs[1]["start_s"].get<double>(), jobs[0]["end_s"].get<double>());
    EXPECT_EQ(jobs[1]["memory_fits"], true);
    EXPECT_EQ(result["over_memory"], 0);
  }
  std::ifstream in(csv);
  std::string header;
  std::getline(in, header);
  EXPECT_NE(header.find(",jct_s,stages,replicas,inter_region_hops,"), std::string::npos) << header;
}

TEST(CliSimulate, RunsAWorkloadFileAndRejectsBadPolicies) {
  Result r = run("simulate --topology " + src("examples/topologies/aws6.json") + " --workload " +
                 src("examples/workloads/mixed6.json") + " --policy bace,fifo");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("6 jobs"), std::string::npos) << r.output;
  EXPECT_EQ(run("simulate --topology " + src("examples/topologies/aws6.json") + " --policy exact").exit_code, 2);
  EXPECT_EQ(run("simulate --topology " + src("examples/topologies/aws6.json") + " --bandwidth-scale 0").exit_code, 2);
}

TEST(CliSimulate, ParetoPrintsBaceAtEachMaxSlowdownThenTheBaselinesWithTheFrontier) {
  const std::string json = out("cli_pareto.json");
  Result r = run("simulate --topology " + src("examples/topologies/aws6.json") +
                 " --seed 1 --jobs 30 --policy bace,fifo,cost-first --pareto --json " + json);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // One row per point: BACE by ascending x, then the baselines in --policy order (bace itself is
  // the sweep).
  const std::vector<std::string> rows = {"\nbace x=0 ",   "\nbace x=0.05 ", "\nbace x=0.1 ", "\nbace x=0.25 ",
                                         "\nbace x=0.5 ", "\nbace x=1 ",    "\nbace x=2 ",   "\nfifo ",
                                         "\ncost-first "};
  size_t at = r.output.find("JCT/cost frontier of bace across --max-slowdown x: topology aws6");
  ASSERT_NE(at, std::string::npos) << r.output;
  for (const auto& row : rows) {
    const size_t next = r.output.find(row, at);
    ASSERT_NE(next, std::string::npos) << "missing or out of order: " << row << "\n" << r.output;
    at = next;
  }
  auto doc = geopipe::read_json_file(json);
  ASSERT_EQ(doc["pareto"].size(), 1u);
  const auto& points = doc["pareto"][0]["points"];
  ASSERT_EQ(points.size(), rows.size());
  EXPECT_EQ(points[0]["label"], "bace x=0");
  EXPECT_EQ(points[6]["max_slowdown"], 2.0);
  EXPECT_EQ(points[7]["label"], "fifo");
  EXPECT_FALSE(points[7].contains("max_slowdown"));
  int on_frontier = 0;
  for (const auto& p : points) {
    on_frontier += p["on_frontier"].get<bool>();
    EXPECT_EQ(p["on_frontier"].get<bool>(), !p.contains("dominated_by")) << p["label"];
    EXPECT_EQ(r.output.find(p["label"].get<std::string>() + " ") != std::string::npos, true) << p["label"];
  }
  EXPECT_GE(on_frontier, 1);
  // Strict FIFO with first fit spreads pipelines over regions and pays their egress: some BACE
  // point is both faster and cheaper.
  EXPECT_FALSE(points[7]["on_frontier"].get<bool>());
  EXPECT_EQ(points[7]["dominated_by"].get<std::string>().rfind("bace x=", 0), 0u) << points[7];
  // A larger knob trades JCT for cost: the far end is no dearer than the fastest setting.
  EXPECT_LE(points[6]["cost_usd"].get<double>(), points[0]["cost_usd"].get<double>());
}

TEST(CliSimulate, ANegativeMaxSlowdownExitsTwoNamingTheFlag) {
  for (const std::string& cmd : {"simulate --topology " + src("examples/topologies/aws6.json") + " --jobs 3",
                                "plan --topology " + src("examples/topologies/aws6.json") + " --job " +
                                    src("examples/jobs/gpt-1.3b.json")}) {
    Result r = run(cmd + " --max-slowdown -0.5");
    EXPECT_EQ(r.exit_code, 2) << r.output;
    EXPECT_NE(r.output.find("--max-slowdown: expected 0 <= X <= 100, a fraction (0.25: up to 25 % slower), got -0.5"),
              std::string::npos)
        << r.output;
    for (const char* huge : {"101", "inf", "1e309"}) {  // no bound at all: the waits would never end
      Result h = run(cmd + " --max-slowdown " + huge);
      EXPECT_EQ(h.exit_code, 2) << huge << h.output;
      EXPECT_NE(h.output.find(std::string("got ") + huge), std::string::npos) << h.output;
    }
  }
  EXPECT_EQ(run("simulate --topology " + src("examples/topologies/aws6.json") + " --pareto --csv " +
                out("cli_pareto.csv")).exit_code, 2);
}

TEST(CliPlan, MaxSlowdownTakesTheCheaperSlowerRegionOnlyWhenLargeEnough) {
  // aws-mixed5: H100s in Tokyo (0.15 USD/kWh) are fastest; Virginia's L40S (0.0892 USD/kWh, 362 of
  // the H100's 989 TFLOP/s) spends less electricity per FLOP but takes ~3.5x as long.
  const std::string base = "plan --topology " + src("examples/topologies/aws-mixed5.json") + " --job " +
                           src("examples/jobs/gpt-1.3b.json") + " -o " + out("cli_knob.json");
  auto regions_of = [&](const std::string& x) {
    Result r = run(base + " --max-slowdown " + x);
    EXPECT_EQ(r.exit_code, 0) << r.output;
    std::set<std::string> regions;
    for (const auto& s : geopipe::load_plan(out("cli_knob.json")).stages) regions.insert(s.region);
    return regions;
  };
  EXPECT_EQ(regions_of("0"), std::set<std::string>{"ap-northeast-1-tokyo"});
  EXPECT_EQ(regions_of("0.1"), std::set<std::string>{"ap-northeast-1-tokyo"});
  EXPECT_EQ(regions_of("5"), std::set<std::string>{"us-east-1-virginia"});
}
