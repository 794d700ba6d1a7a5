// geopipe-train: trains the plan's GPT, one rank per stage (under mpirun / geopipe launch), or the
// whole model in one process for a one-stage plan (the reference). Flags: --help.
#include "failure_report.h"

#include <geopipe/comm/auth.h>
#include <geopipe/comm/communicator.h>
#include <geopipe/core/env.h>
#include <geopipe/core/error.h>
#include <geopipe/core/log.h>
#include <geopipe/core/run_dir.h>
#include <geopipe/kernels/blas.h>
#include <geopipe/runtime/sample.h>
#include <geopipe/runtime/trainer.h>

#include <CLI/CLI.hpp>
#include <mpi.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <ctime>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <thread>

using namespace geopipe;

namespace {

// The corpus shipped with geopipe, copied next to the programs at build time
// (bin/../share/geopipe/, examples/gpt/CMakeLists.txt), found from this program's own path.
std::string shipped_corpus() {
  std::error_code ec;
  const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) return "kjv-pentateuch.txt";
  return (exe.parent_path().parent_path() / "share" / "geopipe" / "kjv-pentateuch.txt").lexically_normal().string();
}

// --sample: generation through this plan's stages; rank 0 prints the text.
int run_sample(const Plan& plan, const runtime::TrainConfig& cfg, runtime::SampleConfig sample, int rank, int size) {
  if (size != plan.world_size())
    throw InputError(cfg.plan_file, "stages", "plan needs " + std::to_string(plan.world_size()) +
                                                  " ranks, started with " + std::to_string(size));
  std::unique_ptr<comm::Communicator> comm;
  if (size > 1) {
    comm::CommOptions co;
    co.region = plan.stages[static_cast<size_t>(plan.stage_of_rank(rank))].region;
    co.default_timeout_s = cfg.comm_timeout_s;
    comm = std::make_unique<comm::Communicator>(co);
  }
  sample.checkpoint_dir = cfg.checkpoint_dir;
  sample.seed = cfg.seed;
  sample.device = cfg.device;
  sample.comm_timeout_s = cfg.comm_timeout_s;
  runtime::SampleResult r = runtime::generate(plan, sample, comm.get());
  if (rank == 0) {
    std::printf("sample (step %lld of %s, seed %llu, temperature %g, top-k %d):\n%s\n",
                static_cast<long long>(r.step), cfg.checkpoint_dir.c_str(), static_cast<unsigned long long>(sample.seed),
                sample.temperature, sample.top_k, r.text.c_str());
    std::fflush(stdout);
  }
  comm.reset();
  comm::finalize_mpi();
  return 0;
}

// --run-dir DIR: every file of the run in one folder, what `geopipe report DIR` reads
// (core/run_dir.h). Flags the user gave explicitly (--json-log, --trace, --checkpoint-dir) win.
// Every rank points its config there (each writes its own checkpoint file); rank 0 creates
// the folder and writes the copies of the inputs and run.json.
struct RunDir {
  std::string dir;
  std::vector<std::string> command;  // argv, as run.json records it
  bool checkpoint_every_given = false;
};

void prepare_run_dir(const RunDir& rd, runtime::TrainConfig& cfg, const Plan& plan,
                     const std::string& topology_file, int rank, int size) {
  namespace fs = std::filesystem;
  const fs::path dir(rd.dir);
  if (cfg.json_log.empty()) cfg.json_log = (dir / run_dir::kStepLog).string();
  if (cfg.trace_file.empty()) cfg.trace_file = (dir / run_dir::kTrace).string();
  if (cfg.checkpoint_dir.empty()) {
    cfg.checkpoint_dir = (dir / run_dir::kCheckpoints).string();
    // Without --checkpoint-every the run directory still gets the final weights.
    if (!rd.checkpoint_every_given) cfg.checkpoint_every = std::numeric_limits<int>::max();
  }
  if (rank != 0) return;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw InputError("--run-dir", "run-dir", "cannot create " + rd.dir + ": " + ec.message());
  auto copy = [&](const std::string& from, const char* name) {
    if (fs::absolute(from).lexically_normal() == fs::absolute(dir / name).lexically_normal()) return;
    fs::copy_file(from, dir / name, fs::copy_options::overwrite_existing, ec);
    if (ec) throw InputError("--run-dir", "run-dir", "cannot copy " + from + " into " + rd.dir + ": " + ec.message());
  };
  copy(cfg.plan_file, run_dir::kPlan);
  if (!topology_file.empty()) copy(topology_file, run_dir::kTopology);
  // The codec each directed link runs with (--codec overrides the plan's), for the report.
  const auto [over_f, over_b] = runtime::codec_pair(cfg.codec);
  nlohmann::json codecs = nlohmann::json::object();
  for (const LinkPlan& l : plan.links) {
    codecs[std::to_string(l.from_stage) + "->" + std::to_string(l.to_stage)] = over_f.empty() ? l.codec_forward : over_f;
    codecs[std::to_string(l.to_stage) + "->" + std::to_string(l.from_stage)] = over_b.empty() ? l.codec_backward : over_b;
  }
  const std::time_t now = std::time(nullptr);
  char start[32];
  std::strftime(start, sizeof(start), "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  const nlohmann::json info = {{"command", rd.command}, {"start_time", start},   {"plan_hash", plan.hash()},
                               {"world_size", size},    {"link_codecs", codecs}, {"resume", cfg.resume}};
  std::ofstream out(dir / run_dir::kRunInfo, std::ios::trunc);
  out << info.dump(2) << "\n";
  if (!out) throw Error("cannot write " + (dir / run_dir::kRunInfo).string());
}

void write_run_summary(const RunDir& rd, const std::string& summary) {
  const auto path = std::filesystem::path(rd.dir) / run_dir::kSummary;
  std::ofstream out(path, std::ios::trunc);
  out << summary;
  if (!out) throw Error("cannot write " + path.string());
}

// Everything geopipe-train's flags set.
struct TrainFlags {
  runtime::TrainConfig cfg;
  std::string topology_file, export_file, profile_file;
  std::string auth_key_file;  // per-job key authenticating message headers (comm/auth.h)
  int threads = 0;
  RunDir run_dir;
  runtime::SampleConfig sample;
  CLI::Option* every_opt = nullptr;   // --checkpoint-every (was it given?)
  CLI::Option* sample_opt = nullptr;  // --sample (generate instead of training)
};

void add_flags(CLI::App& app, TrainFlags& f) {
  runtime::TrainConfig& cfg = f.cfg;
  runtime::SampleConfig& sample = f.sample;
  app.add_option("--plan", cfg.plan_file, "plan.json from `geopipe plan`")->required()->check(CLI::ExistingFile);
  app.add_option("--iters", cfg.iters,
                 "optimizer steps in total (default: the job's iterations; 0: none, e.g. with --checkpoint-at-start)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--seed", cfg.seed, "seed of initialisation and data order")->check(CLI::NonNegativeNumber);
  app.add_option("--dtype", cfg.dtype, "fp32 or bf16 (bf16 autocast in forward)")->check(CLI::IsMember({"fp32", "bf16"}));
  app.add_option("--codec", cfg.codec,
                 "none|int8|fp8|int4|plan: codec on every inter-stage link; adaptive: each link starts at the "
                 "plan's codec and steps up (none, int8, int4 for activations) while it holds the pipeline back, "
                 "down when it has room");
  app.add_option("--schedule", cfg.schedule, "gpipe|1f1b|1f1b-lh|zb-h1|plan (default: the plan's)")
      ->check(CLI::IsMember({"gpipe", "1f1b", "1f1b-lh", "zb-h1", "plan"}));
  app.add_option("--recompute", cfg.recompute, "none|full: keep only each block's input from F to the backward")
      ->check(CLI::IsMember({"none", "full"}));
  app.add_option("--schedule-file", cfg.schedule_file, "action lists, text form or torch's CSV (overrides --schedule)")->check(CLI::ExistingFile);
  cfg.data_file = shipped_corpus();
  app.add_option("--data", cfg.data_file, "training data file (default: the shipped corpus, the King James "
                                          "Pentateuch, " + cfg.data_file + ")")
      ->check(CLI::ExistingFile);
  app.add_option("--data-format", cfg.data_format, "text (bytes) or bin (llm.c uint16 shard)")
      ->check(CLI::IsMember({"text", "bin"}));
  app.add_option("--val-fraction", cfg.val_fraction, "tail of the data held out for validation");
  app.add_option("--eval-every", cfg.eval_every, "validation loss every N steps (0: never)")->check(CLI::NonNegativeNumber);
  app.add_option("--eval-batches", cfg.eval_batches, "micro-batches per validation")->check(CLI::Range(1, 1 << 20));
  app.add_option("--json-log", cfg.json_log, "one JSON object per step");
  app.add_option("--trace", cfg.trace_file, "Chrome/Perfetto trace merged across ranks");
  app.add_option("--checkpoint-dir", cfg.checkpoint_dir, "checkpoint folder");
  f.every_opt = app.add_option("--checkpoint-every", cfg.checkpoint_every, "checkpoint every N steps (and at the end)")
                        ->check(CLI::NonNegativeNumber);
  app.add_option("--run-dir", f.run_dir.dir,
                 "write everything there: plan.json, topology.json, run.json, train.jsonl, trace.json, summary.txt, "
                 "checkpoint/ (final step unless --checkpoint-every); read by `geopipe report DIR`");
  app.add_flag("--checkpoint-at-start", cfg.checkpoint_at_start,
               "also checkpoint the initial weights as step 0 (with --iters 0: only that)");
  app.add_flag("--resume", cfg.resume, "continue from --checkpoint-dir's manifest");
  app.add_flag("--shard-optimizer", cfg.shard_optimizer,
               "ZeRO-1 with replicas: each replica keeps AdamW state for 1/R of its stage's parameters");
  app.add_option("--comm-timeout", cfg.comm_timeout_s, "seconds any wait may block")->check(CLI::PositiveNumber);
  app.add_option("--auth-key-file", f.auth_key_file, "authenticate message headers with this per-job key (>= 32 bytes; default $GEOPIPE_AUTH_KEY_FILE)");
  app.add_option("--device", cfg.device, "cpu, cuda or auto")->check(CLI::IsMember({"cpu", "cuda", "auto"}));
  app.add_option("--topology", f.topology_file, "topology of the plan (checks it, prices the run; default $GEOPIPE_TOPOLOGY)");
  app.add_option("--lr", cfg.optim.lr, "peak learning rate")->check(CLI::PositiveNumber);
  app.add_option("--min-lr", cfg.optim.min_lr, "final learning rate of the cosine")->check(CLI::NonNegativeNumber);
  app.add_option("--warmup", cfg.optim.warmup_steps, "learning-rate warm-up steps")->check(CLI::NonNegativeNumber);
  app.add_option("--weight-decay", cfg.optim.weight_decay, "AdamW weight decay (matrices only)")->check(CLI::NonNegativeNumber);
  app.add_option("--grad-clip", cfg.optim.grad_clip, "clip the global gradient norm (0: off)")->check(CLI::NonNegativeNumber);
  app.add_option("--threads", f.threads, "CPU threads per rank (0: cores / ranks on this host, at least 1)")
      ->check(CLI::Range(0, 4096));
  app.add_flag("--progress,!--no-progress", cfg.progress, "progress line per step (default on)");
  app.add_option("--export", f.export_file, "gather --checkpoint-dir into one state-dict file and exit");
  app.add_option("--profile", f.profile_file,
                 "time embedding/blocks/head on this device, write a profile, exit (under mpirun -n K: K ranks "
                 "measure at once, as K stages sharing this host run; rank 0 writes their mean)");
  f.sample_opt = app.add_option("--sample", sample.tokens,
                                 "generate N tokens from --checkpoint-dir's latest checkpoint and exit (forward only)")
                      ->check(CLI::PositiveNumber);
  app.add_option("--prompt", sample.prompt, "--sample: the text to continue (default a newline)")->needs(f.sample_opt);
  app.add_option("--temperature", sample.temperature, "--sample: softmax temperature (0: always the most likely)")
      ->check(CLI::NonNegativeNumber)
      ->needs(f.sample_opt);
  app.add_option("--top-k", sample.top_k, "--sample: draw among the K most likely tokens (0: all)")
      ->check(CLI::NonNegativeNumber)
      ->needs(f.sample_opt);
}

// --export: rank 0 gathers the checkpoint into one nanoGPT file.
int run_export(const Plan& plan, const runtime::TrainConfig& cfg, const std::string& export_file, int rank) {
  if (rank == 0) {
    int64_t step = runtime::export_checkpoint(cfg.checkpoint_dir, plan.job.model, export_file);
    std::printf("exported step %lld of %s to %s\n", static_cast<long long>(step), cfg.checkpoint_dir.c_str(),
                export_file.c_str());
  }
  comm::finalize_mpi();
  return 0;
}

// --profile: under mpirun -n K every rank measures at once (stages sharing this host); rank 0 writes.
int run_profile(const Plan& plan, const runtime::TrainConfig& cfg, const std::string& profile_file, int rank, int size) {
  std::unique_ptr<comm::Communicator> pcomm;
  if (size > 1) {
    comm::CommOptions co;
    co.region = "profile";
    co.default_timeout_s = cfg.comm_timeout_s;
    pcomm = std::make_unique<comm::Communicator>(co);
  }
  runtime::write_profile(plan, cfg.device, profile_file, 5, pcomm.get(), cfg.comm_timeout_s);
  if (rank == 0) std::printf("wrote profile %s (%d rank%s at once)\n", profile_file.c_str(), size, size > 1 ? "s" : "");
  pcomm.reset();
  comm::finalize_mpi();
  return 0;
}

// --topology (or GEOPIPE_TOPOLOGY): the plan checked against it (and the rank count), kept for
// the shaper and the electricity figures; without one, the rank count is still checked.
std::shared_ptr<Topology> checked_topology(const Plan& plan, runtime::TrainConfig& cfg, std::string& topology_file,
                                           int size) {
  if (topology_file.empty())
    if (const char* v = std::getenv(env::kTopology)) topology_file = v;
  if (topology_file.empty()) {
    if (size != plan.world_size())
      throw InputError(cfg.plan_file, "stages", "plan needs " + std::to_string(plan.world_size()) +
                                                    " ranks, started with " + std::to_string(size));
    return nullptr;
  }
  auto topo = std::make_shared<Topology>(load_topology(topology_file));
  check_plan_against(plan, *topo, cfg.plan_file, size);
  cfg.topology = *topo;
  return topo;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"geopipe-train: pipeline-parallel GPT training across regions"};
  TrainFlags f;
  f.run_dir = RunDir{"", std::vector<std::string>(argv, argv + argc)};
  add_flags(app, f);
  runtime::TrainConfig& cfg = f.cfg;
  std::string &topology_file = f.topology_file, &export_file = f.export_file, &profile_file = f.profile_file;
  std::string& auth_key_file = f.auth_key_file;
  int& threads = f.threads;
  RunDir& run_dir = f.run_dir;
  runtime::SampleConfig& sample = f.sample;
  CLI::Option* every_opt = f.every_opt;
  CLI::Option* sample_opt = f.sample_opt;
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : kExitBadInput;
  }
  run_dir.checkpoint_every_given = every_opt->count() > 0;

  log::init();
  int rank = 0, size = 1;
  try {
    comm::init_mpi(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    // Ranks emulating regions on one host share its cores.
    if (threads <= 0) threads = runtime::default_threads_per_rank();
    const std::string compute = runtime::set_compute_threads(threads);
    Plan plan = load_plan(cfg.plan_file);
    train::arm_failure_report(rank, plan);
    const int stage = plan.stage_of_rank(rank);
    log::set_rank_context(rank, stage >= 0 ? plan.stages[stage].region : "none");
    if (rank == 0) {
      spdlog::info("compute: {}", compute);
      if (!kernels::blas_info().optimized())
        spdlog::warn("the BLAS is not an optimized one: CPU training runs about 13x slower (docs/PERFORMANCE.md)");
    }

    if (!export_file.empty()) return run_export(plan, cfg, export_file, rank);
    if (*sample_opt) return run_sample(plan, cfg, sample, rank, size);
    if (!profile_file.empty()) return run_profile(plan, cfg, profile_file, rank, size);

    const std::shared_ptr<Topology> topo = checked_topology(plan, cfg, topology_file, size);

    if (!run_dir.dir.empty()) prepare_run_dir(run_dir, cfg, plan, topology_file, rank, size);

    std::unique_ptr<comm::Communicator> comm;
    if (size > 1) {
      comm::CommOptions co;
      co.region = plan.stages[stage].region;
      co.topology = topo;
      co.default_timeout_s = cfg.comm_timeout_s;
      if (!auth_key_file.empty()) co.auth_key = comm::read_auth_key_file(auth_key_file);
      comm = std::make_unique<comm::Communicator>(co);
    }
    runtime::TrainResult r = runtime::run_training(plan, cfg, comm.get());
    if (rank == 0) {
      std::printf("%s", r.summary.c_str());
      if (!cfg.checkpoint_dir.empty()) std::printf("checkpoint: %s/manifest.json\n", cfg.checkpoint_dir.c_str());
      if (!cfg.trace_file.empty()) std::printf("trace: %s (open in https://ui.perfetto.dev)\n", cfg.trace_file.c_str());
      if (!run_dir.dir.empty()) {
        write_run_summary(run_dir, r.summary);
        std::printf("run directory: %s (see it: geopipe report %s)\n", run_dir.dir.c_str(), run_dir.dir.c_str());
      }
    }
    comm.reset();
    comm::finalize_mpi();
    return 0;
  } catch (const Error& e) {
    std::fprintf(stderr, "geopipe-train: rank %d: %s\n", rank, e.what());
    train::report_failure(rank, e);
    if (size > 1) MPI_Abort(MPI_COMM_WORLD, e.exit_code());  // a failed rank stops the job
    return e.exit_code();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "geopipe-train: rank %d: %s\n", rank, e.what());
    train::report_failure(rank, e);
    if (size > 1) MPI_Abort(MPI_COMM_WORLD, kExitFailure);
    return kExitFailure;
  }
}
