// geopipe-pipeline-bench: measured vs predicted iteration time, peak activations and memory of pipeline plans.
//
//   mpirun -n 2 -x GEOPIPE_EMULATE=software geopipe-pipeline-bench --topology bench/runtime/wan40.json
//       --data examples/gpt/data/kjv-pentateuch.txt --plans 1f1b.json,zb-h1.json,zbv.json
//       [--iters 5] [--warmup-iters 1] [--threads 1] [--json out.json]
//
// Each plan (written by `geopipe plan`, which predicts its iteration time and each rank's peak
// activations by replaying its schedule) is trained for warm-up + measured steps with the plan's
// own schedule and codecs. The table gives the prediction, the measured step time (rank 0's wall
// time per step, median and mean over the measured steps; every step ends in an all-reduce, so
// all ranks agree), the gap of the median, the peak activations predicted and measured (the
// largest over ranks: micro-batches held at once, and their bytes), the memory of the rank whose
// tensors hold the most (predicted: the plan's memory_bytes less its message buffers and the
// framework allowance; measured: the executor's peak_held_bytes, parameters, gradients,
// optimizer state and activations) and the gap, the process's peak resident set (getrusage: the
// whole run so far, framework included), tokens/s and bytes per step on the wire. All plans must
// put each rank in the same region (the communicator's regions are fixed); they may differ in
// stages per rank.
#include <geopipe/comm/communicator.h>
#include <geopipe/core/error.h>
#include <geopipe/core/log.h>
#include <geopipe/runtime/trainer.h>
#include <geopipe/scheduler/cost_model.h>
#include <geopipe/scheduler/planner.h>

#include <sys/resource.h>

#include <CLI/CLI.hpp>
#include <mpi.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <tuple>

using namespace geopipe;

namespace {

struct Options {
  std::string plans, topology, data, json_out;
  std::string device = "cpu";
  int iters = 3, warmup = 1, threads = 0;
};

// The plans, each checked against the topology and the world, all with one region per rank.
std::vector<Plan> load_plans(const std::vector<std::string>& files, const Topology& topo, int world) {
  std::vector<Plan> plans;
  for (const auto& f : files) {
    plans.push_back(load_plan(f));
    check_plan_against(plans.back(), topo, f, world);
    for (int r = 0; r < world; ++r) {
      const auto& here = plans.back().stages[plans.back().stage_of_rank(r)].region;
      const auto& first = plans.front().stages[plans.front().stage_of_rank(r)].region;
      if (here != first)
        throw InputError(f, "stages", "puts rank " + std::to_string(r) + " in " + here + ", " + files.front() +
                                          " in " + first + " (one run has one placement)");
    }
  }
  return plans;
}

// Largest value over ranks (every rank gets it): each fills its own slot of a sum.
double max_over_ranks(comm::Communicator* comm, double mine, int rank, int world) {
  std::vector<double> v(static_cast<size_t>(world), 0.0);
  v[static_cast<size_t>(rank)] = mine;
  runtime::allreduce_sum(comm, v, 600);
  return *std::max_element(v.begin(), v.end());
}

// What the plan predicts this rank's tensors hold at their peak: memory_bytes without the message
// buffers and the framework allowance, which a run's tensor accounting does not see.
double predicted_tensor_bytes(const Plan& plan, const Topology& topo, int rank) {
  const auto& m = plan.predicted.memory_bytes;
  if (static_cast<size_t>(rank) >= m.size()) return 0;
  return m[static_cast<size_t>(rank)] - scheduler::kFrameworkAllowanceBytes -
         scheduler::plan_buffer_bytes(plan, topo, rank);
}

// This rank's measured peak and what the plan predicts for it. On a GPU: the CUDA caching
// allocator's peak (every tensor and message buffer on the device) against memory_bytes without
// the framework allowance. On a CPU: the executor's tensor accounting (TrainResult's
// peak_held_bytes) against predicted_tensor_bytes.
std::pair<double, double> measured_and_predicted_memory(const Plan& plan, const Topology& topo, int rank,
                                                        const at::Device& device, double held_bytes) {
  if (const auto peak = runtime::device_allocator_peak_bytes(device)) {
    const auto& m = plan.predicted.memory_bytes;
    const double predicted =
        static_cast<size_t>(rank) < m.size() ? m[static_cast<size_t>(rank)] - scheduler::kFrameworkAllowanceBytes : 0;
    return {static_cast<double>(*peak), predicted};
  }
  return {held_bytes, predicted_tensor_bytes(plan, topo, rank)};
}

nlohmann::json measure(const Plan& plan, const Topology& topo, const std::string& file, const Options& o,
                       comm::Communicator* comm, int rank, int world) {
  runtime::TrainConfig cfg;
  cfg.plan_file = file;
  cfg.iters = o.warmup + o.iters;
  cfg.data_file = o.data;
  cfg.progress = false;
  cfg.comm_timeout_s = 600;
  cfg.device = o.device;
  const at::Device device = runtime::pick_device(o.device);
  runtime::reset_device_allocator_peak(device);  // this plan's run only (warm-up steps included)
  runtime::TrainResult r = runtime::run_training(plan, cfg, comm);
  std::vector<double> times;
  double wire = 0, peak = 0, peak_bytes = 0, held = 0;
  for (int k = o.warmup; k < o.warmup + o.iters; ++k) {
    const runtime::StepStats& st = r.steps[static_cast<size_t>(k)];
    times.push_back(st.step_s);
    wire += static_cast<double>(st.fwd_wire + st.bwd_wire);
    peak = std::max(peak, static_cast<double>(st.peak_activations));
    peak_bytes = std::max(peak_bytes, static_cast<double>(st.peak_activation_bytes));
    held = std::max(held, static_cast<double>(st.peak_held_bytes));
  }
  // The rank that holds the most, measured, and its prediction; the largest resident set.
  std::vector<double> mine(static_cast<size_t>(2 * world), 0.0);
  std::tie(mine[static_cast<size_t>(2 * rank)], mine[static_cast<size_t>(2 * rank + 1)]) =
      measured_and_predicted_memory(plan, topo, rank, device, held);
  runtime::allreduce_sum(comm, mine, 600);
  size_t most = 0;
  for (size_t r = 1; r < static_cast<size_t>(world); ++r)
    if (mine[2 * r] > mine[2 * most]) most = r;
  struct rusage usage {};
  getrusage(RUSAGE_SELF, &usage);
  const double rss = max_over_ranks(comm, static_cast<double>(usage.ru_maxrss) * 1024.0, rank, world);
  std::vector<double> w = {wire};  // every rank's bytes on the wire
  runtime::allreduce_sum(comm, w, 600);
  peak = max_over_ranks(comm, peak, rank, world);
  peak_bytes = max_over_ranks(comm, peak_bytes, rank, world);
  double mean = 0;
  for (double t : times) mean += t / static_cast<double>(times.size());
  std::sort(times.begin(), times.end());
  const double median = times[times.size() / 2];
  const auto& pk = plan.predicted.peak_activations;
  const double tokens = static_cast<double>(plan.job.micro_batch) * plan.job.model.seq_len * plan.job.micro_batches;
  const double predicted = plan.predicted.iteration_s;
  return {{"plan", file},
          {"schedule", plan.schedule.kind},
          {"virtual_stages", plan.schedule.virtual_stages},
          {"codec", plan.links.empty() ? "none" : plan.links.front().codec_forward},
          {"predicted_s", predicted},
          {"measured_median_s", median},
          {"measured_mean_s", mean},
          {"gap_pct", predicted > 0 ? 100.0 * (median - predicted) / predicted : 0.0},
          {"predicted_peak_activations", pk.empty() ? 0 : *std::max_element(pk.begin(), pk.end())},
          {"measured_peak_activations", static_cast<int>(peak)},
          {"measured_peak_activation_mb", peak_bytes / 1e6},
          {"memory_rank", static_cast<int>(most)},
          {"memory_measure", runtime::device_allocator_peak_bytes(device) ? "cuda allocator peak" : "tensors held"},
          {"predicted_memory_mb", mine[2 * most + 1] / 1e6},
          {"measured_memory_mb", mine[2 * most] / 1e6},
          {"memory_gap_pct",
           mine[2 * most + 1] > 0 ? 100.0 * (mine[2 * most] - mine[2 * most + 1]) / mine[2 * most + 1] : 0.0},
          {"peak_rss_mb", rss / 1e6},
          {"tokens_per_s", tokens / median},
          {"wire_bytes_per_step", w[0] / o.iters}};
}

void print_row(const nlohmann::json& row) {
  const std::string file = row["plan"];
  std::printf("%-22s %-12s %12.3f %10.3f %9.3f %7.1f %6d %6d %9.1f %9.1f %9.1f %7.1f %8.0f %9.0f %9.2f\n",
              file.substr(file.rfind('/') + 1).c_str(),
              (row["schedule"].get<std::string>() + "/" + std::to_string(row["virtual_stages"].get<int>())).c_str(),
              row["predicted_s"].get<double>(), row["measured_median_s"].get<double>(),
              row["measured_mean_s"].get<double>(), row["gap_pct"].get<double>(),
              row["predicted_peak_activations"].get<int>(), row["measured_peak_activations"].get<int>(),
              row["measured_peak_activation_mb"].get<double>(), row["predicted_memory_mb"].get<double>(),
              row["measured_memory_mb"].get<double>(), row["memory_gap_pct"].get<double>(),
              row["peak_rss_mb"].get<double>(), row["tokens_per_s"].get<double>(),
              row["wire_bytes_per_step"].get<double>() / 1e6);
}

int run(const Options& o, int rank, int world) {
  const int threads = o.threads > 0 ? o.threads : runtime::default_threads_per_rank();
  const std::string compute = runtime::set_compute_threads(threads);
  std::vector<std::string> files;
  std::stringstream ss(o.plans);
  for (std::string f; std::getline(ss, f, ',');)
    if (!f.empty()) files.push_back(f);
  auto topo = std::make_shared<Topology>(load_topology(o.topology));
  const std::vector<Plan> plans = load_plans(files, *topo, world);
  std::unique_ptr<comm::Communicator> comm;
  if (world > 1) {
    comm::CommOptions co;
    co.region = plans.front().stages.at(plans.front().stage_of_rank(rank)).region;
    co.topology = topo;
    comm = std::make_unique<comm::Communicator>(co);
  }
  if (rank == 0) {
    std::printf("# geopipe-pipeline-bench: %d ranks, compute per rank: %s, %d warm-up + %d measured steps, emulation %s\n",
                world, compute.c_str(), o.warmup, o.iters, comm && comm->emulating() ? "on" : "off");
    std::printf("%-22s %-12s %12s %10s %9s %7s %6s %6s %9s %9s %9s %7s %8s %9s %9s\n", "plan", "schedule/V",
                "predicted(s)", "median(s)", "mean(s)", "gap(%)", "pk.pr", "pk.ms", "pk.MB", "mem.prMB", "mem.msMB",
                "mgap(%)", "rss MB", "tokens/s", "wire MB");
  }
  nlohmann::json rows = nlohmann::json::array();
  for (size_t i = 0; i < plans.size(); ++i) {
    nlohmann::json row = measure(plans[i], *topo, files[i], o, comm.get(), rank, world);
    if (rank == 0) print_row(row), std::fflush(stdout);
    rows.push_back(row);
  }
  if (rank == 0 && !o.json_out.empty()) std::ofstream(o.json_out) << rows.dump(1) << "\n";
  comm.reset();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"geopipe-pipeline-bench: measured vs predicted pipeline iteration time, peak activations and memory"};
  Options o;
  app.add_option("--plans", o.plans, "comma-separated plan files")->required();
  app.add_option("--topology", o.topology, "topology the plans were made for (emulated links)")->required();
  app.add_option("--data", o.data, "training text")->required();
  app.add_option("-n,--iters", o.iters, "measured steps per plan")->check(CLI::Range(1, 100000));
  app.add_option("-w,--warmup-iters", o.warmup, "unmeasured steps first")->check(CLI::Range(0, 100000));
  app.add_option("--device", o.device,
                 "cpu, cuda or auto; on cuda the memory columns are the CUDA caching allocator's peak against the "
                 "plan's memory_bytes without the framework allowance")
      ->check(CLI::IsMember({"cpu", "cuda", "auto"}));
  app.add_option("--threads", o.threads, "CPU threads per rank (0: cores / ranks on this host)");
  app.add_option("--json", o.json_out, "also write the rows as JSON");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : kExitBadInput;
  }
  log::init();
  spdlog::set_level(spdlog::level::warn);
  int rank = 0, world = 1;
  try {
    comm::init_mpi(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    const int rc = run(o, rank, world);
    comm::finalize_mpi();
    return rc;
  } catch (const Error& e) {
    std::fprintf(stderr, "geopipe-pipeline-bench: rank %d: %s\n", rank, e.what());
    if (world > 1) MPI_Abort(MPI_COMM_WORLD, e.exit_code());
    return e.exit_code();
  }
}
