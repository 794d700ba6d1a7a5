// Runs `mpiexec -n K --oversubscribe geopipe-train ...` as a user (or CI) runs it, with a
// wall-clock limit: its exit status, its output, when it ended, and the files a run leaves.
#pragma once

#include <geopipe/core/plan.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace geopipe::reliability {

namespace fs = std::filesystem;

inline int64_t unix_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

struct JobResult {
  int exit_code = -1;      // -1: killed by a signal (see signal), or never started
  int signal = 0;
  bool timed_out = false;  // the test's own limit ran out: the job hung
  double seconds = 0;      // wall time
  int64_t end_unix_ms = 0; // when the job was seen to end
  std::string output;      // stdout and stderr together
};

// Runs argv (argv[0] found on PATH or a path) with extra environment variables set and the
// fault-related ones cleared, in its own process group; after `limit_s` the group gets SIGTERM,
// then SIGKILL. Output goes through a file (no pipe to fill up).
inline JobResult run_job(const std::vector<std::string>& argv, const std::vector<std::pair<std::string, std::string>>& env,
                         const std::string& log_file, double limit_s) {
  JobResult r;
  const auto t0 = std::chrono::steady_clock::now();
  pid_t pid = fork();
  if (pid == 0) {
    setpgid(0, 0);
    int fd = ::open(log_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) _exit(126);
    dup2(fd, 1);
    dup2(fd, 2);
    for (const char* v : {"GEOPIPE_TEST_FAULT", "GEOPIPE_TOPOLOGY", "GEOPIPE_EMULATE", "GEOPIPE_REGION",
                          "GEOPIPE_LINK_EVENTS", "GEOPIPE_PLAN", "OMPI_MCA_orte_enable_recovery"})
      unsetenv(v);
    setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
    setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
    for (const auto& [k, v] : env) setenv(k.c_str(), v.c_str(), 1);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execvp(args[0], args.data());
    _exit(127);
  }
  if (pid < 0) return r;
  setpgid(pid, pid);
  int status = 0;
  bool term_sent = false;
  auto term_at = t0 + std::chrono::duration<double>(limit_s);
  while (true) {
    pid_t w = waitpid(pid, &status, WNOHANG);
    if (w == pid) break;
    const auto now = std::chrono::steady_clock::now();
    if (!term_sent && now > term_at) {
      r.timed_out = true;
      kill(-pid, SIGTERM);
      term_sent = true;
    } else if (term_sent && now > term_at + std::chrono::seconds(5)) {
      kill(-pid, SIGKILL);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  r.end_unix_ms = unix_ms();
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (term_sent) kill(-pid, SIGKILL);  // leave nothing behind
  if (WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) r.signal = WTERMSIG(status);
  std::ifstream in(log_file);
  std::stringstream ss;
  ss << in.rdbuf();
  r.output = ss.str();
  return r;
}

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// (step, loss) of every step line of a --json-log file, in file order (the supervisor's restart
// lines are not steps).
inline std::vector<std::pair<int64_t, double>> logged_losses(const std::string& path) {
  std::vector<std::pair<int64_t, double>> out;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    auto j = nlohmann::json::parse(line);
    if (j.contains("restart")) continue;
    out.emplace_back(j.at("step").get<int64_t>(), j.at("loss").get<double>());
  }
  return out;
}

inline std::vector<nlohmann::json> logged_lines(const std::string& path) {
  std::vector<nlohmann::json> out;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) out.push_back(nlohmann::json::parse(line));
  return out;
}

// Every regular file under `dir` with its bytes: a run that must write nothing leaves this equal.
inline std::map<std::string, std::string> snapshot(const std::string& dir) {
  std::map<std::string, std::string> files;
  if (!fs::exists(dir)) return files;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file()) files[fs::relative(e.path(), dir).string()] = read_file(e.path().string());
  return files;
}

// The "unix_ms T" the GEOPIPE_TEST_FAULT hook prints right before it raises SIGKILL; -1 if absent.
inline int64_t fault_unix_ms(const std::string& output) {
  const auto p = output.find("GEOPIPE_TEST_FAULT");
  if (p == std::string::npos) return -1;
  const auto q = output.find("(unix_ms ", p);
  if (q == std::string::npos) return -1;
  return std::stoll(output.substr(q + 9));
}

inline void flip_bit(const std::string& path, size_t byte, int bit) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(static_cast<std::streamoff>(byte));
  char c = 0;
  f.read(&c, 1);
  c = static_cast<char>(c ^ (1 << bit));
  f.seekp(static_cast<std::streamoff>(byte));
  f.write(&c, 1);
}

}  // namespace geopipe::reliability
