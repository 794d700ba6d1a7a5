#include "failure_report.h"

#include <geopipe/core/env.h>
#include <geopipe/core/error.h>
#include <geopipe/core/failure.h>
#include <geopipe/runtime/trainer.h>

#include <nlohmann/json.hpp>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>

#include <fcntl.h>
#include <unistd.h>

namespace geopipe::train {

namespace {

// What the handler needs, rendered before any signal can come (it may only call
// async-signal-safe functions: open, write, close, rename, signal, raise).
// The record around its "peer" value, which is read when the signal comes: whom the rank was
// blocked on then (runtime::rank_waiting_for), so the supervisor can follow a chain of waits.
FailureRecord g_self;
char g_before_peer[2048], g_after_peer[1024], g_path[1024], g_tmp[1040];
size_t g_before_len = 0, g_after_len = 0;

void write_int(int fd, int v) {
  char buf[16];
  int n = 0;
  const bool negative = v < 0;
  unsigned u = negative ? static_cast<unsigned>(-(v + 1)) + 1u : static_cast<unsigned>(v);
  do {
    buf[sizeof buf - 1 - n++] = static_cast<char>('0' + u % 10);
    u /= 10;
  } while (u != 0 && n < 15);
  if (negative) buf[sizeof buf - 1 - n++] = '-';
  [[maybe_unused]] const ssize_t w = ::write(fd, buf + sizeof buf - n, static_cast<size_t>(n));
}

void on_sigterm(int sig) {
  const int fd = ::open(g_tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd >= 0) {
    [[maybe_unused]] ssize_t n = ::write(fd, g_before_peer, g_before_len);
    write_int(fd, runtime::rank_waiting_for());
    n = ::write(fd, ",\"waited_s\":", 12);
    const int64_t ms = runtime::rank_waited_ms();
    write_int(fd, static_cast<int>(ms / 1000));
    n = ::write(fd, ".", 1);
    const char frac[3] = {static_cast<char>('0' + ms % 1000 / 100), static_cast<char>('0' + ms % 100 / 10),
                          static_cast<char>('0' + ms % 10)};
    n = ::write(fd, frac, 3);
    n = ::write(fd, g_after_peer, g_after_len);
    ::close(fd);
    ::rename(g_tmp, g_path);
  }
  std::signal(sig, SIG_DFL);
  std::raise(sig);
}

const char* failure_dir() {
  const char* dir = std::getenv(env::kFailureDir);
  return dir && *dir ? dir : nullptr;
}

}  // namespace

void arm_failure_report(int rank, const Plan& plan) {
  const char* dir = failure_dir();
  g_self.rank = rank;
  const int stage = plan.stage_of_rank(rank);
  g_self.stage = stage;
  g_self.region = stage >= 0 ? plan.stages[static_cast<size_t>(stage)].region : "";
  if (!dir) return;
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);  // the handler cannot
  constexpr int kMark = 987654321;  // where the peer goes
  const std::string text = nlohmann::json{{"rank", g_self.rank},
                                          {"region", g_self.region},
                                          {"stage", g_self.stage},
                                          {"kind", "terminated"},
                                          {"peer", kMark},
                                          {"message", "terminated by the launcher (another rank failed)"}}
                               .dump() +
                           "\n";
  const size_t at = text.find(std::to_string(kMark));
  const std::string before = text.substr(0, at), after = text.substr(at + std::to_string(kMark).size());
  const std::string path = failure_record_path(dir, rank), tmp = path + ".tmp";
  if (before.size() >= sizeof g_before_peer || after.size() >= sizeof g_after_peer || path.size() + 5 >= sizeof g_path)
    return;  // no record rather than a torn one
  std::memcpy(g_before_peer, before.data(), before.size());
  g_before_len = before.size();
  std::memcpy(g_after_peer, after.data(), after.size());
  g_after_len = after.size();
  std::snprintf(g_path, sizeof g_path, "%s", path.c_str());
  std::snprintf(g_tmp, sizeof g_tmp, "%s", tmp.c_str());
  std::signal(SIGTERM, on_sigterm);
}

void report_failure(int rank, const std::exception& error) {
  const char* dir = failure_dir();
  if (!dir) return;
  FailureRecord r = g_self;
  r.rank = rank;
  r.message = error.what();
  if (const auto* t = dynamic_cast<const TimeoutError*>(&error)) {
    r.kind = "timeout";
    r.peer = t->peer();
    r.waited_s = static_cast<double>(runtime::rank_waited_ms()) / 1e3;
  } else {
    r.kind = dynamic_cast<const InputError*>(&error) ? "bad-input" : "error";
  }
  std::signal(SIGTERM, SIG_DFL);  // this record, not "terminated", is the rank's last word
  try {
    write_failure_record(dir, r);
  } catch (const std::exception& e) {  // the job stops anyway; the supervisor will count this rank as dead
    std::fprintf(stderr, "geopipe-train: rank %d: %s (the failure was: %s)\n", rank, e.what(), error.what());
  }
}

}  // namespace geopipe::train
