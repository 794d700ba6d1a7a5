#include <geopipe/comm/communicator.h>
#include <geopipe/comm/nccl_transport.h>
#include <geopipe/core/error.h>
#include <geopipe/core/log.h>
#include <geopipe/runtime/checkpoint.h>
#include <geopipe/runtime/trainer.h>
#include <geopipe/scheduler/profile.h>

#include "tags.h"

#include <csignal>
#include <cstdlib>

#include <ATen/ATen.h>
#include <mpi.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <fstream>
#include <map>
#include <sstream>

namespace geopipe::runtime {

namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;

std::string fmt_duration(double s) {
  char buf[32];
  if (s < 0 || !std::isfinite(s)) return "?";
  const long t = static_cast<long>(s + 0.5);
  if (t >= 3600) std::snprintf(buf, sizeof(buf), "%ldh%02ldm", t / 3600, (t / 60) % 60);
  else if (t >= 60) std::snprintf(buf, sizeof(buf), "%ldm%02lds", t / 60, t % 60);
  else std::snprintf(buf, sizeof(buf), "%lds", t);
  return buf;
}

std::string fmt_bytes(double b) {
  char buf[32];
  if (b >= 1e9) std::snprintf(buf, sizeof(buf), "%.2f GB", b / 1e9);
  else if (b >= 1e6) std::snprintf(buf, sizeof(buf), "%.2f MB", b / 1e6);
  else if (b >= 1e3) std::snprintf(buf, sizeof(buf), "%.1f kB", b / 1e3);
  else std::snprintf(buf, sizeof(buf), "%.0f B", b);
  return buf;
}

Schedule build_schedule(const Plan& plan, const TrainConfig& cfg) {
  const int S = plan.num_stages(), M = plan.job.micro_batches;
  if (!cfg.schedule_file.empty()) {
    Schedule s = load_schedule_file(cfg.schedule_file);
    if (s.num_stages != S)
      throw InputError(cfg.schedule_file, "schedule", "has " + std::to_string(s.num_stages) +
                                                          " stages, the plan has " + std::to_string(S));
    if (s.num_micro_batches != M)
      throw InputError(cfg.schedule_file, "schedule", "has " + std::to_string(s.num_micro_batches) +
                                                          " micro-batches, the job has " + std::to_string(M));
    return prepare_schedule(s, cfg.schedule_file);
  }
  std::string kind = cfg.schedule == "plan" ? plan.schedule.kind : cfg.schedule;
  if (kind != "gpipe" && kind != "1f1b" && kind != "1f1b-lh")
    throw InputError("--schedule", "schedule", "expected gpipe, 1f1b or plan, got \"" + cfg.schedule + "\"");
  return prepare_schedule(schedule_for(kind, S, M, plan.schedule.warmup),
                          cfg.plan_file + " (schedule " + kind + ")");
}

std::string fault_kind_name(TestFault::Kind k) {
  switch (k) {
    case TestFault::Kind::kKill: return "kill";
    case TestFault::Kind::kKillInCheckpoint: return "kill-in-checkpoint";
    case TestFault::Kind::kCorrupt: return "corrupt";
    case TestFault::Kind::kNone: break;
  }
  return "none";
}

// The test hook's last words, then SIGKILL (nothing after it runs: no destructor, no MPI_Abort).
[[noreturn]] void die_by_sigkill(const TestFault& f, const std::string& where) {
  const auto unix_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                           std::chrono::system_clock::now().time_since_epoch()).count();
  std::fprintf(stderr, "geopipe-train: rank %d: GEOPIPE_TEST_FAULT %s: SIGKILL at step %lld %s (unix_ms %lld)\n",
               f.rank, fault_kind_name(f.kind).c_str(), static_cast<long long>(f.step), where.c_str(),
               static_cast<long long>(unix_ms));
  std::fflush(stderr);
  std::raise(SIGKILL);
  std::abort();  // not reached
}

// On resume, rank 0 keeps the JSON log's lines up to the resumed step (a killed run may have
// logged steps after its last checkpoint, or a torn last line), so the log stays one trajectory.
void trim_json_log(const std::string& path, int64_t last_step) {
  std::ifstream in(path);
  if (!in) return;
  std::string kept, line;
  while (std::getline(in, line)) {
    const auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_object() && j.contains("step") && j["step"].is_number_integer() && j["step"].get<int64_t>() <= last_step)
      kept += line + "\n";
  }
  in.close();
  write_file_atomic(path, kept);
}

// Everything the summary needs from every rank, in one all-reduce (each rank fills its slot).
struct RankTotals {
  double compute_s = 0, wait_s = 0, wall_s = 0, fwd_raw = 0, fwd_wire = 0, bwd_raw = 0, bwd_wire = 0;
};

// Every stage writes its file, then rank 0 the manifest naming them all (checkpoint.h).
void write_checkpoint(const Plan& plan, const TrainConfig& cfg, int stage, int rank, int64_t step,
                      const GptStage& model, const AdamW& opt, comm::Communicator* comm,
                      const std::function<void()>& midway = {}) {
  const int S = plan.num_stages();
  StageCheckpoint ck{stage, step, cfg.seed, step, model.named_parameters(), opt.state()};
  const FileDigest d = save_stage_checkpoint(cfg.checkpoint_dir, ck, midway);
  // Sizes and checksums to every rank (one slot pair per stage, filled by the stage's first
  // rank: the sum is exact). It is also the barrier: every stage's file is on disk.
  std::vector<double> dv(2 * static_cast<size_t>(S), 0.0);
  if (rank == plan.stages[static_cast<size_t>(stage)].ranks.at(0)) {
    dv[2 * static_cast<size_t>(stage)] = static_cast<double>(d.bytes);
    dv[2 * static_cast<size_t>(stage) + 1] = static_cast<double>(d.crc32c);
  }
  allreduce_sum(comm, dv, cfg.comm_timeout_s);
  if (rank != 0) return;
  Manifest m{step, S, plan.job.name, {}};
  for (int s = 0; s < S; ++s)
    m.files.push_back({fs::relative(stage_checkpoint_path(cfg.checkpoint_dir, step, s), cfg.checkpoint_dir).string(),
                       {static_cast<uint64_t>(dv[2 * static_cast<size_t>(s)]),
                        static_cast<uint32_t>(dv[2 * static_cast<size_t>(s) + 1])}});
  write_manifest(cfg.checkpoint_dir, m);
}

}  // namespace

at::Device pick_device(const std::string& name) {
  if (name == "cpu") return at::kCPU;
  const bool have_cuda = at::hasCUDA();
  if (name == "cuda") {
    if (!have_cuda) throw InputError("--device", "device", "cuda requested but LibTorch sees no CUDA device");
    return at::Device(at::kCUDA, 0);
  }
  if (name == "auto") return have_cuda ? at::Device(at::kCUDA, 0) : at::Device(at::kCPU);
  throw InputError("--device", "device", "expected cpu, cuda or auto, got \"" + name + "\"");
}

std::pair<std::string, std::string> codec_pair(const std::string& flag) {
  if (flag.empty() || flag == "plan") return {"", ""};
  if (flag == "none") return {"none", "none"};
  if (flag == "int8") return {"int8-block", "int8-block"};
  if (flag == "fp8") return {"fp8-e4m3-block", "fp8-e5m2-block"};
  if (flag == "int4") return {"int4-block", "int8-block"};
  const auto& known = known_codec_names();
  if (std::find(known.begin(), known.end(), flag) != known.end())
    return {flag, flag == "int4-block" ? "int8-block" : flag};
  throw InputError("--codec", "codec", "expected none, int8, fp8, int4, plan or a codec name, got \"" + flag + "\"");
}

TestFault parse_test_fault(const std::string& text) {
  TestFault f;
  if (text.empty()) return f;
  auto bad = [&](const std::string& why) {
    return InputError("GEOPIPE_TEST_FAULT", "", "\"" + text + "\": " + why +
                                                   " (expected kill|kill-in-checkpoint|corrupt:rank=R:step=S)");
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
  else if (parts[0] == "kill-in-checkpoint") f.kind = TestFault::Kind::kKillInCheckpoint;
  else if (parts[0] == "corrupt") f.kind = TestFault::Kind::kCorrupt;
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
  f.rank = static_cast<int>(number(parts[1], "rank", 0));
  f.step = number(parts[2], "step", 1);
  return f;
}

TrainResult run_training(const Plan& plan, const TrainConfig& cfg, comm::Communicator* comm) {
  const int S = plan.num_stages();
  const int rank = comm ? comm->rank() : 0;
  const int stage = comm ? plan.stage_of_rank(rank) : 0;
  if (S > 1 && !comm) throw Error("a " + std::to_string(S) + "-stage plan needs MPI (run it under mpirun / geopipe launch)");
  if (comm && comm->size() != plan.world_size())
    throw InputError(cfg.plan_file, "stages", "plan needs " + std::to_string(plan.world_size()) +
                                                  " ranks, the job has " + std::to_string(comm->size()));
  if (stage < 0) throw InputError(cfg.plan_file, "stages", "rank " + std::to_string(rank) + " has no stage");
  const StagePlan& sp = plan.stages[stage];
  const bool first = stage == 0, last = stage == S - 1;
  const int64_t iters = cfg.iters ? *cfg.iters : plan.job.iterations;
  const bool rank0 = rank == 0;
  std::string fault_text;
  if (cfg.test_fault) fault_text = *cfg.test_fault;
  else if (const char* env = std::getenv("GEOPIPE_TEST_FAULT")) fault_text = env;
  const TestFault fault = parse_test_fault(fault_text);
  const int world = comm ? comm->size() : 1;
  if (fault.kind != TestFault::Kind::kNone && fault.rank >= world)
    throw InputError("GEOPIPE_TEST_FAULT", "", "\"" + fault_text + "\": rank " + std::to_string(fault.rank) +
                                                  " does not exist (the job has " + std::to_string(world) + " ranks)");
  if (fault.kind == TestFault::Kind::kCorrupt && !comm)
    throw InputError("GEOPIPE_TEST_FAULT", "", "\"" + fault_text + "\": a one-stage run sends no messages to corrupt");
  const bool my_fault = fault.kind != TestFault::Kind::kNone && fault.rank == rank;

  GptConfig gc = gpt_config(plan.job.model);
  if (cfg.dtype != "fp32" && cfg.dtype != "bf16")
    throw InputError("--dtype", "dtype", "expected fp32 or bf16, got \"" + cfg.dtype + "\"");
  const at::Device device = pick_device(cfg.device);
  // Every stage loads the data (first: inputs, last: targets); middle stages need none but
  // loading keeps the code path single and the file small.
  TokenDataset data = (first || last) ? TokenDataset::load(cfg.data_file, cfg.data_format, cfg.val_fraction)
                                      : TokenDataset::from_tokens(std::vector<uint16_t>(2, 0), 0.0, "unused");
  if ((first || last) && data.max_token() >= gc.vocab_size)
    throw InputError(cfg.data_file, "tokens", "token id " + std::to_string(data.max_token()) +
                                                  " does not fit the model's vocabulary of " +
                                                  std::to_string(gc.vocab_size));

  GptStage model(gc, sp.layer_begin, sp.layer_end, first, last, cfg.seed, device);
  OptimConfig oc = cfg.optim;
  if (oc.decay_steps <= 0) oc.decay_steps = iters;
  AdamW opt(model.named_parameters(), oc);

  TrainResult result;
  const double timeout_s = cfg.comm_timeout_s;
  if (cfg.resume) {
    if (cfg.checkpoint_dir.empty()) throw InputError("--resume", "resume", "needs --checkpoint-dir");
    auto manifest = read_manifest(cfg.checkpoint_dir);
    if (!manifest) throw InputError(cfg.checkpoint_dir, "manifest.json", "no checkpoint to resume from");
    if (manifest->num_stages != S || manifest->job != plan.job.name)
      throw InputError(manifest_path(cfg.checkpoint_dir), "num_stages",
                       "checkpoint of job " + manifest->job + " with " + std::to_string(manifest->num_stages) +
                           " stages does not match plan " + plan.job.name + " with " + std::to_string(S));
    // Every rank verifies its own stage file (size, CRC32C, meta); then all learn which stages
    // failed, so every rank refuses together, naming the file, before anything is written.
    FileCheck check = FileCheck::kOk;
    std::optional<InputError> refused;
    StageCheckpoint ck;
    try {
      ck = load_stage_checkpoint(cfg.checkpoint_dir, *manifest, stage, &check);
      if (ck.seed != cfg.seed)
        throw InputError(stage_checkpoint_path(cfg.checkpoint_dir, ck.step, stage), "meta.seed",
                         "checkpoint was trained with seed " + std::to_string(ck.seed) + ", this run has --seed " +
                             std::to_string(cfg.seed));
    } catch (const InputError& e) {
      refused = e;
      if (check == FileCheck::kOk) check = FileCheck::kUnreadable;
    }
    std::vector<double> failed(static_cast<size_t>(S), 0.0);
    failed[static_cast<size_t>(stage)] = static_cast<double>(check);
    if (comm) comm->allreduce_max(failed.data(), S, comm::Seconds(timeout_s));
    if (refused) throw *refused;
    for (int s = 0; s < S; ++s)
      if (failed[static_cast<size_t>(s)] != 0)
        throw InputError((fs::path(cfg.checkpoint_dir) / manifest->files[static_cast<size_t>(s)].path).string(), "",
                         std::string("stage ") + std::to_string(s) + "'s checkpoint file is " +
                             file_check_name(static_cast<FileCheck>(static_cast<int>(failed[static_cast<size_t>(s)]))) +
                             " (named by " + manifest_path(cfg.checkpoint_dir) + "); not resuming");
    copy_into(ck.model, model.named_parameters(), stage_checkpoint_path(cfg.checkpoint_dir, ck.step, stage));
    opt.load_state(ck.optimizer, ck.step, stage_checkpoint_path(cfg.checkpoint_dir, ck.step, stage));
    result.first_step = ck.step;
    if (rank0) spdlog::info("resumed from {} at step {} (every stage file verified: size and CRC32C)",
                            manifest_path(cfg.checkpoint_dir), ck.step);
    if (rank0 && !cfg.json_log.empty()) trim_json_log(cfg.json_log, ck.step);
  }

  ExecutorOptions eo;
  eo.seed = cfg.seed;
  std::tie(eo.codec_forward_override, eo.codec_backward_override) = codec_pair(cfg.codec);
  eo.comm_timeout_s = timeout_s;
  eo.bf16_autocast = cfg.dtype == "bf16";
  eo.record_trace = !cfg.trace_file.empty();
  if (my_fault && fault.kind == TestFault::Kind::kKill)
    eo.after_compute = [fault](int64_t step, const Action& a) {
      if (step + 1 == fault.step) die_by_sigkill(fault, "after " + to_string(a) + ", mid-iteration");
    };
  // NCCL for the links the plan marks "nccl" (ranks of one region on GPUs). Every rank decides
  // alike from the plan and its device, since creating the transport is collective.
  std::unique_ptr<comm::NcclTransport> nccl;
  const bool plan_wants_nccl = std::any_of(plan.links.begin(), plan.links.end(),
                                           [](const LinkPlan& l) { return l.transport == "nccl"; });
  if (comm && plan_wants_nccl && device.is_cuda() && comm::NcclTransport::available()) {
    nccl = std::make_unique<comm::NcclTransport>(*comm, device.has_index() ? device.index() : 0);
    if (rank0) spdlog::info("NCCL transport up for the plan's nccl links");
  }
  eo.nccl = nccl.get();
  PipelineExecutor exec(plan, stage, model, opt, data, comm, build_schedule(plan, cfg), oc, eo);

  std::ofstream jlog;
  if (rank0 && !cfg.json_log.empty()) {
    jlog.open(cfg.json_log, cfg.resume ? std::ios::app : std::ios::trunc);
    if (!jlog) throw InputError("--json-log", "json-log", "cannot write " + cfg.json_log);
  }
  if (rank0)
    spdlog::info("job {}: {} stages, {} micro-batches of {}x{} tokens, steps {}..{}, stage 0 has {} parameters",
                 plan.job.name, S, plan.job.micro_batches, plan.job.micro_batch, plan.job.model.seq_len,
                 result.first_step, iters, model.num_parameters());

  if (cfg.checkpoint_at_start && !cfg.resume) {
    if (cfg.checkpoint_dir.empty()) throw InputError("--checkpoint-at-start", "checkpoint-at-start", "needs --checkpoint-dir");
    write_checkpoint(plan, cfg, stage, rank, 0, model, opt, comm);
    if (rank0) spdlog::info("checkpointed the initial weights as step 0: {}", manifest_path(cfg.checkpoint_dir));
  }
  const double tokens_per_step =
      static_cast<double>(plan.job.micro_batch) * plan.job.model.seq_len * plan.job.micro_batches;
  RankTotals tot;
  const auto t_run = Clock::now();
  for (int64_t step = result.first_step; step < iters; ++step) {
    if (my_fault && fault.kind == TestFault::Kind::kCorrupt && step + 1 == fault.step) {
      spdlog::warn("GEOPIPE_TEST_FAULT corrupt: rank {}'s first send of step {} flips a payload byte", rank, step + 1);
      comm->inject_fault_for_testing(comm::TestFault::kCorruptPayload);
    }
    StepStats st = exec.train_step(step);
    if (!std::isfinite(st.loss)) throw Error("training diverged at step " + std::to_string(step) + ": loss is not finite");
    tot.compute_s += st.compute_s;
    tot.wait_s += st.wait_s;
    tot.fwd_raw += static_cast<double>(st.fwd_raw);
    tot.fwd_wire += static_cast<double>(st.fwd_wire);
    tot.bwd_raw += static_cast<double>(st.bwd_raw);
    tot.bwd_wire += static_cast<double>(st.bwd_wire);
    result.steps.push_back(st);
    result.steps.back().links = {};  // logged below; not kept per step (memory of long runs)
    std::optional<double> val;
    const bool final_step = step + 1 == iters;
    if (cfg.eval_every > 0 && ((step + 1) % cfg.eval_every == 0 || final_step)) {
      val = exec.evaluate(step, cfg.eval_batches);
      result.val_losses.emplace_back(step + 1, *val);
    }
    if (!cfg.checkpoint_dir.empty() && cfg.checkpoint_every > 0 && ((step + 1) % cfg.checkpoint_every == 0 || final_step)) {
      std::function<void()> midway;
      if (my_fault && fault.kind == TestFault::Kind::kKillInCheckpoint && step + 1 == fault.step)
        midway = [&] { die_by_sigkill(fault, "half-way through writing " + stage_checkpoint_path(cfg.checkpoint_dir, step + 1, stage) + ".tmp"); };
      write_checkpoint(plan, cfg, stage, rank, step + 1, model, opt, comm, midway);
    }
    const double tok_s = st.step_s > 0 ? tokens_per_step / st.step_s : 0;
    const double elapsed = std::chrono::duration<double>(Clock::now() - t_run).count();
    const int64_t done = step + 1 - result.first_step;
    if (rank0 && cfg.progress) {
      const double eta = elapsed / static_cast<double>(done) * static_cast<double>(iters - step - 1);
      std::string line = fmt::format("step {}/{} | loss {:.4f}", step + 1, iters, st.loss);
      if (val) line += fmt::format(" | val {:.4f}", *val);
      line += fmt::format(" | lr {:.2e} | norm {:.3f} | {:.0f} tok/s | {:.3f} s/step", st.lr, st.grad_norm, tok_s,
                          st.step_s);
      // The slowest link this step by measured throughput, and how long its receiver waited.
      const LinkStats* slow = nullptr;
      for (const auto& l : st.links)
        if (l.busy_s > 0 && (!slow || l.mb_per_s() < slow->mb_per_s())) slow = &l;
      if (slow) line += fmt::format(" | slowest link {} {:.3g} MB/s wait {:.3f} s", slow->name(), slow->mb_per_s(), slow->wait_s);
      line += " | ETA " + fmt_duration(eta);
      std::printf("%s\n", line.c_str());
      std::fflush(stdout);
    }
    if (jlog.is_open()) {
      nlohmann::json j = {{"step", step + 1},  {"loss", st.loss},     {"lr", st.lr},
                          {"grad_norm", st.grad_norm}, {"tokens_per_s", tok_s}, {"step_s", st.step_s},
                          {"elapsed_s", elapsed}};
      if (val) j["val_loss"] = *val;
      if (!st.links.empty()) {
        nlohmann::json links = nlohmann::json::object();
        for (const auto& l : st.links)
          links[l.name()] = {{"mb_per_s", l.mb_per_s()}, {"wait_s", l.wait_s}, {"busy_s", l.busy_s}, {"bytes", l.bytes}};
        j["links"] = links;
      }
      jlog << j.dump() << "\n";
      jlog.flush();
    }
  }
  tot.wall_s = std::chrono::duration<double>(Clock::now() - t_run).count();

  // Summary: every rank's totals in its slot, one all-reduce.
  constexpr int K = 7;
  std::vector<double> v(static_cast<size_t>(S) * K, 0.0);
  const double mine[K] = {tot.compute_s, tot.wait_s, tot.wall_s, tot.fwd_raw, tot.fwd_wire, tot.bwd_raw, tot.bwd_wire};
  std::copy(mine, mine + K, v.begin() + static_cast<std::ptrdiff_t>(stage) * K);
  allreduce_sum(comm, v, timeout_s);
  auto at_ = [&](int s, int k) { return v[static_cast<size_t>(s) * K + k]; };
  if (rank0 && !result.steps.empty()) {
    std::ostringstream o;
    const double steps = static_cast<double>(result.steps.size());
    o << fmt::format("summary: {} steps, final loss {:.4f}", result.steps.size(), result.steps.back().loss);
    if (!result.val_losses.empty()) o << fmt::format(", validation loss {:.4f}", result.val_losses.back().second);
    o << fmt::format(", {:.3f} s/step\n", tot.wall_s / steps);
    o << "  stage  region          compute  comm-wait  idle+other\n";
    double energy_kwh = 0, cost_usd = 0;
    for (int s = 0; s < S; ++s) {
      const double wall = std::max(at_(s, 2), 1e-9);
      const double c = at_(s, 0) / wall, w = at_(s, 1) / wall;
      o << fmt::format("  {:<5}  {:<14} {:7.1f}%  {:8.1f}%  {:9.1f}%\n", s, plan.stages[s].region, 100 * c, 100 * w,
                       100 * std::max(0.0, 1 - c - w));
      if (cfg.topology) {
        const int ri = cfg.topology->region_index(plan.stages[s].region);
        if (ri >= 0) {
          const Region& r = cfg.topology->regions[ri];
          const double kwh = r.gpu_power_w * r.pue * at_(s, 2) / 3.6e6;
          energy_kwh += kwh;
          cost_usd += kwh * r.price_usd_per_kwh;
        }
      }
    }
    if (S > 1) o << "  link   activations raw -> wire (codec)      gradients raw -> wire (codec)\n";
    const auto [over_f, over_b] = codec_pair(cfg.codec);
    for (int s = 0; s + 1 < S; ++s) {
      const LinkPlan* l = plan.link_between(s, s + 1);
      const std::string cf = !over_f.empty() ? over_f : l ? l->codec_forward : "none";
      const std::string cb = !over_b.empty() ? over_b : l ? l->codec_backward : "none";
      o << fmt::format("  {}->{}   {:>9} -> {:>9} ({:<14})  {:>9} -> {:>9} ({})\n", s, s + 1, fmt_bytes(at_(s, 3)),
                       fmt_bytes(at_(s, 4)), cf, fmt_bytes(at_(s + 1, 5)), fmt_bytes(at_(s + 1, 6)), cb);
    }
    if (cfg.topology)
      o << fmt::format("  electricity: {:.6f} kWh, ${:.6f} at the regions' prices (GPU power x PUE x wall time)\n",
                       energy_kwh, cost_usd);
    result.summary = o.str();
  }

  // Trace: every rank's spans to rank 0, which writes one Chrome trace (one track per rank).
  if (!cfg.trace_file.empty()) {
    nlohmann::json mine = nlohmann::json::array();
    mine.push_back({{"name", "process_name"}, {"ph", "M"}, {"pid", rank}, {"tid", 0},
                    {"args", {{"name", fmt::format("rank {} stage {} ({})", rank, stage, sp.region)}}}});
    for (const auto& s : exec.trace())
      mine.push_back({{"name", s.name}, {"ph", "X"}, {"pid", rank}, {"tid", 0}, {"ts", s.start_us}, {"dur", s.dur_us},
                      {"cat", s.name.rfind("SEND", 0) == 0 || s.name.find("wait") != std::string::npos ? "comm" : "compute"}});
    if (!rank0) {
      std::string text = mine.dump();
      comm::MessageHeader h;
      h.kind = comm::MessageKind::kBytes;
      h.stage = stage;
      comm::Request r = comm->isend(text.data(), text.size(), 0, kTagTrace, h);
      r.wait(comm::Seconds(timeout_s));
    } else {
      nlohmann::json all = mine;
      for (int r = 1; comm && r < comm->size(); ++r) {
        comm::Request req = comm->irecv_any_size(r, kTagTrace);
        req.wait(comm::Seconds(timeout_s));
        const auto& p = req.payload();
        for (auto& e : nlohmann::json::parse(p.begin(), p.end())) all.push_back(std::move(e));
      }
      // otherData ties the trace to its plan and to the log's step numbers (geopipe report).
      nlohmann::json doc = {{"traceEvents", all},
                            {"displayTimeUnit", "ms"},
                            {"otherData", {{"plan_hash", plan.hash()}, {"first_step", result.first_step}}}};
      write_file_atomic(cfg.trace_file, doc.dump() + "\n");
    }
  }
  return result;
}

int64_t export_checkpoint(const std::string& dir, const ModelSpec& spec, const std::string& out_file) {
  auto manifest = read_manifest(dir);
  if (!manifest) throw InputError(dir, "manifest.json", "no checkpoint found");
  std::vector<NamedTensor> all;
  for (int s = 0; s < manifest->num_stages; ++s) {
    StageCheckpoint ck = load_stage_checkpoint(dir, *manifest, s);  // size and CRC32C verified
    all.insert(all.end(), ck.model.begin(), ck.model.end());
  }
  const GptConfig gc = gpt_config(spec);
  GptStage full(gc, 0, gc.n_layer, true, true, 0);  // the names and shapes every parameter must have
  copy_into(all, full.named_parameters(), dir);      // throws naming a missing or misshaped one
  save_model_file(out_file, full.named_parameters(), gc, manifest->step);
  return manifest->step;
}

void write_profile(const Plan& plan, const std::string& device_name, const std::string& out_file, int repeats,
                   comm::Communicator* comm, double timeout_s) {
  GptConfig gc = gpt_config(plan.job.model);
  const at::Device device = pick_device(device_name);
  GptStage model(gc, 0, gc.n_layer, true, true, 1, device);
  const int B = plan.job.micro_batch, T = gc.block_size;
  at::Tensor tokens = at::randint(gc.vocab_size, {B, T}, at::TensorOptions().dtype(at::kLong)).to(device);
  auto sync = [&] {
    if (device.is_cuda()) at::empty({1}, at::TensorOptions().device(device)).cpu();  // waits for the stream
  };
  // Times f (forward) and the backward of its output, median over `repeats` after one warm-up.
  auto time_it = [&](const std::function<at::Tensor()>& fwd) {
    std::vector<double> f, b;
    for (int i = 0; i <= repeats; ++i) {
      sync();
      auto t0 = Clock::now();
      at::Tensor y = fwd();
      sync();
      auto t1 = Clock::now();
      y.backward(at::ones_like(y));
      sync();
      auto t2 = Clock::now();
      if (i == 0) continue;
      f.push_back(std::chrono::duration<double>(t1 - t0).count());
      b.push_back(std::chrono::duration<double>(t2 - t1).count());
    }
    std::sort(f.begin(), f.end());
    std::sort(b.begin(), b.end());
    return scheduler::PhaseTimes{f[f.size() / 2], b[b.size() / 2]};
  };
  at::Tensor hidden = model.embed(tokens).detach();
  // Co-located ranks start together, so each one measures while the others compute too.
  if (comm) comm->barrier(comm::Seconds(timeout_s));
  scheduler::Profile p;
  p.device = device.is_cuda() ? "cuda" : "cpu";
  p.model = plan.job.model;
  p.micro_batch = B;
  p.embedding = time_it([&] { return model.embed(tokens); });
  double lf = 0, lb = 0;
  for (int i = 0; i < gc.n_layer; ++i) {
    at::Tensor x = hidden.clone().set_requires_grad(true);
    auto t = time_it([&] { return model.block(i, x); });
    lf += t.forward_s;
    lb += t.backward_s;
  }
  p.layer = {lf / gc.n_layer, lb / gc.n_layer};
  at::Tensor x = hidden.clone().set_requires_grad(true);
  at::Tensor targets = at::randint(gc.vocab_size, {B, T}, at::TensorOptions().dtype(at::kLong)).to(device);
  p.head = time_it([&] { return GptStage::loss(model.head(x), targets); });
  p.note = "measured by geopipe-train --profile (median of " + std::to_string(repeats) + " runs)";
  if (comm && comm->size() > 1) {
    std::vector<double> v = {p.embedding.forward_s, p.embedding.backward_s, p.layer.forward_s,
                             p.layer.backward_s,    p.head.forward_s,      p.head.backward_s};
    comm->allreduce_sum(v.data(), static_cast<int>(v.size()), comm::Seconds(timeout_s));
    for (double& x : v) x /= comm->size();
    p.embedding = {v[0], v[1]};
    p.layer = {v[2], v[3]};
    p.head = {v[4], v[5]};
    p.note = "measured by geopipe-train --profile on " + std::to_string(comm->size()) +
             " ranks at once, mean over the ranks of each one's median of " + std::to_string(repeats) +
             " runs: the times of stages that share this host";
    if (comm->rank() != 0) return;
  }
  scheduler::save_profile(p, out_file);
}

}  // namespace geopipe::runtime
