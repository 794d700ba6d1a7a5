// The configuration model: topology, job and workload files (DESIGN.md §Data flow) parsed and
// strictly validated into plain structs. Errors name the file, the JSON path and what was
// expected; a parse reports every problem it finds, not just the first.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace geopipe {

enum class DType { kFloat32, kBFloat16, kFloat16 };
int dtype_bytes(DType dtype);
const char* dtype_name(DType dtype);              // "fp32", "bf16", "fp16"
std::optional<DType> parse_dtype(const std::string& name);  // accepts fp32/float32, bf16/bfloat16, fp16/float16

// ---- Topology ------------------------------------------------------------------------------

struct Region {
  std::string name;
  int gpus = 0;
  std::string gpu_type;
  double gpu_tflops = 0;         // dense bf16 TFLOP/s of one GPU
  double gpu_mem_gb = 0;
  double gpu_power_w = 0;        // board power at load
  double pue = 1.0;              // data-centre power usage effectiveness
  double price_usd_per_kwh = 0;  // electricity price
  std::vector<std::string> hosts;  // host names for mpirun (empty: emulated on one host)
};

struct LinkSpec {
  double gbps = 0;        // bandwidth in Gbit/s (1e9 bit/s)
  double latency_ms = 0;  // one-way latency
  // What the cloud bills for one GB (1e9 bytes) sent this way (egress, charged by the sending
  // region); optional in the file, 0 when not given.
  double egress_usd_per_gb = 0;
  double bytes_per_s() const { return gbps * 1e9 / 8.0; }
};

// A link as written in the file. Symmetric unless the file also gives the reverse direction:
// every field, egress_usd_per_gb included, then comes from the entry of that direction.
struct Link {
  std::string a, b;
  LinkSpec spec;
};

struct Topology {
  std::string name;
  std::string source;  // file it came from (for messages)
  LinkSpec intra_region;
  std::vector<Region> regions;
  std::vector<Link> links;

  int num_regions() const { return static_cast<int>(regions.size()); }
  int region_index(const std::string& name) const;  // -1 when unknown
  // Directed link from region `from` to region `to`; from == to gives intra_region;
  // nullopt when the two regions have no link.
  std::optional<LinkSpec> link(int from, int to) const;
  int total_gpus() const;
  // Stable content hash (hex) of everything that affects planning; plans record it.
  std::string hash() const;
  // Whether any link (or intra_region) has an egress price.
  bool priced() const;

  // Filled by finalize(): directed link matrix, row-major [from][to].
  std::vector<std::optional<LinkSpec>> directed;
  void finalize();
};

Topology parse_topology(const nlohmann::json& doc, const std::string& file);
Topology load_topology(const std::string& path);
nlohmann::json to_json(const Topology& topology);

// ---- Job -----------------------------------------------------------------------------------

struct ModelSpec {
  int layers = 0;
  int d_model = 0;
  int heads = 0;
  int seq_len = 0;
  int vocab = 0;
  DType dtype = DType::kBFloat16;
};

// Most data-parallel replicas a job (or `geopipe plan --replicas`) may ask for.
inline constexpr int kMaxReplicas = 4096;

struct JobSpec {
  std::string name;
  std::string tenant = "default";
  ModelSpec model;
  int micro_batch = 1;      // sequences per micro-batch
  int micro_batches = 1;    // micro-batches per iteration
  int iterations = 1;
  int min_stages = 1;       // "stages": N fixes both; [min, max] gives a range
  int max_stages = 1;
  // Data-parallel replicas of every stage (`geopipe plan --replicas` overrides it): each stage
  // gets this many ranks, all in its region. Written to JSON only when not 1, so the hashes of
  // jobs without replicas stay what they were.
  int replicas = 1;
  // "gpus": [min, max] (or N for both): the planner chooses the replicas R and the stages S with
  // min <= S x R <= max. micro_batches is then the whole step's: R divides it and each replica
  // runs micro_batches / R, so the tokens a step trains do not depend on R (docs/SCHEDULER.md,
  // "Replicas"). 0: not given (R is `replicas`); a job gives "gpus" or "replicas", not both.
  int min_gpus = 0, max_gpus = 0;
  bool chooses_replicas() const { return max_gpus > 0; }
  double arrival_s = 0;     // arrival time in a workload
  std::string hash() const;
};

JobSpec parse_job(const nlohmann::json& doc, const std::string& file, const std::string& path = "");
JobSpec load_job(const std::string& path);
nlohmann::json to_json(const JobSpec& job);

// ---- Workload ------------------------------------------------------------------------------

struct Workload {
  std::string name;
  std::vector<JobSpec> jobs;  // sorted by arrival_s (stable)
};

Workload parse_workload(const nlohmann::json& doc, const std::string& file);
Workload load_workload(const std::string& path);
nlohmann::json to_json(const Workload& workload);

// Reads a JSON file; a missing, unreadable or malformed file is an InputError naming it.
nlohmann::json read_json_file(const std::string& path);

// FNV-1a 64-bit of a byte string, as 16 hex digits.
std::string fnv1a_hex(const std::string& bytes);

}  // namespace geopipe
