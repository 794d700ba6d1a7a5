#include <geopipe/fuzz/harness.h>

#include <geopipe/comm/crc32c.h>
#include <geopipe/comm/header.h>
#include <geopipe/core/config.h>
#include <geopipe/core/error.h>
#include <geopipe/core/plan.h>
#include <geopipe/core/run_dir.h>
#include <geopipe/report/report.h>

#include <nlohmann/json.hpp>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <limits>

#include <unistd.h>

namespace geopipe::fuzz {

namespace {

using nlohmann::json;

std::string& input_label() {
  static std::string label = "(libFuzzer input)";
  return label;
}

// A bug: say which harness and which input, then abort so libFuzzer saves the input and the
// replay tool fails.
[[noreturn]] void bug(Target target, const std::string& what) {
  std::fprintf(stderr, "geopipe-fuzz: BUG in the %s harness, input %s: %s\n", target_name(target),
               input_label().c_str(), what.c_str());
  std::fflush(stderr);
  std::abort();
}

// The JSON harnesses read a real file, as the command-line tools do: one per process.
// Never destroyed: the exit handler that removes the file runs after static destructors would.
const std::string& input_path() {
  static const std::string& path = *[] {
    const char* dir = std::getenv("TMPDIR");
    auto* p = new std::string(std::string(dir && *dir ? dir : "/tmp") + "/geopipe-fuzz-" + std::to_string(::getpid()) +
                              ".json");
    std::atexit([] { std::remove(input_path().c_str()); });
    return p;
  }();
  return path;
}

void write_input(Target target, const uint8_t* data, size_t size) {
  FILE* f = std::fopen(input_path().c_str(), "wb");
  if (!f) bug(target, "cannot write the scratch file " + input_path());
  const bool ok = (size == 0 || std::fwrite(data, 1, size, f) == size);
  if (std::fclose(f) != 0 || !ok) bug(target, "cannot write the scratch file " + input_path());
}

// A rejection must be an InputError with exit code 2 whose every diagnostic names the file.
void check_rejection(Target target, const InputError& e) {
  if (e.exit_code() != kExitBadInput) bug(target, "InputError with exit code " + std::to_string(e.exit_code()));
  if (e.diagnostics().empty()) bug(target, "InputError without a diagnostic");
  for (const auto& d : e.diagnostics()) {
    if (d.file != input_path()) bug(target, "diagnostic names \"" + d.file + "\", not the input file: " + d.str());
    if (d.message.empty()) bug(target, "diagnostic without a message: " + d.str());
  }
}

// An accepted document written back by to_json must read again, to the same document.
template <class Parse>
void check_round_trip(Target target, const json& written, Parse parse) {
  json again;
  try {
    again = to_json(parse(json::parse(written.dump()), "round-trip.json"));
  } catch (const InputError& e) {
    bug(target, "accepted input does not re-read from its own to_json: " + e.diagnostics().front().str() +
                    "\nto_json: " + written.dump());
  }
  if (again != written)
    bug(target, "to_json -> parse -> to_json changed the document:\n  " + written.dump() + "\n  " + again.dump());
}

// An integer of the document as written (-1 for one beyond long long).
long long int_at(const json& v) {
  if (v.is_number_unsigned())
    return v.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<long long>::max()) ? -1 : v.get<long long>();
  return v.get<long long>();
}

// Promises parse_plan makes about what it accepts (plan.h), checked on the parsed plan, and the
// integers it kept checked against the document it read.
void check_plan_promises(const Plan& p, const json& doc) {
  const Target t = Target::kPlan;
  if (p.stages.empty()) bug(t, "accepted a plan without stages");
  int expected_begin = 0;
  for (size_t i = 0; i < p.stages.size(); ++i) {
    const auto& s = p.stages[i];
    if (s.index != static_cast<int>(i)) bug(t, "stage " + std::to_string(i) + " has index " + std::to_string(s.index));
    if (s.layer_begin != expected_begin || s.layer_end <= s.layer_begin)
      bug(t, "stage " + std::to_string(i) + " layers [" + std::to_string(s.layer_begin) + ", " +
                 std::to_string(s.layer_end) + ") do not continue at " + std::to_string(expected_begin));
    expected_begin = s.layer_end;
    const json& sj = doc["stages"][i];
    if (int_at(sj["layers"][0]) != s.layer_begin || int_at(sj["layers"][1]) != s.layer_end)
      bug(t, "stage " + std::to_string(i) + " layers " + sj["layers"].dump() + " were read as [" +
                 std::to_string(s.layer_begin) + ", " + std::to_string(s.layer_end) + ")");
    for (size_t k = 0; k < s.ranks.size(); ++k)
      if (int_at(sj["ranks"][k]) != s.ranks[k])
        bug(t, "stage " + std::to_string(i) + " rank " + sj["ranks"][k].dump() + " was read as " +
                   std::to_string(s.ranks[k]));
  }
  if (expected_begin != p.job.model.layers)
    bug(t, "stages end at layer " + std::to_string(expected_begin) + " of " + std::to_string(p.job.model.layers));
  for (int r = 0; r < p.world_size(); ++r)
    if (p.stage_of_rank(r) < 0) bug(t, "rank " + std::to_string(r) + " of " + std::to_string(p.world_size()) + " has no stage");
  for (int k = 0; k + 1 < p.num_stages(); ++k)
    if (!p.link_between(k, k + 1)) bug(t, "no link from stage " + std::to_string(k));
  for (size_t k = 0; k < p.schedule.warmup.size(); ++k)
    if (int_at(doc["schedule"]["warmup"][k]) != p.schedule.warmup[k])
      bug(t, "warm-up " + doc["schedule"]["warmup"][k].dump() + " was read as " + std::to_string(p.schedule.warmup[k]));
}

Outcome fuzz_json(Target target, const uint8_t* data, size_t size) {
  write_input(target, data, size);
  const std::string& path = input_path();
  try {
    switch (target) {
      case Target::kTopology: {
        Topology t = load_topology(path);
        check_round_trip(target, to_json(t), parse_topology);
        // Every directed link the matrix reports is one the file gave (or its reverse).
        for (int a = 0; a < t.num_regions(); ++a)
          for (int b = 0; b < t.num_regions(); ++b)
            if (a != b && t.link(a, b) && !(t.link(a, b)->gbps > 0)) bug(target, "a link without bandwidth");
        break;
      }
      case Target::kJob: {
        JobSpec j = load_job(path);
        if (j.min_stages < 1 || j.min_stages > j.max_stages || j.max_stages > j.model.layers)
          bug(target, "accepted stages " + std::to_string(j.min_stages) + ".." + std::to_string(j.max_stages) +
                          " for " + std::to_string(j.model.layers) + " layers");
        check_round_trip(target, to_json(j), [](const json& d, const std::string& f) { return parse_job(d, f); });
        break;
      }
      case Target::kWorkload: {
        Workload w = load_workload(path);
        for (size_t i = 1; i < w.jobs.size(); ++i)
          if (w.jobs[i].arrival_s < w.jobs[i - 1].arrival_s) bug(target, "jobs not sorted by arrival");
        check_round_trip(target, to_json(w), parse_workload);
        break;
      }
      case Target::kPlan: {
        Plan p = load_plan(path);
        check_plan_promises(p, json::parse(data, data + size));
        check_round_trip(target, to_json(p), parse_plan);
        break;
      }
      case Target::kHeader:
      case Target::kStepLog:
      case Target::kTrace: break;
    }
  } catch (const InputError& e) {
    check_rejection(target, e);
    return Outcome::kRejected;
  } catch (const std::exception& e) {
    bug(target, std::string("unexpected exception (not an InputError): ") + e.what());
  }
  return Outcome::kAccepted;
}

// ---- Header ------------------------------------------------------------------------------

using comm::MessageHeader;

bool same_header(const MessageHeader& a, const MessageHeader& b) {
  return a.job == b.job && a.stage == b.stage && a.micro_batch == b.micro_batch && a.kind == b.kind &&
         a.elem_type == b.elem_type && a.shape == b.shape && a.codec == b.codec &&
         a.payload_bytes == b.payload_bytes && a.crc32c == b.crc32c && a.flags == b.flags &&
         a.src_rank == b.src_rank && a.seq == b.seq;
}

Outcome decode_and_check(const uint8_t* data, size_t size) {
  const Target t = Target::kHeader;
  MessageHeader h;
  std::string err;
  try {
    err = comm::decode_header(data, size, h);
  } catch (const std::exception& e) {
    bug(t, std::string("decode_header threw instead of returning an error: ") + e.what());
  }
  if (!err.empty()) return Outcome::kRejected;

  // An accepted header re-encodes to a header that decodes to the same fields.
  std::array<uint8_t, comm::kHeaderWireBytes> wire{};
  try {
    wire = comm::encode_header(h);
  } catch (const std::exception& e) {
    bug(t, std::string("a decoded header cannot be encoded again: ") + e.what() + " (" + h.describe() + ")");
  }
  MessageHeader again;
  err = comm::decode_header(wire.data(), wire.size(), again);
  if (!err.empty()) bug(t, "re-encoded header does not decode: " + err);
  if (!same_header(h, again)) bug(t, "encode(decode(x)) changed the header: " + h.describe() + " vs " + again.describe());

  // Checked against itself, a header reports only its own inconsistency: with codec "none" the
  // payload must hold exactly numel x element size bytes (computed here without overflow).
  comm::Expect self;
  self.job = h.job;
  self.stage = h.stage;
  self.micro_batch = h.micro_batch;
  self.kind = h.kind;
  self.elem_type = h.elem_type;
  self.shape = h.shape;
  self.codec = h.codec;
  self.payload_bytes = h.payload_bytes;
  bool consistent = true;
  if (h.codec == "none" && !h.shape.empty()) {
    uint64_t bytes = comm::elem_type_bytes(h.elem_type);
    bool overflow = false;
    for (int64_t d : h.shape) overflow = overflow || __builtin_mul_overflow(bytes, static_cast<uint64_t>(d), &bytes);
    consistent = !overflow && bytes == h.payload_bytes;
  }
  const std::string report = comm::check_header(h, self);
  if (consistent != report.empty())
    bug(t, "check_header against the header's own fields says \"" + report + "\" for " + h.describe());
  // A header that differs from what is expected is refused, naming the field.
  comm::Expect other;
  other.micro_batch = h.micro_batch == std::numeric_limits<int32_t>::max() ? 0 : h.micro_batch + 1;
  if (comm::check_header(h, other).find("micro_batch") == std::string::npos)
    bug(t, "check_header accepted the wrong micro-batch for " + h.describe());
  return Outcome::kAccepted;
}

Outcome fuzz_header(const uint8_t* data, size_t size) {
  const Outcome raw = decode_and_check(data, size);
  // Random bytes almost never carry a valid header checksum: also decode the first 144 bytes
  // with the checksum fixed up, so the fields behind it are explored too.
  if (size >= comm::kHeaderWireBytes) {
    std::array<uint8_t, comm::kHeaderWireBytes> fixed{};
    std::memcpy(fixed.data(), data, fixed.size());
    const uint32_t crc = comm::crc32c(fixed.data(), 140);
    for (int i = 0; i < 4; ++i) fixed[140 + i] = static_cast<uint8_t>(crc >> (8 * i));
    decode_and_check(fixed.data(), fixed.size());
  }
  return raw;
}

// ---- Run directory (geopipe report) ------------------------------------------------------

// The plan beside every fuzzed log and trace: two stages, ranks 0 and 1.
constexpr const char* kRunPlan =
    R"({"version": 1, "job": {"name": "fuzz", "model": {"layers": 2, "d_model": 8, "heads": 2, "seq_len": 4,)"
    R"( "vocab": 16, "dtype": "fp32"}, "micro_batch": 1, "micro_batches": 2, "iterations": 10, "stages": 2},)"
    R"( "stages": [{"index": 0, "region": "a", "ranks": [0], "layers": [0, 1]},)"
    R"( {"index": 1, "region": "b", "ranks": [1], "layers": [1, 2]}], "links": [{"from_stage": 0, "to_stage": 1,)"
    R"( "region_pair": ["a", "b"], "codec": {"forward": "none", "backward": "none"}, "transport": "mpi"}],)"
    R"( "schedule": {"kind": "1f1b", "warmup": [1, 0]}, "predicted": {"iteration_s": 0.5, "jct_s": 5,)"
    R"( "energy_kwh": 0.1, "cost_usd": 0.01}, "provenance": {"policy": "bace", "topology_hash": "0"}})";
// The log beside a fuzzed trace.
constexpr const char* kRunLog = R"({"step": 1, "loss": 5.5, "step_s": 0.5, "elapsed_s": 0.5})" "\n";

// A scratch run directory per process, holding plan.json and the files of the input (never
// destroyed, like input_path, so that the exit handler can remove it).
const std::filesystem::path& run_dir_path() {
  static const std::filesystem::path& dir = *[] {
    const char* tmp = std::getenv("TMPDIR");
    auto* d = new std::filesystem::path(std::filesystem::path(tmp && *tmp ? tmp : "/tmp") /
                                        ("geopipe-fuzz-run-" + std::to_string(::getpid())));
    std::filesystem::create_directories(*d);
    std::ofstream(*d / run_dir::kPlan) << kRunPlan;
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(run_dir_path(), ec);
    });
    return d;
  }();
  return dir;
}

// The input as the run's step log (trace absent) or as its trace (beside a good log); an accepted
// run must render, a rejected one must name the input's file.
Outcome fuzz_run_dir(Target target, const uint8_t* data, size_t size) {
  namespace fs = std::filesystem;
  const fs::path dir = run_dir_path();
  const fs::path input = dir / (target == Target::kStepLog ? run_dir::kStepLog : run_dir::kTrace);
  if (target == Target::kStepLog) fs::remove(dir / run_dir::kTrace);
  else std::ofstream(dir / run_dir::kStepLog, std::ios::trunc) << kRunLog;
  std::ofstream(input, std::ios::binary | std::ios::trunc).write(reinterpret_cast<const char*>(data),
                                                                 static_cast<std::streamsize>(size));
  try {
    const report::RunData run = report::load_run(dir.string());
    const std::string html = report::render_run_html(run);
    if (html.find("<script") != std::string::npos) bug(target, "the page holds a <script> element");
  } catch (const InputError& e) {
    for (const auto& d : e.diagnostics())
      if (d.file != input.string()) bug(target, "diagnostic names \"" + d.file + "\", not the input file: " + d.str());
    return Outcome::kRejected;
  } catch (const std::exception& e) {
    bug(target, std::string("unexpected exception (not an InputError): ") + e.what());
  }
  return Outcome::kAccepted;
}

}  // namespace

const std::vector<Target>& all_targets() {
  static const std::vector<Target> targets = {Target::kTopology, Target::kJob,     Target::kWorkload, Target::kPlan,
                                              Target::kHeader,   Target::kStepLog, Target::kTrace};
  return targets;
}

const char* target_name(Target target) {
  switch (target) {
    case Target::kTopology: return "topology";
    case Target::kJob: return "job";
    case Target::kWorkload: return "workload";
    case Target::kPlan: return "plan";
    case Target::kHeader: return "header";
    case Target::kStepLog: return "steplog";
    case Target::kTrace: return "trace";
  }
  return "unknown";
}

std::optional<Target> parse_target(const std::string& name) {
  for (Target t : all_targets())
    if (name == target_name(t)) return t;
  return std::nullopt;
}

void set_input_label(const std::string& label) { input_label() = label; }

Outcome run_one(Target target, const uint8_t* data, size_t size) {
  if (target == Target::kHeader) return fuzz_header(data, size);
  if (target == Target::kStepLog || target == Target::kTrace) return fuzz_run_dir(target, data, size);
  return fuzz_json(target, data, size);
}

std::vector<std::vector<uint8_t>> header_seeds() {
  std::vector<std::vector<uint8_t>> seeds;
  const char* codecs[] = {"none", "int8-block", "fp8-e4m3-block", "int4-block"};
  for (int kind = 0; kind <= 3; ++kind)
    for (int elem = 0; elem <= 7; ++elem) {
      MessageHeader h;
      h.job = 0x1234567890abcdefull;
      h.stage = kind;
      h.micro_batch = elem;
      h.kind = static_cast<comm::MessageKind>(kind);
      h.elem_type = static_cast<comm::ElemType>(elem);
      const int dims = (kind * 8 + elem) % (comm::kMaxDims + 1);
      for (int d = 0; d < dims; ++d) h.shape.push_back(d + 2);
      h.codec = codecs[(kind + elem) % 4];
      h.payload_bytes = h.codec == std::string("none") && dims > 0
                            ? static_cast<uint64_t>(h.numel()) * comm::elem_type_bytes(h.elem_type)
                            : 100;
      h.flags = comm::kFlagHasChecksum;
      h.crc32c = 0xdeadbeef;
      h.src_rank = elem;
      h.seq = static_cast<uint32_t>(kind * 100 + elem);
      auto wire = comm::encode_header(h);
      seeds.emplace_back(wire.begin(), wire.end());
    }
  return seeds;
}

}  // namespace geopipe::fuzz
