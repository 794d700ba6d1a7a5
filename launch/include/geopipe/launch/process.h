// Starting programs from an argument vector (fork/exec, never a shell string built from input).
#pragma once

#include <string>
#include <vector>

namespace geopipe::launch {

struct CommandResult {
  int exit_code = -1;  // 128 + signal when killed by a signal, 124 when it timed out
  std::string output;  // stdout and stderr together
};

// Runs argv[0] (looked up in PATH) with its output captured. After timeout_s it is killed and
// the result is 124; nothing waits forever.
CommandResult run_capture(const std::vector<std::string>& argv, double timeout_s = 30);

// run_capture, and an Error naming the command and its output when it does not exit 0.
std::string run_checked(const std::vector<std::string>& argv, double timeout_s = 30);

// Runs the job in the foreground (stdin/stdout/stderr inherited) and returns its exit status
// (128 + signal when killed by a signal). SIGINT, SIGTERM and SIGHUP sent to this process with
// kill(2) are forwarded to the job; a terminal's Ctrl-C reaches the job directly (same
// process group) and is not sent twice. timeout_s > 0: after it, SIGTERM, then SIGKILL 10 s
// later, and the status is 124.
int run_job(const std::vector<std::string>& argv, double timeout_s = 0);

// While alive, SIGINT/SIGTERM/SIGHUP are held back (a run_job inside still receives and forwards
// them): set-up and tear-down of an emulation finish before a stop signal acts, and one that came
// meanwhile is delivered when the guard ends.
class BlockStopSignals {
 public:
  BlockStopSignals();
  ~BlockStopSignals();
  BlockStopSignals(const BlockStopSignals&) = delete;
  BlockStopSignals& operator=(const BlockStopSignals&) = delete;

 private:
  alignas(8) unsigned char saved_[128];
};

// The signal that interrupted the last run_job (0 if none): a caller cleans up, then may
// re-raise it.
int last_forwarded_signal();

}  // namespace geopipe::launch
