// Fuzz harnesses: one function per input parser, each feeding arbitrary bytes through the same
// path the command-line tools use (a file read by load_topology / load_job / load_workload /
// load_plan, a wire header through decode_header and check_header, or a run's step log or trace
// read by geopipe report's load_run beside a fixed plan, and the page rendered when accepted).
//
// An InputError (JSON) or an error message (header) is an expected outcome. Anything else is a
// bug and aborts the process after a line on stderr naming the harness and the input: another
// exception type, a crash or sanitizer report, an accepted input that does not survive its own
// round trip (to_json -> parse, encode -> decode), or a rejection that does not name the file.
// libFuzzer (fuzz/fuzz_target.cpp) and the replay tool (fuzz/replay_main.cpp) share these.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace geopipe::fuzz {

enum class Target { kTopology, kJob, kWorkload, kPlan, kHeader, kStepLog, kTrace };

// Every target, in a fixed order, and its name ("topology", "job", "workload", "plan", "header",
// "steplog", "trace").
const std::vector<Target>& all_targets();
const char* target_name(Target target);
std::optional<Target> parse_target(const std::string& name);

// What the parser made of one input.
enum class Outcome { kAccepted, kRejected };

// Runs one input through one harness. Returns the outcome; aborts on a bug.
Outcome run_one(Target target, const uint8_t* data, size_t size);

// Names the input in bug reports (the replay tool sets the file name; libFuzzer saves the input).
void set_input_label(const std::string& label);

// Encoded wire headers covering every message kind, element type, dims 0..8 and several codecs:
// the seed corpus of the header target.
std::vector<std::vector<uint8_t>> header_seeds();

}  // namespace geopipe::fuzz
