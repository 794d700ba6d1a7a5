// The `geopipe` binary, run as a user runs it: exit codes and messages.
#include <geopipe/core/config.h>

#include "../support/run_command.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <string>

namespace {

using Result = geopipe::test_support::CommandResult;

Result run(const std::string& args) { return geopipe::test_support::run_command(std::string(GEOPIPE_CLI) + " " + args); }

std::string src(const std::string& rel) { return std::string(GEOPIPE_SOURCE_DIR) + "/" + rel; }

}  // namespace

TEST(CliValidate, ShippedFilesAreValid) {
  Result r = run("validate " + src("examples/topologies/aws6.json") + " " + src("examples/topologies/local4.json") + " " +
                 src("examples/topologies/gcp5.json") + " " + src("examples/topologies/aws-mixed5.json") + " " +
                 src("examples/jobs/gpt-tiny.json") + " " + src("examples/jobs/gpt-1.3b.json") + " " +
                 src("examples/jobs/llama-7b.json") + " " + src("examples/workloads/mixed6.json"));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("topology \"aws6\": 6 regions"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("topology \"gcp5\": 5 regions, 144 GPUs, 10 links"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("topology \"aws-mixed5\": 5 regions, 144 GPUs, 14 links"), std::string::npos) << r.output;
}

TEST(CliValidate, EachBadFixtureExitsTwoNamingTheField) {
  auto expected = geopipe::read_json_file(src("tests/data/bad/expected.json"));
  for (auto it = expected.begin(); it != expected.end(); ++it) {
    SCOPED_TRACE(it.key());
    const std::string kind = it.value()["kind"];
    const std::string path = it.value()["path"];
    Result r = run("validate --kind " + kind + " " + src("tests/data/bad/" + it.key()));
    EXPECT_EQ(r.exit_code, 2) << r.output;
    EXPECT_NE(r.output.find(it.key()), std::string::npos) << r.output;
    if (!path.empty()) {
      EXPECT_NE(r.output.find(": " + path + ":"), std::string::npos) << r.output;
    }
  }
}

TEST(CliValidate, ReportsAllBadFilesInOneRun) {
  Result r = run("validate " + src("tests/data/bad/topology_negative_bandwidth.json") + " " +
                 src("examples/jobs/gpt-tiny.json") + " " + src("tests/data/bad/job_unknown_dtype.json"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("links[3].gbps"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("model.dtype"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("gpt-tiny.json: ok"), std::string::npos) << r.output;
}

TEST(CliValidate, PlanCheckedAgainstATopologyRefusesAHashMismatch) {
  Result r = run("validate --topology " + src("examples/topologies/local4.json") + " " +
                 src("tests/data/good/plan_local4_manual.json"));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("provenance.topology_hash"), std::string::npos) << r.output;
}

TEST(Cli, BadFlagOrMissingFileExitsTwo) {
  EXPECT_EQ(run("validate --kind banana " + src("examples/jobs/gpt-tiny.json")).exit_code, 2);
  EXPECT_EQ(run("validate /nonexistent/file.json").exit_code, 2);
  EXPECT_EQ(run("frobnicate").exit_code, 2);
  EXPECT_EQ(run("version").exit_code, 0);
  Result help = run("validate --help");
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_NE(help.output.find("--topology"), std::string::npos);
}
