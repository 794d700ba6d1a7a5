#include <geopipe/comm/communicator.h>
#include <geopipe/comm/group.h>
#include <geopipe/comm/nccl_transport.h>
#include <geopipe/comm/router.h>
#include <geopipe/core/error.h>
#include <geopipe/core/log.h>
#include <geopipe/runtime/checkpoint.h>
#include <geopipe/runtime/trainer.h>

#include "grad_reducer.h"
#include "trainer_parts.h"
#include "wait_state.h"

#include <csignal>
#include <cstdlib>

#include <ATen/ATen.h>
#include <mpi.h>
#ifdef GEOPIPE_TORCH_HAS_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

namespace geopipe::runtime {

namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;

Schedule build_schedule(const Plan& plan, const TrainConfig& cfg) {
  const int R = plan.world_size() / plan.replicas(), M = plan.job.micro_batches;  // one replica's pipeline
  // NCCL pairs sends and receives in issue order: the order must survive the rendezvous dry run
  // too (the generators' orders are checked by runtime_schedule_test; a user's here).
  const bool nccl = std::any_of(plan.links.begin(), plan.links.end(),
                                [](const LinkPlan& l) { return l.transport == "nccl"; });
  if (!cfg.schedule_file.empty()) {
    Schedule s = load_schedule_file(cfg.schedule_file);
    if (s.num_ranks != R || s.num_stages != plan.num_stages())
      throw InputError(cfg.schedule_file, "schedule", "has " + std::to_string(s.num_stages) + " stages on " +
                                                          std::to_string(s.num_ranks) + " ranks, the plan " +
                                                          std::to_string(plan.num_stages()) + " on " + std::to_string(R));
    if (s.num_micro_batches != M)
      throw InputError(cfg.schedule_file, "schedule", "has " + std::to_string(s.num_micro_batches) +
                                                          " micro-batches, the job has " + std::to_string(M));
    return prepare_schedule(s, cfg.schedule_file, nccl);
  }
  const std::string kind = cfg.schedule == "plan" ? plan.schedule.kind : cfg.schedule;
  const int V = plan.schedule.virtual_stages;
  if (cfg.schedule != "plan" && V != 1)
    throw InputError("--schedule", "schedule", "the plan runs " + std::to_string(V) + " stages per rank (" +
                                                   plan.schedule.kind + "); --schedule applies to one stage per rank");
  return prepare_schedule(schedule_for(kind, R, M, V, plan.schedule.warmup), cfg.plan_file + " (schedule " + kind + ")",
                          nccl);
}

}  // namespace

namespace {
// The wait that describes this rank now: the current one when it has lasted a second, else one
// of a second or more that ended within the last second (see wait_state.h), else the current one.
std::pair<int, int64_t> blocking_wait() {
  const int64_t now = detail::monotonic_ms();
  const int peer = detail::g_waiting_for.load();
  const int64_t lasted = peer == detail::kNotWaiting ? 0 : now - detail::g_waiting_since_ms.load();
  if (lasted >= detail::kLongWaitMs) return {peer, lasted};
  if (now - detail::g_long_wait_end_ms.load() < detail::kLongWaitMs && detail::g_long_wait_peer.load() != detail::kNotWaiting)
    return {detail::g_long_wait_peer.load(), detail::g_long_wait_ms.load()};
  return {peer, lasted};
}
}  // namespace

int rank_waiting_for() { return blocking_wait().first; }
int64_t rank_waited_ms() { return blocking_wait().second; }

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

std::optional<int64_t> device_allocator_peak_bytes(const at::Device& device) {
#ifdef GEOPIPE_TORCH_HAS_CUDA
  if (device.is_cuda()) {
    using namespace c10::cuda::CUDACachingAllocator;
    const DeviceStats stats = getDeviceStats(device.index() < 0 ? 0 : device.index());
    return stats.allocated_bytes[static_cast<size_t>(StatType::AGGREGATE)].peak;
  }
#else
  (void)device;
#endif
  return std::nullopt;
}

void reset_device_allocator_peak(const at::Device& device) {
#ifdef GEOPIPE_TORCH_HAS_CUDA
  if (device.is_cuda()) c10::cuda::CUDACachingAllocator::resetPeakStats(device.index() < 0 ? 0 : device.index());
#else
  (void)device;
#endif
}

std::pair<std::string, std::string> codec_pair(const std::string& flag) {
  if (flag.empty() || flag == "plan" || flag == "adaptive") return {"", ""};  // adaptive starts at the plan's
  if (flag == "none") return {"none", "none"};
  if (flag == "int8") return {"int8-block", "int8-block"};
  if (flag == "fp8") return {"fp8-e4m3-block", "fp8-e5m2-block"};
  if (flag == "int4") return {"int4-block", "int8-block"};
  const auto& known = known_codec_names();
  if (std::find(known.begin(), known.end(), flag) != known.end())
    return {flag, flag == "int4-block" ? "int8-block" : flag};
  throw InputError("--codec", "codec",
                   "expected none, int8, fp8, int4, plan, adaptive or a codec name, got \"" + flag + "\"");
}

namespace {

// The stages this rank runs, checked against the plan and the communicator.
std::vector<int> checked_stages(const Plan& plan, const TrainConfig& cfg, comm::Communicator* comm) {
  const int rank = comm ? comm->rank() : 0;
  if (plan.world_size() > 1 && !comm)
    throw Error("a " + std::to_string(plan.world_size()) + "-rank plan needs MPI (run it under mpirun / geopipe launch)");
  if (comm && comm->size() != plan.world_size())
    throw InputError(cfg.plan_file, "stages", "plan needs " + std::to_string(plan.world_size()) +
                                                  " ranks, the job has " + std::to_string(comm->size()));
  std::vector<int> stages = plan.stages_of_rank(rank);
  if (stages.empty()) throw InputError(cfg.plan_file, "stages", "rank " + std::to_string(rank) + " has no stage");
  if (cfg.dtype != "fp32" && cfg.dtype != "bf16")
    throw InputError("--dtype", "dtype", "expected fp32 or bf16, got \"" + cfg.dtype + "\"");
  return stages;
}

// The first stage needs the inputs and the last the targets; a rank with neither loads nothing
// (an empty stand-in keeps the code path single).
TokenDataset rank_data(const Plan& plan, const TrainConfig& cfg, const std::vector<int>& stages) {
  const bool needs = stages.front() == 0 || stages.back() + 1 == plan.num_stages();
  if (!needs) return TokenDataset::from_tokens(std::vector<uint16_t>(2, 0), 0.0, "unused");
  TokenDataset data = TokenDataset::load(cfg.data_file, cfg.data_format, cfg.val_fraction);
  if (data.max_token() >= plan.job.model.vocab)
    throw InputError(cfg.data_file, "tokens", "token id " + std::to_string(data.max_token()) +
                                                  " does not fit the model's vocabulary of " +
                                                  std::to_string(plan.job.model.vocab));
  return data;
}

// This rank's stages: a model and an optimizer each.
struct RankModels {
  std::vector<std::unique_ptr<GptStage>> models;
  std::vector<std::unique_ptr<AdamW>> optimizers;
  std::vector<StageChunk> chunks;
  int64_t num_parameters = 0;
};
RankModels build_models(const Plan& plan, const std::vector<int>& stages, const OptimConfig& oc, uint64_t seed,
                        at::Device device, int replica, bool shard) {
  RankModels m;
  const GptConfig gc = gpt_config(plan.job.model);
  for (int s : stages) {
    const StagePlan& sp = plan.stages[static_cast<size_t>(s)];
    m.models.push_back(std::make_unique<GptStage>(gc, sp.layer_begin, sp.layer_end, s == 0,
                                                  s + 1 == plan.num_stages(), seed, device));
    m.optimizers.push_back(shard ? std::make_unique<AdamW>(GradReducer::shard_of(*m.models.back(), plan.replicas(), replica), oc)
                                 : std::make_unique<AdamW>(m.models.back()->named_parameters(), oc));
    m.chunks.push_back({s, m.models.back().get(), m.optimizers.back().get()});
    m.num_parameters += m.models.back()->num_parameters();
  }
  return m;
}

ExecutorOptions executor_options(const TrainConfig& cfg) {
  ExecutorOptions eo;
  eo.seed = cfg.seed;
  std::tie(eo.codec_forward_override, eo.codec_backward_override) = codec_pair(cfg.codec);
  eo.adaptive_codecs = cfg.codec == "adaptive";
  eo.comm_timeout_s = cfg.comm_timeout_s;
  eo.bf16_autocast = cfg.dtype == "bf16";
  eo.record_trace = !cfg.trace_file.empty();
  eo.recompute = parse_recompute(cfg.recompute);
  return eo;
}

// NCCL for the links the plan marks "nccl" (ranks of one region on GPUs), as comm's Router
// decides: alike on every rank, since creating the transport is collective.
std::unique_ptr<comm::NcclTransport> nccl_for(const Plan& plan, at::Device device, comm::Communicator* comm) {
  std::vector<std::string> transports;
  for (const LinkPlan& l : plan.links) transports.push_back(l.transport);
  if (!comm || !comm::Router::needs_nccl(transports, device.is_cuda())) return nullptr;
  auto nccl = std::make_unique<comm::NcclTransport>(*comm, device.has_index() ? device.index() : 0);
  if (comm->rank() == 0) spdlog::info("NCCL transport up for the plan's nccl links");
  return nccl;
}

// The group of this rank's stage replicas (collective over every rank; none with one replica),
// and the one the gradients travel on: NCCL when the stage is on a GPU, else the MPI group.
struct ReplicaGroups {
  std::unique_ptr<comm::MpiGroup> mpi;
  std::unique_ptr<comm::ProcessGroup> nccl;
  comm::ProcessGroup* grads() const { return nccl ? nccl.get() : mpi.get(); }
};
ReplicaGroups replica_groups(const Plan& plan, const TrainConfig& cfg, at::Device device, comm::Communicator* comm) {
  ReplicaGroups g;
  if (cfg.shard_optimizer && plan.replicas() < 2)
    throw InputError("--shard-optimizer", "shard-optimizer", "needs a plan with replicas (this one has 1 rank per stage)");
  if (plan.replicas() < 2) return g;
  const int rank = comm->rank(), stage = plan.stage_of_rank(rank);
  std::string ranks;
  for (int r : plan.stages[static_cast<size_t>(stage)].ranks) ranks += (ranks.empty() ? "" : ", ") + std::to_string(r);
  g.mpi = std::make_unique<comm::MpiGroup>(*comm, plan.rank_of(stage, 0), plan.replica_of(rank),
                                           "stage " + std::to_string(stage) + " replicas (ranks " + ranks + ")");
  if (device.is_cuda()) g.nccl = comm::make_nccl_group(*g.mpi, device.has_index() ? device.index() : 0);
  return g;
}

bool due(int every, int64_t steps_done, bool final_step) {
  return every > 0 && (steps_done % every == 0 || final_step);
}

}  // namespace

TrainResult run_training(const Plan& plan, const TrainConfig& cfg, comm::Communicator* comm) {
  const std::vector<int> stages = checked_stages(plan, cfg, comm);
  const int rank = comm ? comm->rank() : 0;
  const int64_t iters = cfg.iters ? *cfg.iters : plan.job.iterations;
  const detail::FaultHooks faults(cfg, rank, comm);
  const at::Device device = pick_device(cfg.device);
  const TokenDataset data = rank_data(plan, cfg, stages);
  OptimConfig oc = cfg.optim;
  if (oc.decay_steps <= 0) oc.decay_steps = iters;
  RankModels m = build_models(plan, stages, oc, cfg.seed, device, std::max(plan.replica_of(rank), 0), cfg.shard_optimizer);
  const ReplicaGroups groups = replica_groups(plan, cfg, device, comm);

  TrainResult result;
  for (const auto& opt : m.optimizers) result.optimizer_state_bytes += opt->state_bytes();
  if (cfg.resume) result.first_step = detail::resume(plan, cfg, m.chunks, comm);
  ExecutorOptions eo = executor_options(cfg);
  faults.install(eo);
  const std::unique_ptr<comm::NcclTransport> nccl = nccl_for(plan, device, comm);
  eo.nccl = nccl.get();
  eo.replica_group = groups.grads();
  eo.shard_optimizer = cfg.shard_optimizer;
  PipelineExecutor exec(plan, m.chunks, data, comm, build_schedule(plan, cfg), oc, eo);
  detail::StepLogger logger(plan, cfg, rank == 0, result.first_step, iters);
  if (rank == 0)
    spdlog::info("job {}: {} stages on {} ranks, {} micro-batches of {}x{} tokens, steps {}..{}, rank 0 has {} parameters",
                 plan.job.name, plan.num_stages(), plan.world_size(), plan.job.micro_batches, plan.job.micro_batch,
                 plan.job.model.seq_len, result.first_step, iters, m.num_parameters);
  detail::CheckpointWriter checkpoints(plan, cfg, comm);
  if (cfg.checkpoint_at_start && !cfg.resume) {
    if (cfg.checkpoint_dir.empty()) throw InputError("--checkpoint-at-start", "checkpoint-at-start", "needs --checkpoint-dir");
    checkpoints.begin(m.chunks, 0);
    checkpoints.finish();
    if (rank == 0) spdlog::info("checkpointed the initial weights as step 0: {}", manifest_path(cfg.checkpoint_dir));
  }

  detail::RunTotals totals;
  auto finish_checkpoint = [&](StepStats& st) {
    const detail::CheckpointTimes t = checkpoints.finish();
    st.checkpoint_blocked_s += t.blocked_s;
    st.checkpoint_write_s += t.write_s;
    ++totals.checkpoints;
  };
  const auto t_run = std::chrono::steady_clock::now();
  for (int64_t step = result.first_step; step < iters; ++step) {
    faults.before_step(step, comm);
    if (comm) comm->begin_step(step);  // link events timed in steps (shaper.h)
    StepStats st = exec.train_step(step);
    if (!std::isfinite(st.loss)) throw Error("training diverged at step " + std::to_string(step) + ": loss is not finite");
    faults.after_step(step, m.chunks);
    if (checkpoints.pending()) finish_checkpoint(st);  // begun after the previous step, written during this one
    const bool final_step = step + 1 == iters;
    std::optional<double> val;
    if (due(cfg.eval_every, step + 1, final_step)) {
      val = exec.evaluate(step, cfg.eval_batches);
      result.val_losses.emplace_back(step + 1, *val);
    }
    if (!cfg.checkpoint_dir.empty() && due(cfg.checkpoint_every, step + 1, final_step))
      st.checkpoint_blocked_s += checkpoints.begin(
          m.chunks, step + 1,
          faults.checkpoint_midway(step + 1, stage_checkpoint_path(cfg.checkpoint_dir, step + 1, stages.front())));
    if (final_step && checkpoints.pending()) finish_checkpoint(st);  // the last: nothing left to overlap
    totals.add(st);
    logger.log(st, val);
    result.steps.push_back(st);
    result.steps.back().links = {};  // logged; not kept per step (memory of long runs)
  }
  totals.wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_run).count();
  result.summary = detail::summarize(plan, cfg, totals, result, comm);
  if (!cfg.trace_file.empty()) detail::write_trace(plan, cfg, exec.trace(), result.first_step, comm);
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

}  // namespace geopipe::runtime
