// The pipeline executor across 4 ranks in 2 regions (fp32, CPU): same losses as one process,
// bit-identical reruns, int8 links close to uncompressed, resume, merged trace.
#include "test_plan.h"
#include "test_world.h"

#include <geopipe/comm/communicator.h>
#include <geopipe/core/env.h>
#include <geopipe/core/error.h>
#include <geopipe/runtime/checkpoint.h>
#include <geopipe/runtime/sample.h>
#include <geopipe/runtime/trainer.h>

#include <gtest/gtest.h>
#include <mpi.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <thread>

using namespace geopipe;
using namespace geopipe::runtime;
namespace fs = std::filesystem;

namespace {

const std::vector<std::pair<int, int>> kFourStages = {{0, 1}, {1, 2}, {2, 3}, {3, 4}};
const std::vector<std::string> kTwoRegions = {"us-east", "us-east", "eu-central", "eu-central"};

const auto* const kWorldEnvironment = ::testing::AddGlobalTestEnvironment(new testing_support::WorldEnvironment);
using testing_support::shared_dir;

comm::Communicator& world() { return *testing_support::world(); }

std::vector<double> losses(const TrainResult& r) {
  std::vector<double> l;
  for (const auto& s : r.steps) l.push_back(s.loss);
  return l;
}

// The one-process reference (every rank computes it; it is deterministic).
const std::vector<double>& reference_losses() {
  static std::vector<double> ref = [] {
    runtime::set_compute_threads(1);
    Plan one = testing_support::tiny_plan({{0, 4}}, {"us-east"});
    return losses(run_training(one, testing_support::tiny_config(10), nullptr));
  }();
  return ref;
}

void expect_close(const std::vector<double>& got, const std::vector<double>& want, double rel) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i)
    EXPECT_LE(std::abs(got[i] - want[i]), rel * std::abs(want[i])) << "step " << i << ": " << got[i] << " vs " << want[i];
}


}  // namespace

TEST(Pipeline, GPipeOnFourRanksMatchesOneProcessFor10Steps) {
  Plan plan = testing_support::tiny_plan(kFourStages, kTwoRegions, "gpipe");
  TrainResult r = run_training(plan, testing_support::tiny_config(10), &world());
  expect_close(losses(r), reference_losses(), 1e-5);
  EXPECT_LT(r.steps.back().loss, r.steps.front().loss);
}

TEST(Pipeline, OneFOneBOnFourRanksMatchesOneProcessFor10Steps) {
  Plan plan = testing_support::tiny_plan(kFourStages, kTwoRegions, "1f1b");
  TrainResult r = run_training(plan, testing_support::tiny_config(10), &world());
  expect_close(losses(r), reference_losses(), 1e-5);
}

TEST(Pipeline, SamePlanTwiceIsBitIdentical) {
  Plan plan = testing_support::tiny_plan(kFourStages, kTwoRegions, "1f1b");
  TrainResult a = run_training(plan, testing_support::tiny_config(4), &world());
  TrainResult b = run_training(plan, testing_support::tiny_config(4), &world());
  ASSERT_EQ(a.steps.size(), b.steps.size());
  for (size_t i = 0; i < a.steps.size(); ++i) {
    EXPECT_EQ(a.steps[i].loss, b.steps[i].loss) << "step " << i;
    EXPECT_EQ(a.steps[i].grad_norm, b.steps[i].grad_norm) << "step " << i;
  }
}

TEST(Pipeline, ScheduleFileWithDeeperWarmupGivesTheSameLosses) {
  Plan plan = testing_support::tiny_plan(kFourStages, kTwoRegions, "1f1b");
  std::string dir = shared_dir("schedfile");
  std::string path = dir + "/schedule.txt";
  int rank = world().rank();
  if (rank == 0) {
    fs::create_directories(dir);
    std::ofstream(path) << "# latency-hiding 1F1B, one extra warm-up micro-batch per stage\n"
                        << format_schedule(lower(one_f_one_b_schedule(4, 4, {4, 3, 2, 1})));
  }
  MPI_Barrier(MPI_COMM_WORLD);
  TrainConfig cfg = testing_support::tiny_config(10);
  cfg.schedule_file = path;
  expect_close(losses(run_training(plan, cfg, &world())), reference_losses(), 1e-5);
}

TEST(Pipeline, Int8LinksStayWithinTwoPercentOfUncompressed) {
  Plan plan = testing_support::tiny_plan(kFourStages, kTwoRegions, "1f1b", "int8-block");
  TrainResult r = run_training(plan, testing_support::tiny_config(10), &world());
  const double ref = reference_losses().back();
  EXPECT_LE(std::abs(r.steps.back().loss - ref), 0.02 * ref) << r.steps.back().loss << " vs " << ref;
  const StepStats& s = r.steps.back();
  if (world().rank() < 3) {  // activations go out compressed: about a quarter of fp32
    EXPECT_GT(s.fwd_raw, 0u);
    EXPECT_LT(static_cast<double>(s.fwd_wire), 0.35 * static_cast<double>(s.fwd_raw));
  }
  if (world().rank() > 0) {
    EXPECT_LT(static_cast<double>(s.bwd_wire), 0.35 * static_cast<double>(s.bwd_raw));
  }
  // --codec none overrides the plan: the link carries raw fp32 again.
  TrainConfig cfg = testing_support::tiny_config(2);
  cfg.codec = "none";
  TrainResult raw = run_training(plan, cfg, &world());
  EXPECT_EQ(raw.steps.back().fwd_wire, raw.steps.back().fwd_raw);
}

TEST(Pipeline, ResumeOnFourRanksReproducesTheUninterruptedLosses) {
  Plan plan = testing_support::tiny_plan(kFourStages, kTwoRegions, "1f1b");
  TrainConfig cfg = testing_support::tiny_config(4);
  cfg.checkpoint_dir = shared_dir("resume");
  cfg.checkpoint_every = 2;
  TrainConfig part = cfg;
  part.iters = 2;
  part.optim.decay_steps = 4;
  run_training(plan, part, &world());
  TrainConfig rest = cfg;
  rest.resume = true;
  TrainResult r = run_training(plan, rest, &world());
  ASSERT_EQ(r.first_step, 2);
  ASSERT_EQ(r.steps.size(), 2u);
  TrainConfig straight = testing_support::tiny_config(4);
  TrainResult s = run_training(plan, straight, &world());
  EXPECT_EQ(r.steps[0].loss, s.steps[2].loss);
  EXPECT_EQ(r.steps[1].loss, s.steps[3].loss);
  if (world().rank() == 0) {
    auto m = read_manifest(cfg.checkpoint_dir);
    ASSERT_TRUE(m.has_value());
    EXPECT_EQ(m->step, 4);
    EXPECT_EQ(m->files.size(), 4u);
  }
}

TEST(Pipeline, TraceMergesEveryRanksSpansAndSummaryNamesEachLink) {
  Plan plan = testing_support::tiny_plan(kFourStages, kTwoRegions, "1f1b");
  TrainConfig cfg = testing_support::tiny_config(2);
  cfg.trace_file = shared_dir("trace") + ".json";
  TrainResult r = run_training(plan, cfg, &world());
  if (world().rank() != 0) {
    EXPECT_TRUE(r.summary.empty());
    return;
  }
  std::ifstream f(cfg.trace_file);
  ASSERT_TRUE(f.good());
  nlohmann::json doc = nlohmann::json::parse(f);
  std::set<int> pids;
  std::set<std::string> names;
  for (const auto& e : doc.at("traceEvents")) {
    pids.insert(e.at("pid").get<int>());
    names.insert(e.at("name").get<std::string>());
  }
  EXPECT_EQ(pids, (std::set<int>{0, 1, 2, 3}));
  for (const char* n : {"F0", "B3", "OPT", "SEND_F0", "RECV_F0 wait", "RECV_B3 wait"})
    EXPECT_TRUE(names.count(n)) << n;
  EXPECT_NE(r.summary.find("0->1"), std::string::npos) << r.summary;
  EXPECT_NE(r.summary.find("2->3"), std::string::npos) << r.summary;
}

TEST(Pipeline, RanksOnThisHostComeFromMpiOrFromLaunchWhicheverIsMore) {
  unsetenv(env::kRanksOnHost);
  EXPECT_EQ(ranks_on_this_host(), 4);  // mpiexec -n 4 on this host
  setenv(env::kRanksOnHost, "8", 1);   // regions in namespaces: launch knows better
  EXPECT_EQ(ranks_on_this_host(), 8);
  EXPECT_EQ(default_threads_per_rank(), std::max(1, static_cast<int>(std::thread::hardware_concurrency()) / 8));
  setenv(env::kRanksOnHost, "1", 1);
  EXPECT_EQ(ranks_on_this_host(), 4);
  setenv(env::kRanksOnHost, "four", 1);
  EXPECT_THROW(ranks_on_this_host(), InputError);
  unsetenv(env::kRanksOnHost);
}

TEST(Pipeline, SamplingThroughFourStagesWritesWhatOneProcessWrites) {
  Plan plan = testing_support::tiny_plan(kFourStages, kTwoRegions, "1f1b");
  TrainConfig cfg = testing_support::tiny_config(3);
  cfg.checkpoint_dir = shared_dir("sample");
  cfg.checkpoint_every = 3;
  run_training(plan, cfg, &world());
  SampleConfig sc;
  sc.checkpoint_dir = cfg.checkpoint_dir;
  sc.tokens = 24;
  sc.prompt = "In the beginning";
  sc.seed = 11;
  sc.top_k = 20;
  SampleResult piped = generate(plan, sc, &world());
  // Every rank knows the text; one process holding all four stages' tensors writes the same.
  SampleResult alone = generate(testing_support::tiny_plan({{0, 4}}, {"us-east"}), sc, nullptr);
  EXPECT_EQ(piped.step, 3);
  ASSERT_EQ(piped.generated.size(), 24u);
  EXPECT_EQ(piped.text, alone.text);
}

// Last on purpose: it leaves the ranks out of step (as a real failure would, before the job stops).
TEST(Pipeline, MissingStageTimesOutNamingWhoWaitedForWhom) {
  Plan plan = testing_support::tiny_plan(kFourStages, kTwoRegions, "gpipe");
  TrainConfig cfg = testing_support::tiny_config(1);
  cfg.comm_timeout_s = 2;
  if (world().rank() == 3) return;  // stage 3 never starts
  try {
    run_training(plan, cfg, &world());
    FAIL() << "expected a TimeoutError";
  } catch (const TimeoutError& e) {
    const std::string what = e.what();
    const int r = world().rank();
    // Where (from the interpreter), then what (from the stage's links).
    const std::string R = std::to_string(r), next = std::to_string(r + 1);
    EXPECT_NE(what.find("stage " + R + " (rank " + R + ") at " + R + "B"), std::string::npos) << what;
    EXPECT_NE(what.find(" of step 1: " + R + "RECV_B"), std::string::npos) << what;
    EXPECT_NE(what.find(" waited 2 s for stage " + next + " (rank " + next + ")"), std::string::npos) << what;
  }
}
