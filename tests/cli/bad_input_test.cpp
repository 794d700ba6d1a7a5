// Bad input to `geopipe plan|simulate|launch|validate` and `geopipe-train`, run as a user runs
// them: every flag given a bad value (wrong type, out of range, missing file, unknown name), a
// plan made for another topology, a plan with overlapping layer ranges, and a rank count that
// does not match the plan. Each must exit 2 with a message naming the flag, file or field.
#include "../support/cli_programs.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>


namespace {

namespace fs = std::filesystem;
using Result = geopipe::test_support::CommandResult;

using geopipe::test_support::source_path;

// One case: arguments after the program name, and what the message must name.
struct Case {
  std::string args;
  std::string names;
};

class BadInput : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(geopipe::test_support::make_suite_dir("cli-bad-input"));
    // Plans made for local4 by the real planner: four stages (one rank each) and one stage.
    Result four = geopipe::test_support::plan_on_local4("examples/jobs/gpt-tiny.json", 4, plan4());
    ASSERT_EQ(four.exit_code, 0) << four.output;
    Result one = geopipe::test_support::plan_on_local4("examples/jobs/gpt-tiny.json", 1, plan1());
    ASSERT_EQ(one.exit_code, 0) << one.output;
  }
  static void TearDownTestSuite() {
    fs::remove_all(*dir_);
    delete dir_;
  }

  static Result geopipe(const std::string& args) { return geopipe::test_support::run_geopipe(args); }
  static Result train(const std::string& args) { return geopipe::test_support::run_train(args); }
  static std::string local4() { return source_path("examples/topologies/local4.json"); }
  static std::string aws6() { return source_path("examples/topologies/aws6.json"); }
  static std::string tiny() { return source_path("examples/jobs/gpt-tiny.json"); }
  static std::string data() { return source_path("examples/gpt/data/kjv-pentateuch.txt"); }
  static std::string overlapping() { return source_path("tests/data/bad/plan_overlapping_layers.json"); }
  static std::string plan4() { return *dir_ + "/plan4.json"; }
  static std::string plan1() { return *dir_ + "/plan1.json"; }
  static std::string missing() { return *dir_ + "/no-such-file.json"; }
  static std::string missing_folder() { return *dir_ + "/no-such-folder/out.json"; }

  // Runs every case through `run` and checks exit code 2 and the named flag, file or field.
  template <class Run>
  static void expect_all_refused(const std::vector<Case>& cases, Run run) {
    for (const auto& c : cases) {
      SCOPED_TRACE(c.args);
      Result r = run(c.args);
      EXPECT_EQ(r.exit_code, 2) << r.output;
      EXPECT_NE(r.output.find(c.names), std::string::npos) << "message does not name " << c.names << ":\n" << r.output;
    }
  }

  static std::string* dir_;
};

std::string* BadInput::dir_ = nullptr;

TEST_F(BadInput, PlanRefusesEveryBadFlagValue) {
  const std::string ok = " --topology " + local4() + " --job " + tiny();
  expect_all_refused(
      {
          {"--topology " + missing() + " --job " + tiny(), "--topology"},
          {"--topology " + tiny() + " --job " + tiny(), "gpt-tiny.json: micro_batch: unknown field"},
          {"--topology " + local4() + " --job " + missing(), "--job"},
          {"--topology " + local4() + " --job " + local4(), "local4.json: regions: unknown field"},
          {ok + " --policy nope", "--policy"},
          {ok + " --stages 0", "--stages"},
          {ok + " --stages two", "--stages"},
          {ok + " --stages 100", "--stages"},
          {ok + " --codec zip", "--codec"},
          {ok + " --schedule 2f2b", "--schedule"},
          {ok + " --max-slowdown -1", "--max-slowdown"},
          {ok + " --max-slowdown lots", "--max-slowdown"},
          {ok + " --efficiency 2", "--efficiency"},
          {ok + " --profile " + missing(), "--profile"},
          {ok + " --profile " + tiny(), "gpt-tiny.json"},
          {ok + " -o " + missing_folder(), "no-such-folder does not exist"},
          {ok + " --no-such-flag", "--no-such-flag"},
      },
      [](const std::string& args) { return geopipe("plan " + args); });
}

TEST_F(BadInput, SimulateRefusesEveryBadFlagValue) {
  const std::string ok = " --topology " + local4() + " --jobs 3";
  expect_all_refused(
      {
          {"--topology " + missing(), "--topology"},
          {"--topology " + tiny(), "gpt-tiny.json"},
          {ok + " --workload " + missing(), "--workload"},
          {ok + " --workload " + tiny(), "gpt-tiny.json: model: unknown field"},
          {ok + " --policy nope", "--policy"},
          {ok + " --policy exact", "--policy"},
          {ok + " --bandwidth-scale -1", "--bandwidth-scale"},
          {ok + " --bandwidth-scale half", "--bandwidth-scale"},
          {ok + " --seed -1", "--seed"},
          {ok + " --seed abc", "--seed"},
          {"--topology " + local4() + " --jobs 0", "--jobs"},
          {"--topology " + local4() + " --jobs many", "--jobs"},
          {ok + " --load 0", "--load"},
          {ok + " --max-slowdown -0.5", "--max-slowdown"},
          {ok + " --efficiency 0", "--efficiency"},
          {ok + " --json " + missing_folder(), "--json"},
          {ok + " --csv " + missing_folder(), "--csv"},
      },
      [](const std::string& args) { return geopipe("simulate " + args); });
}

TEST_F(BadInput, LaunchRefusesEveryBadFlagValue) {
  const std::string ok = " --topology " + local4() + " --ranks-per-region 1 --dry-run";
  expect_all_refused(
      {
          {"launch --plan " + plan4() + " --dry-run -- /bin/true", "--topology"},
          {"launch --topology " + missing() + " --plan " + plan4() + " --dry-run -- /bin/true", "no-such-file.json"},
          {"launch --topology " + local4() + " --plan " + missing() + " --dry-run -- /bin/true", "no-such-file.json"},
          {"launch --topology " + local4() + " --plan " + plan4() + " --ranks-per-region 1 --dry-run -- /bin/true",
           "--plan"},
          {"launch --topology " + local4() + " --ranks-per-region -1 --dry-run -- /bin/true", "--ranks-per-region"},
          {"launch --topology " + local4() + " --ranks-per-region two --dry-run -- /bin/true", "--ranks-per-region"},
          {"launch" + ok + " --emulate banana -- /bin/true", "--emulate"},
          {"launch" + ok + " --hostfile " + missing() + " -- /bin/true", "no-such-file.json"},
          {"launch" + ok + " --iface nowhere=eth0 -- /bin/true", "--iface"},
          {"launch" + ok + " --timeout -5 -- /bin/true", "--timeout"},
          {"launch" + ok + " --timeout soon -- /bin/true", "--timeout"},
          {"launch" + ok, "PROGRAM"},
          {"launch" + ok + " --slurm -- /bin/true", "--slurm"},
          {"launch" + ok + " --mpirun " + missing() + " -- /bin/true", "--mpirun"},
          {"launch" + ok + " --max-restarts -1 -- /bin/true", "--max-restarts"},
          {"launch" + ok + " --max-restarts many -- /bin/true", "--max-restarts"},
          {"launch" + ok + " --replan -- /bin/true", "--replan: replan: needs --max-restarts N (N >= 1)"},
          {"launch" + ok + " --max-restarts 1 --restart-backoff -1 -- /bin/true", "--restart-backoff"},
          {"launch" + ok + " --max-restarts 1 --dry-run -- /bin/true", "restarts a running job: not with --dry-run"},
          {"launch --topology " + local4() + " --plan " + plan4() + " --max-restarts 1 --replan -- /bin/true",
           "needs --plan and the program's own --plan argument (which it replaces)"},
      },
      geopipe);
}

TEST_F(BadInput, ValidateRefusesEveryBadFlagValue) {
  expect_all_refused(
      {
          {"validate --kind banana " + tiny(), "--kind"},
          {"validate " + missing(), "no-such-file.json"},
          {"validate --topology " + missing() + " " + plan4(), "--topology"},
          {"validate --topology " + tiny() + " " + plan4(), "gpt-tiny.json"},
          {"validate --kind plan " + tiny(), "gpt-tiny.json"},
      },
      geopipe);
}

TEST_F(BadInput, TrainRefusesEveryBadFlagValue) {
  const std::string ok = "--plan " + plan1() + " --data " + data() + " --threads 1 --iters 1 --no-progress";
  expect_all_refused(
      {
          {"--plan " + missing() + " --data " + data(), "--plan"},
          {"--plan " + local4() + " --data " + data(), "local4.json"},
          {"--plan " + plan1() + " --data " + missing(), "--data"},
          {ok + " --iters -1", "--iters"},
          {ok + " --iters ten", "--iters"},
          {ok + " --seed -1", "--seed"},
          {ok + " --dtype fp64", "--dtype"},
          {ok + " --codec zip", "--codec"},
          {ok + " --schedule 2f2b", "--schedule"},
          {ok + " --schedule-file " + missing(), "--schedule-file"},
          {ok + " --data-format xml", "--data-format"},
          {ok + " --val-fraction 1.5", "val_fraction"},
          {ok + " --eval-every -1", "--eval-every"},
          {ok + " --eval-batches 0", "--eval-batches"},
          {ok + " --json-log " + missing_folder(), "--json-log"},
          {ok + " --checkpoint-every -1", "--checkpoint-every"},
          {ok + " --resume", "--resume"},
          {ok + " --resume --checkpoint-dir " + *dir_, "manifest.json"},
          {ok + " --comm-timeout 0", "--comm-timeout"},
          {ok + " --device tpu", "--device"},
          {ok + " --topology " + missing(), "no-such-file.json"},
          {ok + " --lr 0", "--lr"},
          {ok + " --lr fast", "--lr"},
          {ok + " --min-lr -1", "--min-lr"},
          {ok + " --warmup -1", "--warmup"},
          {ok + " --weight-decay -0.1", "--weight-decay"},
          {ok + " --grad-clip -1", "--grad-clip"},
          {ok + " --threads -1", "--threads"},
          {ok + " --no-such-flag", "--no-such-flag"},
          {ok + " --checkpoint-at-start", "--checkpoint-dir"},
          {ok + " --sample 0", "--sample"},
          {ok + " --sample 5", "--checkpoint-dir"},
          {ok + " --sample 5 --checkpoint-dir " + *dir_, "manifest.json"},
          {ok + " --prompt hello", "--sample"},
          {ok + " --sample 5 --temperature -1", "--temperature"},
          {ok + " --sample 5 --top-k -2", "--top-k"},
          {ok + " --shard-optimizer", "--shard-optimizer: shard-optimizer: needs a plan with replicas (this one has 1 rank per stage)"},
      },
      train);
}

TEST_F(BadInput, PlanForAnotherTopologyIsRefusedByValidateLaunchAndTrain) {
  const std::string field = "provenance.topology_hash";
  expect_all_refused(
      {
          {"validate --topology " + aws6() + " " + plan4(), field},
          {"launch --topology " + aws6() + " --plan " + plan4() + " --dry-run -- /bin/true", field},
      },
      geopipe);
  expect_all_refused({{"--plan " + plan1() + " --data " + data() + " --topology " + aws6(), field}}, train);
}

TEST_F(BadInput, PlanWithOverlappingLayersIsRefusedByValidateLaunchAndTrain) {
  const std::string field = "stages[1].layers";
  expect_all_refused(
      {
          {"validate " + overlapping(), field},
          {"launch --topology " + local4() + " --plan " + overlapping() + " --dry-run -- /bin/true", field},
      },
      geopipe);
  expect_all_refused({{"--plan " + overlapping() + " --data " + data(), field}}, train);
}

TEST_F(BadInput, TrainStartedWithFewerRanksThanThePlanExitsTwoAndLeavesNoRank) {
  // The plan path is unique to this test run, so no rank of it may be left once mpiexec returns.
  const std::string args = "--plan " + plan4() + " --data " + data() + " --threads 1 --no-progress";
  for (const std::string& topology : std::vector<std::string>{"", " --topology " + local4()}) {
    SCOPED_TRACE(topology.empty() ? "without --topology" : "with --topology");
    Result r = geopipe::test_support::run_command(std::string(GEOPIPE_MPIEXEC) + " -n 3 --oversubscribe " +
                                                  GEOPIPE_TRAIN + " " + args + topology);
    EXPECT_EQ(r.exit_code, 2) << r.output;
    EXPECT_NE(r.output.find("plan needs 4 ranks"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("plan4.json"), std::string::npos) << r.output;
    // "[/]..." matches the path but not this pgrep's own shell command line.
    Result left = geopipe::test_support::run_command("pgrep -f '[/]" + plan4().substr(1) + "'");
    EXPECT_EQ(left.exit_code, 1) << "ranks still running:\n" << left.output;
  }
}

}  // namespace
