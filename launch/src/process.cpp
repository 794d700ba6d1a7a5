#include <geopipe/launch/process.h>

#include <geopipe/core/error.h>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>

namespace geopipe::launch {

namespace {

using Clock = std::chrono::steady_clock;

std::vector<char*> c_argv(const std::vector<std::string>& argv) {
  std::vector<char*> out;
  for (const auto& a : argv) out.push_back(const_cast<char*>(a.c_str()));
  out.push_back(nullptr);
  return out;
}

int status_code(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

// Reaps `pid` without blocking; returns true and its status when it ended.
bool reap(pid_t pid, int& code) {
  int status = 0;
  pid_t r = waitpid(pid, &status, WNOHANG);
  if (r == pid) {
    code = status_code(status);
    return true;
  }
  if (r < 0 && errno != EINTR) {
    code = -1;
    return true;
  }
  return false;
}

std::atomic<pid_t> g_job{0};
std::atomic<int> g_signal{0};

void forward(int sig, siginfo_t* info, void*) {
  // A terminal's Ctrl-C already reached the job (same process group): forward only what was
  // sent to us alone with kill(2)/sigqueue(3).
  if (info && info->si_code > 0) return;  // kernel-generated (tty)
  pid_t job = g_job.load();
  g_signal.store(sig);
  if (job > 0) kill(job, sig);
}

}  // namespace

CommandResult run_capture(const std::vector<std::string>& argv, double timeout_s) {
  CommandResult result;
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) throw Error(std::string("pipe: ") + std::strerror(errno));
  std::vector<char*> args = c_argv(argv);
  pid_t pid = fork();
  if (pid < 0) throw Error(std::string("fork: ") + std::strerror(errno));
  if (pid == 0) {
    dup2(fds[1], STDOUT_FILENO);
    dup2(fds[1], STDERR_FILENO);
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0) dup2(devnull, STDIN_FILENO);
    execvp(args[0], args.data());
    dprintf(STDERR_FILENO, "cannot run %s: %s\n", args[0], std::strerror(errno));
    _exit(127);
  }
  close(fds[1]);
  const auto deadline = Clock::now() + std::chrono::duration<double>(timeout_s);
  bool timed_out = false;
  char buf[4096];
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) {
      timed_out = true;
      break;
    }
    pollfd p{fds[0], POLLIN, 0};
    int n = poll(&p, 1, static_cast<int>(std::min<long long>(left, 1000)));
    if (n < 0 && errno != EINTR) break;
    if (n <= 0) continue;
    ssize_t got = read(fds[0], buf, sizeof buf);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) break;  // every writer closed: the program (and its children) are done writing
    result.output.append(buf, static_cast<size_t>(got));
  }
  close(fds[0]);
  if (timed_out) kill(pid, SIGKILL);
  int code = -1;
  while (!reap(pid, code)) {
    if (Clock::now() > deadline + std::chrono::seconds(5)) {
      kill(pid, SIGKILL);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  result.exit_code = timed_out ? 124 : code;
  if (timed_out) result.output += "\n(killed after " + std::to_string(timeout_s) + " s)";
  return result;
}

std::string run_checked(const std::vector<std::string>& argv, double timeout_s) {
  CommandResult r = run_capture(argv, timeout_s);
  if (r.exit_code != 0) {
    std::string out = r.output;
    while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
    std::string cmd;
    for (const auto& a : argv) cmd += (cmd.empty() ? "" : " ") + a;
    throw Error("`" + cmd + "` failed with status " + std::to_string(r.exit_code) + (out.empty() ? "" : ": " + out));
  }
  return r.output;
}

int last_forwarded_signal() { return g_signal.load(); }

BlockStopSignals::BlockStopSignals() {
  sigset_t block;
  sigemptyset(&block);
  sigaddset(&block, SIGINT);
  sigaddset(&block, SIGTERM);
  sigaddset(&block, SIGHUP);
  sigset_t old;
  sigprocmask(SIG_BLOCK, &block, &old);
  static_assert(sizeof(old) <= sizeof(saved_), "sigset_t does not fit");
  std::memcpy(saved_, &old, sizeof old);
}

BlockStopSignals::~BlockStopSignals() {
  sigset_t old;
  std::memcpy(&old, saved_, sizeof old);
  sigprocmask(SIG_SETMASK, &old, nullptr);  // a signal that came meanwhile is delivered now
}

int run_job(const std::vector<std::string>& argv, double timeout_s) {
  std::vector<char*> args = c_argv(argv);
  g_signal.store(0);
  struct sigaction sa {}, old_int{}, old_term{}, old_hup{};
  sa.sa_sigaction = forward;
  sa.sa_flags = SA_SIGINFO | SA_RESTART;
  sigemptyset(&sa.sa_mask);
  // Block the signals across fork so none is lost between fork and recording the child's pid.
  sigset_t block, old_mask;
  sigemptyset(&block);
  sigaddset(&block, SIGINT);
  sigaddset(&block, SIGTERM);
  sigaddset(&block, SIGHUP);
  sigprocmask(SIG_BLOCK, &block, &old_mask);
  sigaction(SIGINT, &sa, &old_int);
  sigaction(SIGTERM, &sa, &old_term);
  sigaction(SIGHUP, &sa, &old_hup);
  pid_t pid = fork();
  if (pid < 0) {
    sigprocmask(SIG_SETMASK, &old_mask, nullptr);
    throw Error(std::string("fork: ") + std::strerror(errno));
  }
  if (pid == 0) {
    sigaction(SIGINT, &old_int, nullptr);
    sigaction(SIGTERM, &old_term, nullptr);
    sigaction(SIGHUP, &old_hup, nullptr);
    sigprocmask(SIG_SETMASK, &old_mask, nullptr);
    sigprocmask(SIG_UNBLOCK, &block, nullptr);  // even if the caller blocks them (BlockStopSignals)
    execvp(args[0], args.data());
    dprintf(STDERR_FILENO, "geopipe: cannot run %s: %s\n", args[0], std::strerror(errno));
    _exit(127);
  }
  g_job.store(pid);
  // From here a stop signal goes to the job, also one that arrived while the caller blocked them.
  sigprocmask(SIG_UNBLOCK, &block, nullptr);

  const auto start = Clock::now();
  bool termed = false, killed = false;
  int code = -1;
  while (!reap(pid, code)) {
    double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
    if (timeout_s > 0 && !termed && elapsed > timeout_s) {
      termed = true;
      kill(pid, SIGTERM);
    }
    if (termed && !killed && elapsed > timeout_s + 10) {
      killed = true;
      kill(pid, SIGKILL);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  // The caller's mask first (a blocked signal stays pending for it), then the old handlers.
  sigprocmask(SIG_SETMASK, &old_mask, nullptr);
  g_job.store(0);
  sigaction(SIGINT, &old_int, nullptr);
  sigaction(SIGTERM, &old_term, nullptr);
  sigaction(SIGHUP, &old_hup, nullptr);
  return termed ? 124 : code;
}

}  // namespace geopipe::launch
