// Pipeline schedules as data: per-rank lists of small actions (stage chunk, kind, micro-batch),
// in the notation of torch.distributed.pipelining, so schedule files travel between the two.
//
// A stage is a model chunk (0..N-1 in model order); a rank is a pipeline position (0..R-1) and may
// own several stages (virtual stages). Generators write compute-only lists; lower() adds the
// sends and receives between stages on different ranks; validate(), simulate() and
// simulate_rendezvous() check them; the text and CSV forms load and save. See
// docs/ARCHITECTURE.md (Runtime, schedule.h) for the semantics. No LibTorch, no MPI.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace geopipe {

// F: forward; I: input gradient only; W: weight gradient only (after I); B: full backward (I + W).
// OPT ends each rank's list: the step's optimizer update.
enum class ActionKind { kForward, kInputGrad, kWeightGrad, kBackward, kSendF, kRecvF, kSendB, kRecvB, kOptimizer };

// "F", "I", "W", "B", "SEND_F", "RECV_F", "SEND_B", "RECV_B", "OPT"
const char* action_kind_name(ActionKind kind);

struct Action {
  int stage = 0;  // the stage chunk; for OPT, the rank (OPT belongs to a rank, not to a chunk)
  ActionKind kind = ActionKind::kForward;
  int micro_batch = -1;  // -1 for OPT
  bool operator==(const Action& o) const {
    return stage == o.stage && kind == o.kind && micro_batch == o.micro_batch;
  }
  bool operator!=(const Action& o) const { return !(*this == o); }
};

std::string to_string(const Action& action);  // "2F0", "2SEND_B3", "3I1", "2OPT"

// One training iteration. stage_rank[s] is the rank that runs stage s; ranks[r] is rank r's list.
struct Schedule {
  int num_ranks = 0;
  int num_stages = 0;
  int num_micro_batches = 0;
  std::vector<int> stage_rank;
  std::vector<std::vector<Action>> ranks;
  bool operator==(const Schedule& o) const {
    return num_ranks == o.num_ranks && num_stages == o.num_stages && num_micro_batches == o.num_micro_batches &&
           stage_rank == o.stage_rank && ranks == o.ranks;
  }
  bool operator!=(const Schedule& o) const { return !(*this == o); }
};

// Where the stages go. kLooped: stage s on rank s % R (interleaved 1F1B; V = 1 is one stage per
// rank). kVShape: V = 2, rank r holds stages r and 2R-1-r (ZB-V).
enum class ChunkPlacement { kLooped, kVShape };
std::vector<int> stage_ranks(ChunkPlacement placement, int num_ranks, int chunks_per_rank);
// The placement a schedule kind uses: kVShape for "zbv", kLooped for every other kind.
ChunkPlacement chunk_placement_of(const std::string& kind);

// True when some rank owns more than one stage; when some stage runs split backward (I/W).
bool has_virtual_stages(const Schedule& schedule);
bool has_split_backward(const Schedule& schedule);

// ---- Generators (compute-only: F, B or I/W, OPT) ------------------------------------------------

// GPipe, one stage per rank: all forwards, then all backwards (same order), then OPT.
Schedule gpipe_schedule(int num_ranks, int num_micro_batches);

// 1F1B with explicit warm-up depths, one stage per rank: rank r runs min(warmup[r], M) forwards,
// then alternates one forward and one backward, then drains the backwards, then OPT. Plain 1F1B is
// warmup[r] = R - 1 - r (one_f_one_b_warmup); the plan's latency-hiding variant deepens it.
Schedule one_f_one_b_schedule(int num_ranks, int num_micro_batches, const std::vector<int>& warmup);
std::vector<int> one_f_one_b_warmup(int num_ranks);

// Megatron-LM's interleaved 1F1B: V chunks per rank, looped placement (stage s on rank s % R),
// micro-batches in groups of R through each chunk. V > 1 needs M % R == 0 (InputError otherwise).
Schedule interleaved_1f1b_schedule(int num_ranks, int chunks_per_rank, int num_micro_batches);

// ZB-H1 (Qi et al. 2024), one stage per rank: 1F1B's order with B split into I and W; each rank
// keeps 1F1B's peak of live activations (a W runs before any forward that would exceed it) and the
// W's left at the cool-down fill the bubbles while the rank waits for its next input gradient.
Schedule zb_h1_schedule(int num_ranks, int num_micro_batches);

// ZB-V (Qi et al. 2024, section 6): two chunks per rank in a V (ChunkPlacement::kVShape), split backward.
Schedule zbv_schedule(int num_ranks, int num_micro_batches);

// The compute schedule a plan or flag names: "gpipe", "1f1b" (warm-up R-1-r), "1f1b-lh" (the
// plan's warm-up; empty means plain 1F1B), "interleaved" (V chunks per rank), "zb-h1", "zbv".
// chunks_per_rank must be 1 except for "interleaved" (any V >= 1) and "zbv" (1 or 2; both mean
// its two chunks). Throws InputError for an unknown kind or a shape the kind does not support.
Schedule schedule_for(const std::string& kind, int num_ranks, int num_micro_batches, int chunks_per_rank,
                      const std::vector<int>& warmup);

// Largest number of micro-batch activations alive at once on each rank: an F done whose B (or W,
// for split backward) is not, counted per stage chunk. The memory a schedule needs.
std::vector<int> peak_in_flight(const Schedule& schedule);
// The same walk weighted: each stage chunk's micro-batch holds bytes_per_stage[stage] from its F
// to its B (or W); per rank, the most held at once. Exact where a rank's chunks differ in size.
std::vector<double> peak_held_bytes(const Schedule& schedule, const std::vector<double>& bytes_per_stage);

// ---- Lowering, validation, dry run ----------------------------------------------------------------

bool has_communication(const Schedule& schedule);

// Adds a SEND after each F / B / I whose consumer (stage s+1 forward, s-1 backward) is on another
// rank, and the peer's RECV where that send falls in a round-robin dry run of the compute lists
// (as torch's _add_send_recv does): receives appear as soon as the data is sent, not merely
// before their consumer. Same-rank neighbours exchange nothing. Throws InputError when the
// compute lists cannot run (the blocked ranks) or already hold sends/receives.
Schedule lower(const Schedule& compute_only);

// Checks a lowered or compute-only schedule and returns every problem (empty when valid):
// placement (each action on its stage's rank), micro-batches in range, per stage F m once and
// either B m or I m then W m once, F before its backward, one trailing OPT per rank; the
// dependencies (stage s+1's F needs stage s's F, stage s's backward needs stage s+1's B or I):
// in order on one rank, through a SEND/RECV pair across ranks (lowered schedules only): RECV
// before its consumer, SEND after its producer, every SEND with its RECV and the reverse.
std::vector<std::string> validate(const Schedule& schedule);

struct SimulationResult {
  bool completed = false;
  int steps = 0;                      // actions executed
  std::vector<std::string> blocked;   // on deadlock: "rank 1 blocked at 3RECV_F2 (index 4)"
  std::string message() const;        // one line per blocked rank, or "completed"
};

// Dry run of a lowered schedule: round-robin over ranks, a rank advances while it can; SEND never
// blocks; RECV waits for the matching SEND. Deadlock = nobody can advance, not all done.
SimulationResult simulate(const Schedule& lowered);

// Runs of consecutive sends and receives in one rank's list, [begin, end) indices: on NCCL links
// each run is issued as one group (ncclGroupStart/End), so its operations progress together, as
// Megatron-LM's batched send_forward_recv_backward does.
std::vector<std::pair<size_t, size_t>> comm_groups(const std::vector<Action>& actions);

// Dry run under rendezvous semantics, the way NCCL point-to-point behaves: every rank issues each
// run of consecutive sends and receives (comm_groups) as one group when it reaches it and stays
// there until each of the group's operations has met its peer's (a send completes only together
// with its receive, both issued). group_adjacent = false issues every operation alone.
SimulationResult simulate_rendezvous(const Schedule& lowered, bool group_adjacent = true);

// validate() + simulate(), and simulate_rendezvous() when `rendezvous` (links that use NCCL);
// throws InputError(source, "schedule", ...) with the problems, the blocked ranks and the
// schedule's text form when anything is wrong. `source` names the file or the generator.
void check_schedule(const Schedule& lowered, const std::string& source, bool rendezvous = false);

// Lowers when needed, then check_schedule(). The usual way to get an executable schedule.
Schedule prepare_schedule(const Schedule& schedule, const std::string& source, bool rendezvous = false);

// ---- Text and CSV forms -----------------------------------------------------------------------------

// Text: one line per rank, "0F0 0SEND_F0 0F1 ... 0OPT"; '#' starts a comment; blank lines skip.
std::string format_schedule(const Schedule& schedule);
std::string format_actions(const std::vector<Action>& actions);

// CSV as torch's _dump_csv writes it (csv.writer: one row per rank, one action per cell, "\r\n"),
// without OPT, which torch does not know; parse_schedule_csv appends one OPT per rank that has none
// and skips empty cells (torch's idle steps).
std::string format_schedule_csv(const Schedule& schedule);

// Both parsers take the placement from the rows (a stage runs on the rank whose row holds it; one
// stage in two rows is refused, naming both), num_micro_batches = 1 + the largest micro-batch.
// torch kinds geopipe does not run (UNSHARD, RESHARD, REDUCE_GRAD) are refused. Throws InputError
// naming `source` and the line (text) or row and cell (CSV) of everything malformed.
Schedule parse_schedule(const std::string& text, const std::string& source);
Schedule parse_schedule_csv(const std::string& text, const std::string& source);

// A file ending in ".csv" is CSV, anything else the text form.
Schedule load_schedule_file(const std::string& path);

}  // namespace geopipe
