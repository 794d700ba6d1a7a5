// Runs a program as a user runs it, for tests of command-line tools: its exit code and its
// stdout and stderr together.
#pragma once

#include <array>
#include <cstdio>
#include <string>
#include <sys/wait.h>

namespace geopipe::test_support {

struct CommandResult {
  int exit_code = -1;  // -1 when the program did not exit normally
  std::string output;  // stdout and stderr together
};

inline CommandResult run_command(const std::string& command_line) {
  CommandResult r;
  FILE* p = popen((command_line + " 2>&1").c_str(), "r");
  if (!p) return r;
  std::array<char, 4096> buf{};
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.output.append(buf.data(), n);
  int status = pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

}  // namespace geopipe::test_support
