// GEOPIPE_TEST_FAULT: faults on purpose, for the reliability tests (trainer.h: TestFault).
#include "trainer_parts.h"

#include <geopipe/comm/communicator.h>
#include <geopipe/core/env.h>
#include <geopipe/core/error.h>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>

namespace geopipe::runtime {

namespace {

const char* fault_kind_name(TestFault::Kind k) {
  switch (k) {
    case TestFault::Kind::kKill: return "kill";
    case TestFault::Kind::kStop: return "stop";
    case TestFault::Kind::kKillInCheckpoint: return "kill-in-checkpoint";
    case TestFault::Kind::kCorrupt: return "corrupt";
    case TestFault::Kind::kPerturb: return "perturb";
    case TestFault::Kind::kCut: return "cut";
    case TestFault::Kind::kNone: break;
  }
  return "none";
}

// The test hook's last words, then SIGKILL (nothing after it runs: no destructor, no MPI_Abort).
[[noreturn]] void die_by_sigkill(const TestFault& f, const std::string& where) {
  const auto unix_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                           std::chrono::system_clock::now().time_since_epoch()).count();
  std::fprintf(stderr, "geopipe-train: rank %d: GEOPIPE_TEST_FAULT %s: SIGKILL at step %lld %s (unix_ms %lld)\n",
               f.rank, fault_kind_name(f.kind), static_cast<long long>(f.step), where.c_str(),
               static_cast<long long>(unix_ms));
  std::fflush(stderr);
  std::raise(SIGKILL);
  std::abort();  // not reached
}

}  // namespace

TestFault parse_test_fault(const std::string& text) {
  TestFault f;
  if (text.empty()) return f;
  auto bad = [&](const std::string& why) {
    return InputError(env::kTestFault, "", "\"" + text + "\": " + why +
                                                   " (expected kill|stop|kill-in-checkpoint|corrupt|perturb:rank=R:step=S"
                                                   " or cut:region=NAME:step=S)");
  };
  std::vector<std::string> parts;
  size_t pos = 0;
  while (true) {
    const size_t colon = text.find(':', pos);
    parts.push_back(text.substr(pos, colon - pos));
    if (colon == std::string::npos) break;
    pos = colon + 1;
  }
  if (parts.size() != 3) throw bad("three ':'-separated fields expected");
  if (parts[0] == "kill") f.kind = TestFault::Kind::kKill;
  else if (parts[0] == "stop") f.kind = TestFault::Kind::kStop;
  else if (parts[0] == "kill-in-checkpoint") f.kind = TestFault::Kind::kKillInCheckpoint;
  else if (parts[0] == "corrupt") f.kind = TestFault::Kind::kCorrupt;
  else if (parts[0] == "perturb") f.kind = TestFault::Kind::kPerturb;
  else if (parts[0] == "cut") f.kind = TestFault::Kind::kCut;
  else throw bad("unknown fault \"" + parts[0] + "\"");
  auto number = [&](const std::string& field, const std::string& key, long long min) {
    if (field.rfind(key + "=", 0) != 0) throw bad("expected " + key + "=N, got \"" + field + "\"");
    const std::string digits = field.substr(key.size() + 1);
    char* end = nullptr;
    errno = 0;
    const long long v = std::strtoll(digits.c_str(), &end, 10);
    if (digits.empty() || *end != '\0' || errno != 0 || v < min || v > (1LL << 40))
      throw bad(key + " must be an integer >= " + std::to_string(min) + ", got \"" + digits + "\"");
    return v;
  };
  if (f.kind == TestFault::Kind::kCut) {
    if (parts[1].rfind("region=", 0) != 0 || parts[1].size() == 7)
      throw bad("expected region=NAME, got \"" + parts[1] + "\"");
    f.region = parts[1].substr(7);
  } else {
    f.rank = static_cast<int>(number(parts[1], "rank", 0));
  }
  f.step = number(parts[2], "step", 1);
  return f;
}

namespace detail {

FaultHooks::FaultHooks(const TrainConfig& cfg, int rank, const comm::Communicator* comm) {
  const int world = comm ? comm->size() : 1;
  const bool has_comm = comm != nullptr;
  std::string text;
  if (cfg.test_fault) text = *cfg.test_fault;
  else if (const char* env = std::getenv(env::kTestFault)) text = env;
  fault_ = parse_test_fault(text);
  if (fault_.kind == TestFault::Kind::kCut) {  // every rank cuts its side of the region's links
    check_cut(text, comm);
    mine_ = true;
    return;
  }
  if (fault_.kind != TestFault::Kind::kNone && fault_.rank >= world)
    throw InputError(env::kTestFault, "", "\"" + text + "\": rank " + std::to_string(fault_.rank) +
                                                  " does not exist (the job has " + std::to_string(world) + " ranks)");
  if (fault_.kind == TestFault::Kind::kCorrupt && !has_comm)
    throw InputError(env::kTestFault, "", "\"" + text + "\": a one-stage run sends no messages to corrupt");
  mine_ = fault_.kind != TestFault::Kind::kNone && fault_.rank == rank;
}

void FaultHooks::install(ExecutorOptions& options) const {
  if (!mine_ || (fault_.kind != TestFault::Kind::kKill && fault_.kind != TestFault::Kind::kStop)) return;
  options.after_compute = [f = fault_, stopped = false](int64_t step, const Action& a) mutable {
    if (step + 1 != f.step || stopped) return;
    stopped = true;  // once: continued (to be terminated), the rank must not stop again
    if (f.kind == TestFault::Kind::kKill) die_by_sigkill(f, "after " + to_string(a) + ", mid-iteration");
    std::fprintf(stderr, "geopipe-train: rank %d: GEOPIPE_TEST_FAULT stop: SIGSTOP at step %lld after %s (hung until "
                 "continued)\n", f.rank, static_cast<long long>(f.step), to_string(a).c_str());
    std::fflush(stderr);
    std::raise(SIGSTOP);
  };
}

void FaultHooks::check_cut(const std::string& text, const comm::Communicator* comm) const {
  if (!comm || !comm->emulating())
    throw InputError(env::kTestFault, "", "\"" + text + "\": cutting a region's links needs emulated links "
                                          "(geopipe launch --emulate software or netns)");
  const auto& regions = comm->regions();
  if (std::find(regions.begin(), regions.end(), fault_.region) == regions.end()) {
    std::string names;
    for (const std::string& r : regions)
      if (names.find("\"" + r + "\"") == std::string::npos) names += (names.empty() ? "" : ", ") + ("\"" + r + "\"");
    throw InputError(env::kTestFault, "", "\"" + text + "\": no rank of the job is in region \"" + fault_.region +
                                              "\" (its regions: " + names + ")");
  }
}

void FaultHooks::before_step(int64_t step, comm::Communicator* comm) const {
  if (mine_ && fault_.kind == TestFault::Kind::kCut && step + 1 == fault_.step) {
    spdlog::warn("GEOPIPE_TEST_FAULT cut: the links of region {} are cut as step {} begins", fault_.region, step + 1);
    comm->cut_region(fault_.region);
    return;
  }
  if (!mine_ || fault_.kind != TestFault::Kind::kCorrupt || step + 1 != fault_.step) return;
  spdlog::warn("GEOPIPE_TEST_FAULT corrupt: rank {}'s first send of step {} flips a payload byte", fault_.rank, step + 1);
  comm->inject_fault_for_testing(comm::TestFault::kCorruptPayload);
}

void FaultHooks::after_step(int64_t step, const std::vector<StageChunk>& chunks) const {
  if (!mine_ || fault_.kind != TestFault::Kind::kPerturb || step + 1 != fault_.step) return;
  const NamedTensor& p = chunks.front().model->named_parameters().front();
  spdlog::warn("GEOPIPE_TEST_FAULT perturb: rank {} adds 1e-3 to {} after step {}", fault_.rank, p.name, step + 1);
  at::NoGradGuard no_grad;
  p.tensor.add_(1e-3);
}

std::function<void()> FaultHooks::checkpoint_midway(int64_t step, const std::string& file) const {
  if (!mine_ || fault_.kind != TestFault::Kind::kKillInCheckpoint || step != fault_.step) return {};
  return [f = fault_, file] { die_by_sigkill(f, "half-way through writing " + file + ".tmp"); };
}

}  // namespace detail
}  // namespace geopipe::runtime
