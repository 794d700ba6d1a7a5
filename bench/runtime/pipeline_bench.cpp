// geopipe-pipeline-bench: measured vs predicted iteration time of pipeline plans.
//
//   mpirun -n 4 --oversubscribe -x GEOPIPE_EMULATE=software geopipe-pipeline-bench
//       --topology examples/topologies/local4.json --data examples/gpt/data/kjv-pentateuch.txt
//       --plans gpipe.json,1f1b.json,1f1b-int8.json [--iters 3] [--warmup-iters 1] [--json out.json]
//
// Each plan (written by `geopipe plan`, which also predicts its iteration time) is trained for
// warm-up + measured steps with the plan's own schedule and codecs; the table gives the plan's
// prediction, the measured mean step time (rank 0's wall time per step; every step ends in an
// all-reduce, so all ranks agree), the gap, tokens/s and bytes per step on the wire.
// All plans must place stages in the same regions (the communicator's regions are fixed).
#include <geopipe/comm/communicator.h>
#include <geopipe/core/error.h>
#include <geopipe/core/log.h>
#include <geopipe/runtime/trainer.h>

#include <ATen/Parallel.h>
#include <CLI/CLI.hpp>
#include <mpi.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <thread>

using namespace geopipe;

int main(int argc, char** argv) {
  CLI::App app{"geopipe-pipeline-bench: measured vs predicted pipeline iteration time"};
  std::string plans_arg, topology_file, data_file, json_out;
  int iters = 3, warmup = 1, threads = 0;
  app.add_option("--plans", plans_arg, "comma-separated plan files")->required();
  app.add_option("--topology", topology_file, "topology the plans were made for (emulated links)")->required();
  app.add_option("--data", data_file, "training text")->required();
  app.add_option("-n,--iters", iters, "measured steps per plan");
  app.add_option("-w,--warmup-iters", warmup, "unmeasured steps first");
  app.add_option("--threads", threads, "CPU threads per rank (0: cores / ranks on this host)");
  app.add_option("--json", json_out, "also write the rows as JSON");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : kExitBadInput;
  }
  log::init();
  spdlog::set_level(spdlog::level::warn);
  int rank = 0, size = 1;
  try {
    comm::init_mpi(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    // Ranks emulating regions on one host share its cores.
    if (threads <= 0) threads = runtime::default_threads_per_rank();
    const std::string compute = runtime::set_compute_threads(threads);
    if (rank == 0) std::printf("# compute per rank: %s\n", compute.c_str());
    std::vector<std::string> files;
    std::stringstream ss(plans_arg);
    for (std::string f; std::getline(ss, f, ',');)
      if (!f.empty()) files.push_back(f);
    std::vector<Plan> plans;
    auto topo = std::make_shared<Topology>(load_topology(topology_file));
    for (const auto& f : files) {
      plans.push_back(load_plan(f));
      check_plan_against(plans.back(), *topo, f, size);
      for (int s = 0; s < plans.back().num_stages(); ++s)
        if (plans.back().stages[s].region != plans.front().stages[s].region ||
            plans.back().stages[s].ranks != plans.front().stages[s].ranks)
          throw InputError(f, "stages[" + std::to_string(s) + "]", "places stages elsewhere than " + files.front());
    }
    const int stage = plans.front().stage_of_rank(rank);
    std::unique_ptr<comm::Communicator> comm;
    if (size > 1) {
      comm::CommOptions co;
      co.region = plans.front().stages.at(stage).region;
      co.topology = topo;
      comm = std::make_unique<comm::Communicator>(co);
    }
    if (rank == 0) {
      std::printf("# geopipe-pipeline-bench: %d ranks, %d threads/rank, %d warm-up + %d measured steps, emulation %s\n",
                  size, threads, warmup, iters, comm && comm->emulating() ? "on" : "off");
      std::printf("%-28s %-8s %-15s %12s %12s %8s %10s %14s\n", "plan", "schedule", "codec(fwd)", "predicted(s)",
                  "measured(s)", "gap(%)", "tokens/s", "wire MB/step");
    }
    nlohmann::json rows = nlohmann::json::array();
    for (size_t i = 0; i < plans.size(); ++i) {
      const Plan& plan = plans[i];
      runtime::TrainConfig cfg;
      cfg.plan_file = files[i];
      cfg.iters = warmup + iters;
      cfg.data_file = data_file;
      cfg.progress = false;
      cfg.comm_timeout_s = 600;
      runtime::TrainResult r = runtime::run_training(plan, cfg, comm.get());
      double sum = 0, wire = 0;
      for (int k = warmup; k < warmup + iters; ++k) {
        sum += r.steps[k].step_s;
        wire += static_cast<double>(r.steps[k].fwd_wire + r.steps[k].bwd_wire);
      }
      std::vector<double> w = {wire};  // every rank's bytes on the wire
      runtime::allreduce_sum(comm.get(), w, 600);
      const double measured = sum / iters;
      const double predicted = plan.predicted.iteration_s;
      const double tokens = static_cast<double>(plan.job.micro_batch) * plan.job.model.seq_len * plan.job.micro_batches;
      const std::string codec = plan.links.empty() ? "none" : plan.links.front().codec_forward;
      const double gap = predicted > 0 ? 100.0 * (measured - predicted) / predicted : 0.0;
      if (rank == 0) {
        std::printf("%-28s %-8s %-15s %12.3f %12.3f %8.1f %10.0f %14.2f\n", files[i].substr(files[i].rfind('/') + 1).c_str(),
                    plan.schedule.kind.c_str(), codec.c_str(), predicted, measured, gap, tokens / measured,
                    w[0] / iters / 1e6);
        rows.push_back({{"plan", files[i]}, {"schedule", plan.schedule.kind}, {"codec", codec},
                        {"predicted_s", predicted}, {"measured_s", measured}, {"gap_pct", gap},
                        {"tokens_per_s", tokens / measured}, {"wire_bytes_per_step", w[0] / iters}});
      }
    }
    if (rank == 0 && !json_out.empty()) std::ofstream(json_out) << rows.dump(1) << "\n";
    comm.reset();
    comm::finalize_mpi();
    return 0;
  } catch (const Error& e) {
    std::fprintf(stderr, "geopipe-pipeline-bench: rank %d: %s\n", rank, e.what());
    if (size > 1) MPI_Abort(MPI_COMM_WORLD, e.exit_code());
    return e.exit_code();
  }
}
