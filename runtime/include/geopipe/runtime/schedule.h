// Pipeline schedules as data: per-stage lists of small actions (stage, kind, micro-batch).
//
// A compute-only schedule (F, B, OPT) is generated for GPipe, 1F1B or latency-hiding 1F1B, then
// lowered: every F/B that needs a neighbour's tensor gets the matching RECV in front of it, and
// every F/B whose output a neighbour needs gets the matching SEND after it, so sends and
// receives pair by construction. validate() checks the lists, simulate() executes them as a
// dry run (sends never block, a receive blocks until its send ran) and reports a deadlock with
// every stage's blocked action. The text form (`2F0 2SEND_F0 ... 2OPT`, one line per stage) is
// what errors print and what --schedule-file loads. No LibTorch, no MPI.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace geopipe::runtime {

enum class ActionKind { kForward, kBackward, kSendF, kRecvF, kSendB, kRecvB, kOptimizer };

const char* action_kind_name(ActionKind kind);  // "F", "B", "SEND_F", "RECV_F", "SEND_B", "RECV_B", "OPT"

struct Action {
  int stage = 0;
  ActionKind kind = ActionKind::kForward;
  int micro_batch = -1;  // -1 for OPT
  bool operator==(const Action& o) const {
    return stage == o.stage && kind == o.kind && micro_batch == o.micro_batch;
  }
  bool operator!=(const Action& o) const { return !(*this == o); }
};

std::string to_string(const Action& action);  // "2F0", "2SEND_B3", "2OPT"

// One list of actions per stage (index = stage), for one training iteration.
struct Schedule {
  int num_stages = 0;
  int num_micro_batches = 0;
  std::vector<std::vector<Action>> stages;
};

// ---- Generators (compute-only: F, B, OPT) -------------------------------------------------

// GPipe: every stage runs all forwards, then all backwards (same micro-batch order), then OPT.
Schedule gpipe_schedule(int num_stages, int num_micro_batches);

// 1F1B with explicit warm-up depths: stage s runs min(warmup[s], M) forwards, then alternates
// one forward and one backward, then drains the remaining backwards, then OPT. Plain 1F1B is
// warmup[s] = S - 1 - s (one_f_one_b_warmup); the plan's latency-hiding variant deepens it.
Schedule one_f_one_b_schedule(int num_stages, int num_micro_batches, const std::vector<int>& warmup);
std::vector<int> one_f_one_b_warmup(int num_stages);

// Builds the compute schedule a plan names: "gpipe", "1f1b" (warm-up S-1-s) or "1f1b-lh" (the
// plan's per-stage warm-up; empty means plain 1F1B). Throws InputError for an unknown kind.
Schedule schedule_for(const std::string& kind, int num_stages, int num_micro_batches,
                      const std::vector<int>& warmup);

// ---- Lowering, validation, dry run ----------------------------------------------------------

bool has_communication(const Schedule& schedule);

// Inserts RECV_F before each F on stages > 0, SEND_F after each F on stages < S-1, RECV_B
// before each B on stages < S-1, SEND_B after each B on stages > 0. Input must be compute-only.
Schedule lower(const Schedule& compute_only);

// Checks one lowered or compute-only schedule: stage numbers match the list they are in,
// micro-batches in range, each stage runs F m and B m exactly once with F before B, exactly one
// OPT, last; each RECV precedes its compute and each SEND follows it; every SEND has the
// neighbour's matching RECV and vice versa. Returns the problems (empty when valid).
std::vector<std::string> validate(const Schedule& schedule);

struct SimulationResult {
  bool completed = false;
  int steps = 0;                      // actions executed
  std::vector<std::string> blocked;   // on deadlock: "stage 1 blocked at 1RECV_F2 (index 4)"
  std::string message() const;        // one line per blocked stage, or "completed"
};

// Dry run of a lowered schedule: round-robin over stages, a stage advances while it can; SEND
// never blocks; RECV waits for the matching SEND. Deadlock = nobody can advance, not all done.
SimulationResult simulate(const Schedule& lowered);

// Runs of consecutive sends and receives in one stage's list, [begin, end) indices: on NCCL links
// each run is issued as one group (ncclGroupStart/End), so its operations progress together, as
// Megatron-LM's batched send_forward_recv_backward does.
std::vector<std::pair<size_t, size_t>> comm_groups(const std::vector<Action>& actions);

// Dry run under rendezvous semantics, the way NCCL point-to-point behaves: every stage issues
// each run of consecutive sends and receives (comm_groups) as one group when it reaches it and
// stays there until each of the group's operations has met its peer's (a send completes only
// together with its receive, both issued). A schedule that completes here runs on NCCL links.
// group_adjacent = false issues every operation alone (no groups).
SimulationResult simulate_rendezvous(const Schedule& lowered, bool group_adjacent = true);

// validate() + simulate(); throws InputError(source, "schedule", ...) with the problems and the
// schedule's text form when anything is wrong. `source` names the file or the generator.
void check_schedule(const Schedule& lowered, const std::string& source);

// Lowers when needed, then check_schedule(). The usual way to get an executable schedule.
Schedule prepare_schedule(const Schedule& schedule, const std::string& source);

// ---- Text form ---------------------------------------------------------------------------------

// One line per stage: "0F0 0SEND_F0 0F1 ... 0OPT". Lines starting with '#' are comments.
std::string format_schedule(const Schedule& schedule);
std::string format_actions(const std::vector<Action>& actions);

// Parses the text form. Stage lists are grouped by each action's stage number (a line may hold
// any stage's actions; order within a stage is kept). num_micro_batches = 1 + largest micro-batch.
// Throws InputError naming `source` and the line/token for anything malformed.
Schedule parse_schedule(const std::string& text, const std::string& source);
Schedule load_schedule_file(const std::string& path);

}  // namespace geopipe::runtime
