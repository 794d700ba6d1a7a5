// geopipe-fuzz-replay: runs saved inputs through the fuzz harnesses without libFuzzer, so any
// compiler (and every ctest run) replays the seed corpus and every past crash.
//
//   geopipe-fuzz-replay --source-dir SRC        replay the seeds and tests/fuzz/regressions/ of every
//                                               target, checking the outcomes known in advance
//   geopipe-fuzz-replay --write-seeds SRC DIR   write each target's seed corpus to DIR/<target>/
//   geopipe-fuzz-replay TARGET PATH...          replay files (or folders of files) through TARGET
#include <geopipe/fuzz/harness.h>

#include <geopipe/core/config.h>
#include <geopipe/core/error.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using geopipe::fuzz::Outcome;
using geopipe::fuzz::Target;

namespace {

std::vector<uint8_t> read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) throw geopipe::InputError(p.string(), "", "cannot open file for reading");
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Regular files under `p` (or `p` itself), sorted so runs are reproducible.
std::vector<fs::path> files_under(const fs::path& p, const std::string& extension = "") {
  std::vector<fs::path> out;
  if (fs::is_regular_file(p)) return {p};
  if (!fs::is_directory(p)) return out;
  for (const auto& e : fs::recursive_directory_iterator(p))
    if (e.is_regular_file() && (extension.empty() || e.path().extension() == extension)) out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

// The JSON seeds: every JSON file the project ships as an example or test fixture, and the
// JSON-lines step logs among the good ones.
std::vector<fs::path> json_seeds(const fs::path& src) {
  std::vector<fs::path> out;
  for (const char* dir : {"examples/topologies", "examples/jobs", "examples/workloads", "tests/data/good", "tests/data/bad"})
    for (const char* ext : {".json", ".jsonl"})
      for (const auto& f : files_under(src / dir, ext))
        if (f.filename() != "expected.json") out.push_back(f);
  return out;
}

Outcome replay(Target t, const std::vector<uint8_t>& bytes, const std::string& label) {
  geopipe::fuzz::set_input_label(label);
  return geopipe::fuzz::run_one(t, bytes.data(), bytes.size());
}

struct Tally {
  int inputs = 0, accepted = 0, rejected = 0, wrong = 0;
  void add(Outcome o) {
    ++inputs;
    (o == Outcome::kAccepted ? accepted : rejected) += 1;
  }
};

// The outcome each shipped file must have, where it is known: examples and tests/data/good are
// accepted by their own kind; tests/data/bad/expected.json says which kind rejects each bad file.
std::map<std::string, std::pair<Target, Outcome>> known_outcomes(const fs::path& src) {
  std::map<std::string, std::pair<Target, Outcome>> known;
  const std::pair<const char*, Target> good[] = {{"examples/topologies", Target::kTopology},
                                                 {"examples/jobs", Target::kJob},
                                                 {"examples/workloads", Target::kWorkload}};
  for (const auto& [dir, t] : good)
    for (const auto& f : files_under(src / dir, ".json")) known[f.string()] = {t, Outcome::kAccepted};
  for (const auto& f : files_under(src / "tests/data/good", ".json"))
    if (f.filename().string().rfind("plan_", 0) == 0) known[f.string()] = {Target::kPlan, Outcome::kAccepted};
  known[(src / "tests/data/good/report_train.jsonl").string()] = {Target::kStepLog, Outcome::kAccepted};
  known[(src / "tests/data/good/report_trace.json").string()] = {Target::kTrace, Outcome::kAccepted};
  auto expected = geopipe::read_json_file((src / "tests/data/bad/expected.json").string());
  for (auto it = expected.begin(); it != expected.end(); ++it)
    if (auto t = geopipe::fuzz::parse_target(it.value().at("kind").get<std::string>()))
      known[(src / "tests/data/bad" / it.key()).string()] = {*t, Outcome::kRejected};
  return known;
}

int replay_all(const fs::path& src) {
  const auto known = known_outcomes(src);
  const auto seeds = json_seeds(src);
  const auto headers = geopipe::fuzz::header_seeds();
  int failures = 0;
  std::printf("%-10s %8s %9s %9s %12s\n", "target", "inputs", "accepted", "rejected", "regressions");
  for (Target t : geopipe::fuzz::all_targets()) {
    Tally tally;
    auto expect = [&](Outcome got, Outcome want, const std::string& label) {
      if (got == want) return;
      ++failures;
      std::fprintf(stderr, "fuzz replay: %s harness %s %s, expected it to be %s\n", target_name(t),
                   got == Outcome::kAccepted ? "accepted" : "rejected", label.c_str(),
                   want == Outcome::kAccepted ? "accepted" : "rejected");
    };
    if (t == Target::kHeader) {
      // Every encoded seed decodes; any one byte changed, or a byte missing, is refused.
      for (size_t i = 0; i < headers.size(); ++i) {
        const std::string label = "header seed " + std::to_string(i);
        Outcome o = replay(t, headers[i], label);
        tally.add(o);
        expect(o, Outcome::kAccepted, label);
        for (size_t at = 0; at < headers[i].size(); ++at) {
          auto flipped = headers[i];
          flipped[at] ^= 0x5a;
          o = replay(t, flipped, label + " with byte " + std::to_string(at) + " changed");
          tally.add(o);
          expect(o, Outcome::kRejected, label + " with byte " + std::to_string(at) + " changed");
        }
        std::vector<uint8_t> truncated(headers[i].begin(), headers[i].end() - 1);
        o = replay(t, truncated, label + " truncated");
        tally.add(o);
        expect(o, Outcome::kRejected, label + " truncated");
      }
    } else {
      for (const auto& f : seeds) {
        Outcome o = replay(t, read_bytes(f), f.string());
        tally.add(o);
        auto k = known.find(f.string());
        if (k != known.end() && k->second.first == t) expect(o, k->second.second, f.string());
      }
    }
    int regressions = 0;
    for (const auto& f : files_under(src / "tests/fuzz/regressions" / target_name(t))) {
      tally.add(replay(t, read_bytes(f), f.string()));
      ++regressions;
    }
    std::printf("%-10s %8d %9d %9d %12d\n", target_name(t), tally.inputs, tally.accepted, tally.rejected, regressions);
    if (tally.accepted == 0 || tally.rejected == 0) {
      ++failures;
      std::fprintf(stderr, "fuzz replay: the %s seeds must include inputs accepted and rejected\n", target_name(t));
    }
  }
  return failures == 0 ? 0 : 1;
}

int write_seeds(const fs::path& src, const fs::path& dir) {
  for (Target t : geopipe::fuzz::all_targets()) {
    const fs::path out = dir / target_name(t);
    fs::create_directories(out);
    if (t == Target::kHeader) {
      const auto headers = geopipe::fuzz::header_seeds();
      for (size_t i = 0; i < headers.size(); ++i) {
        std::ofstream f(out / ("header-" + std::to_string(i) + ".bin"), std::ios::binary | std::ios::trunc);
        f.write(reinterpret_cast<const char*>(headers[i].data()), static_cast<std::streamsize>(headers[i].size()));
        if (!f) throw geopipe::Error("cannot write " + (out / ("header-" + std::to_string(i) + ".bin")).string());
      }
    } else {
      for (const auto& f : json_seeds(src)) fs::copy_file(f, out / f.filename(), fs::copy_options::overwrite_existing);
    }
  }
  return 0;
}

int usage() {
  std::fprintf(stderr,
               "usage: geopipe-fuzz-replay --source-dir SRC\n"
               "       geopipe-fuzz-replay --write-seeds SRC DIR\n"
               "       geopipe-fuzz-replay TARGET PATH...   (TARGET: topology, job, workload, plan, header, "
               "steplog, trace)\n");
  return geopipe::kExitBadInput;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  try {
    if (args.size() == 2 && args[0] == "--source-dir") return replay_all(args[1]);
    if (args.size() == 3 && args[0] == "--write-seeds") return write_seeds(args[1], args[2]);
    if (args.size() < 2) return usage();
    auto t = geopipe::fuzz::parse_target(args[0]);
    if (!t) return usage();
    Tally tally;
    for (size_t i = 1; i < args.size(); ++i) {
      if (!fs::exists(args[i])) throw geopipe::InputError(args[i], "", "no such file or folder");
      for (const auto& f : files_under(args[i])) tally.add(replay(*t, read_bytes(f), f.string()));
    }
    std::printf("%s: %d inputs replayed, %d accepted, %d rejected\n", target_name(*t), tally.inputs, tally.accepted,
                tally.rejected);
    return 0;
  } catch (const geopipe::InputError& e) {
    for (const auto& d : e.diagnostics()) std::fprintf(stderr, "%s\n", d.str().c_str());
    return geopipe::kExitBadInput;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "geopipe-fuzz-replay: %s\n", e.what());
    return geopipe::kExitFailure;
  }
}
