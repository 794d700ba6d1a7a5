// The project's programs run as a user runs them, for the command-line test suites (targets that
// define GEOPIPE_CLI and GEOPIPE_TRAIN), and the scratch folder such a suite writes its plans to.
#pragma once

#include "run_command.h"

#include <filesystem>
#include <string>

#include <unistd.h>

namespace geopipe::test_support {

inline std::string source_path(const std::string& rel) { return std::string(GEOPIPE_SOURCE_DIR) + "/" + rel; }

inline CommandResult run_geopipe(const std::string& args) {
  return run_command(std::string(GEOPIPE_CLI) + " " + args);
}
// Without the launcher's GEOPIPE_TOPOLOGY, so a test's flags alone decide.
inline CommandResult run_train(const std::string& args) {
  return run_command("env -u GEOPIPE_TOPOLOGY " + std::string(GEOPIPE_TRAIN) + " " + args);
}

// A fresh folder under the build tree for one suite (named after it and this process).
inline std::string make_suite_dir(const std::string& suite) {
  const std::string dir = std::string(GEOPIPE_BINARY_DIR) + "/tests/" + suite + "-" + std::to_string(::getpid());
  std::filesystem::create_directories(dir);
  return dir;
}

// `geopipe plan` of one of the shipped jobs on local4 with `stages` stages, written to `out`.
inline CommandResult plan_on_local4(const std::string& job, int stages, const std::string& out) {
  return run_geopipe("plan --topology " + source_path("examples/topologies/local4.json") + " --job " +
                     source_path(job) + " --stages " + std::to_string(stages) + " -o " + out);
}

}  // namespace geopipe::test_support
