// `geopipe report` and `geopipe simulate --html` as a user runs them: the page and its path,
// and bad input (missing or truncated log, a trace of another run, an unknown step) -> exit 2
// with a message naming the file.
#include "../support/run_command.h"
#include "fake_run.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <unistd.h>

namespace {

namespace fs = std::filesystem;
using Result = geopipe::test_support::CommandResult;
using geopipe::test_support::write_fake_run;
using geopipe::test_support::write_text;

class ReportCli : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(GEOPIPE_BINARY_DIR) / "tests" /
           ("report-cli-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    write_fake_run(dir_ / "run");
  }
  void TearDown() override { fs::remove_all(dir_); }
  static Result geopipe(const std::string& args) {
    return geopipe::test_support::run_command(std::string(GEOPIPE_CLI) + " " + args);
  }
  static std::string read(const fs::path& p) {
    std::ifstream in(p);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }
  std::string run() const { return (dir_ / "run").string(); }
  fs::path dir_;
};

TEST_F(ReportCli, WritesThePageIntoTheRunDirectoryAndPrintsItsPath) {
  Result r = geopipe("report " + run());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const fs::path page = dir_ / "run" / "report.html";
  EXPECT_NE(r.output.find("report: " + page.string()), std::string::npos) << r.output;
  const std::string html = read(page);
  EXPECT_EQ(html.rfind("<!DOCTYPE html>", 0), 0u);
  EXPECT_NE(html.find("id=\"chart-loss\""), std::string::npos);
}

TEST_F(ReportCli, OutputFlagAndStepChooseFileAndTimeline) {
  const fs::path out = dir_ / "elsewhere.html";
  Result r = geopipe("report " + run() + " -o " + out.string() + " --step 3");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(read(out).find("data-step=\"3\""), std::string::npos);
  EXPECT_FALSE(fs::exists(dir_ / "run" / "report.html"));
}

TEST_F(ReportCli, MissingLogExitsTwoNamingIt) {
  fs::remove(dir_ / "run" / "train.jsonl");
  Result r = geopipe("report " + run());
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find((dir_ / "run" / "train.jsonl").string() + ": missing"), std::string::npos) << r.output;
}

TEST_F(ReportCli, TruncatedLogExitsTwoNamingIt) {
  write_text(dir_ / "run" / "train.jsonl", geopipe::test_support::fake_log({}) + "{\"step\": 7, \"lo");
  Result r = geopipe("report " + run());
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("train.jsonl: line 7: truncated"), std::string::npos) << r.output;
}

TEST_F(ReportCli, TraceOfAnotherRunExitsTwoNamingIt) {
  // Another plan (2 stages instead of 4) -> another hash.
  const fs::path other = dir_ / "other-plan.json";
  Result p = geopipe("plan --topology " + geopipe::test_support::source_path("examples/topologies/local4.json") +
                     " --job " + geopipe::test_support::source_path("examples/jobs/gpt-tiny.json") +
                     " --stages 2 -o " + other.string());
  ASSERT_EQ(p.exit_code, 0) << p.output;
  const auto plan = geopipe::load_plan(other.string());
  write_text(dir_ / "run" / "trace.json", geopipe::test_support::fake_trace(plan, 2, 0).dump());
  Result r = geopipe("report " + run());
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find((dir_ / "run" / "trace.json").string() + ": otherData.plan_hash: trace of plan " + plan.hash()),
            std::string::npos)
      << r.output;
  EXPECT_FALSE(fs::exists(dir_ / "run" / "report.html")) << "no page from mismatched files";
}

TEST_F(ReportCli, StepNotInTheTraceExitsTwo) {
  Result r = geopipe("report " + run() + " --step 40");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("--step: step: step 40 is not in the trace"), std::string::npos) << r.output;
}

TEST_F(ReportCli, OutputInAMissingFolderExitsTwo) {
  Result r = geopipe("report " + run() + " -o " + (dir_ / "no" / "page.html").string());
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("folder " + (dir_ / "no").string() + " does not exist"), std::string::npos) << r.output;
}

TEST_F(ReportCli, NotARunDirectoryExitsTwo) {
  Result r = geopipe("report " + (dir_ / "nothing-here").string());
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("nothing-here: not a run directory"), std::string::npos) << r.output;
}

// geopipe-train --run-dir (one process, a 1-stage plan): every file the report reads, the plan's
// hash in run.json and the trace, the final checkpoint; an explicit --json-log still wins.
TEST_F(ReportCli, TrainRunDirHoldsEveryFileAndExplicitFlagsWin) {
  const fs::path plan = dir_ / "plan1.json", run = dir_ / "trained", log = dir_ / "elsewhere.jsonl";
  Result p = geopipe("plan --topology " + geopipe::test_support::source_path("examples/topologies/local4.json") +
                     " --job " + geopipe::test_support::source_path("examples/jobs/gpt-tiny.json") +
                     " --stages 1 -o " + plan.string());
  ASSERT_EQ(p.exit_code, 0) << p.output;
  Result t = geopipe::test_support::run_command(
      std::string("env -u GEOPIPE_TOPOLOGY OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 ") + GEOPIPE_TRAIN +
      " --plan " + plan.string() + " --iters 2 --threads 1 --no-progress --run-dir " + run.string() +
      " --json-log " + log.string());
  ASSERT_EQ(t.exit_code, 0) << t.output;
  EXPECT_NE(t.output.find("run directory: " + run.string()), std::string::npos) << t.output;
  for (const char* f : {"plan.json", "run.json", "trace.json", "summary.txt", "checkpoint/manifest.json"})
    EXPECT_TRUE(fs::exists(run / f)) << f;
  EXPECT_FALSE(fs::exists(run / "topology.json")) << "no --topology given";
  EXPECT_FALSE(fs::exists(run / "train.jsonl")) << "--json-log was given explicitly";
  EXPECT_TRUE(fs::exists(log));
  const std::string hash = geopipe::load_plan(plan.string()).hash();
  const auto info = nlohmann::json::parse(read(run / "run.json"));
  EXPECT_EQ(info["plan_hash"], hash);
  EXPECT_EQ(info["world_size"], 1);
  EXPECT_EQ(info["command"][0], GEOPIPE_TRAIN);
  EXPECT_EQ(nlohmann::json::parse(read(run / "trace.json"))["otherData"]["plan_hash"], hash);
  EXPECT_EQ(nlohmann::json::parse(read(run / "checkpoint" / "manifest.json"))["step"], 2);
  EXPECT_EQ(read(run / "summary.txt").rfind("summary: 2 steps", 0), 0u) << read(run / "summary.txt");
  // The report of a one-stage run: no links, one rank in the timeline, no topology to price it.
  write_text(run / "train.jsonl", read(log));
  Result r = geopipe("report " + run.string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string html = read(run / "report.html");
  EXPECT_NE(html.find("One stage: no link between stages."), std::string::npos);
  EXPECT_NE(html.find("data-rank=\"0\""), std::string::npos);
  EXPECT_EQ(html.find("data-rank=\"1\""), std::string::npos);
  EXPECT_NE(html.find("topology.json absent"), std::string::npos);
  EXPECT_NE(html.find("id=\"chart-predicted-time\""), std::string::npos);
  EXPECT_EQ(html.find("id=\"chart-predicted-energy\""), std::string::npos) << "no topology, no electricity";
}

TEST_F(ReportCli, SimulateHtmlHasAJctCdfPerPolicy) {
  const fs::path out = dir_ / "sim.html";
  Result r = geopipe("simulate --topology " + geopipe::test_support::source_path("examples/topologies/aws6.json") +
                     " --jobs 12 --seed 3 --policy bace,fifo --bandwidth-scale 0.5,1 --html " + out.string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("html: " + out.string()), std::string::npos) << r.output;
  const std::string html = read(out);
  for (const char* id : {"chart-jct-cdf-0", "chart-jct-cdf-1", "chart-jct-cost-1", "chart-cost-0", "chart-energy-0",
                         "chart-makespan-1"})
    EXPECT_NE(html.find("id=\"" + std::string(id) + "\""), std::string::npos) << id;
  for (const char* policy : {"bace", "fifo"}) {
    const size_t cdf = html.find("id=\"chart-jct-cdf-1\"");
    const std::string chart = html.substr(cdf, html.find("</svg>", cdf) - cdf);
    EXPECT_NE(chart.find("data-series=\"" + std::string(policy) + "\""), std::string::npos) << policy;
  }
  EXPECT_EQ(html.find("http"), std::string::npos);
}

TEST_F(ReportCli, SimulateHtmlInAMissingFolderIsRefusedBeforeSimulating) {
  Result r = geopipe("simulate --topology " + geopipe::test_support::source_path("examples/topologies/aws6.json") +
                     " --jobs 5 --html " + (dir_ / "no" / "sim.html").string());
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("does not exist"), std::string::npos) << r.output;
}

}  // namespace
