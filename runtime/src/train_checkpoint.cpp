// Resuming a training run: every file a rank needs verified first, then each stage's tensors from
// the checkpoint's files that hold them, in whatever layout they were written (checkpoint.h holds
// the files' format; checkpoint_writer.cpp writes them).
#include "reshard.h"
#include "trainer_parts.h"

#include <geopipe/comm/communicator.h>
#include <geopipe/core/error.h>
#include <geopipe/runtime/checkpoint.h>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>

namespace geopipe::runtime::detail {

namespace fs = std::filesystem;

// On resume, rank 0 keeps the JSON log's lines up to the resumed step (a killed run may have
// logged steps after its last checkpoint, or a torn last line), so the log stays one trajectory,
// and the supervisor's restart lines (geopipe launch --max-restarts).
void trim_json_log(const std::string& path, int64_t last_step) {
  std::ifstream in(path);
  if (!in) return;
  std::string kept, line;
  while (std::getline(in, line)) {
    const auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    const bool step_kept = j.is_object() && j.contains("step") && j["step"].is_number_integer() &&
                           j["step"].get<int64_t>() <= last_step;
    if (step_kept || (j.is_object() && j.contains("restart"))) kept += line + "\n";  // restarts: the supervisor's
  }
  in.close();
  write_file_atomic(path, kept);
}

namespace {

// Loads one file of this rank's stage (size, CRC32C, meta and seed checked); nullopt with
// `*check` set when it is refused, so that every rank can learn of it before anyone throws.
std::optional<StageCheckpoint> load_own_file(const TrainConfig& cfg, const Manifest& manifest, int stage, int shard,
                                             FileCheck* check, std::optional<InputError>* refused) {
  try {
    StageCheckpoint ck = load_stage_checkpoint(cfg.checkpoint_dir, manifest, stage, shard, check);
    if (ck.seed != cfg.seed)
      throw InputError(stage_checkpoint_path(cfg.checkpoint_dir, ck.step, stage, shard, ck.shards), "meta.seed",
                       "checkpoint was trained with seed " + std::to_string(ck.seed) + ", this run has --seed " +
                           std::to_string(cfg.seed));
    return ck;
  } catch (const InputError& e) {
    *refused = e;
    if (*check == FileCheck::kOk) *check = FileCheck::kUnreadable;
    return std::nullopt;
  }
}

// --resume takes a checkpoint of the same job and model under any layout; one written before
// manifests recorded their layout only under the same stages (assumed to have the same split).
Manifest checked_layout(const Plan& plan, const TrainConfig& cfg, Manifest m) {
  const std::string mpath = manifest_path(cfg.checkpoint_dir);
  if (m.job != plan.job.name)
    throw InputError(mpath, "job", "checkpoint of job " + m.job + ", the plan runs job " + plan.job.name);
  check_same_model(m, gpt_config(plan.job.model), mpath);
  if (m.layers.empty()) {
    if (m.num_stages != plan.num_stages())
      throw InputError(mpath, "layers", "the checkpoint records no layer split (written before resharding) and has " +
                                            std::to_string(m.num_stages) + " stages, the plan " +
                                            std::to_string(plan.num_stages()) + ": resume it with its own plan");
    m.layers = layer_split(plan);
  }
  return m;
}

}  // namespace

namespace {

// "[0, 2) [2, 3) [3, 4)": a layer split, for the log.
std::string layers_text(const std::vector<std::pair<int, int>>& layers) {
  std::string out;
  for (const auto& [b, e] : layers) out += (out.empty() ? "[" : " [") + std::to_string(b) + ", " + std::to_string(e) + ")";
  return out;
}

// A file of the checkpoint: (stage, optimizer shard).
using FileKey = std::pair<int, int>;

// Every rank verifies the files its stages need (those of the checkpoint's stages that hold
// their layers, every optimizer shard of each); then all learn which failed, so every rank
// refuses together, naming the file, before anything is loaded.
std::map<FileKey, StageCheckpoint> load_verified(const TrainConfig& cfg, const Manifest& m,
                                                 const std::vector<StageChunk>& chunks, comm::Communicator* comm) {
  const int shards = m.optimizer_shards;
  std::optional<InputError> refused;
  std::map<FileKey, StageCheckpoint> loaded;
  std::vector<double> failed(static_cast<size_t>(m.num_stages * shards), 0.0);
  for (const StageChunk& c : chunks)
    for (int stage : source_stages(m, *c.model))
      for (int shard = 0; shard < shards; ++shard) {
        if (loaded.count({stage, shard})) continue;
        FileCheck check = FileCheck::kOk;
        if (auto ck = load_own_file(cfg, m, stage, shard, &check, &refused)) loaded.emplace(FileKey{stage, shard}, std::move(*ck));
        failed[static_cast<size_t>(stage * shards + shard)] = static_cast<double>(check);
      }
  if (comm) comm->allreduce_max(failed.data(), static_cast<int>(failed.size()), comm::Seconds(cfg.comm_timeout_s));
  if (refused) throw *refused;
  for (size_t i = 0; i < failed.size(); ++i)
    if (failed[i] != 0) {
      const int stage = static_cast<int>(i) / shards, shard = static_cast<int>(i) % shards;
      throw InputError((fs::path(cfg.checkpoint_dir) / m.file(stage, shard).path).string(), "",
                       "stage " + std::to_string(stage) + (shards > 1 ? " shard " + std::to_string(shard) : "") +
                           "'s checkpoint file is " + file_check_name(static_cast<FileCheck>(static_cast<int>(failed[i]))) +
                           " (named by " + manifest_path(cfg.checkpoint_dir) + "); not resuming");
    }
  return loaded;
}

// One stage's parameters and optimizer state from the files that hold its tensors, wherever
// (in whichever layout) they were written.
void load_stage(const Manifest& m, const std::map<FileKey, StageCheckpoint>& files, const StageChunk& c,
                const std::string& source) {
  std::vector<NamedTensor> model;
  std::map<std::string, at::Tensor> optimizer;
  for (int stage : source_stages(m, *c.model))
    for (int shard = 0; shard < m.optimizer_shards; ++shard) {
      const StageCheckpoint& ck = files.at({stage, shard});
      model.insert(model.end(), ck.model.begin(), ck.model.end());
      for (const NamedTensor& t : ck.optimizer) optimizer.emplace(t.name, t.tensor);
    }
  const std::vector<NamedTensor> params = c.model->named_parameters();
  copy_into(model, params, source);
  c.optimizer->load_state(whole_optimizer_state(optimizer, params, source), m.step, source);
}

}  // namespace

int64_t resume(const Plan& plan, const TrainConfig& cfg, const std::vector<StageChunk>& chunks,
               comm::Communicator* comm) {
  if (cfg.checkpoint_dir.empty()) throw InputError("--resume", "resume", "needs --checkpoint-dir");
  auto read = read_manifest(cfg.checkpoint_dir);
  if (!read) throw InputError(cfg.checkpoint_dir, "manifest.json", "no checkpoint to resume from");
  const Manifest manifest = checked_layout(plan, cfg, *read);
  check_tensor_index(manifest, gpt_config(plan.job.model), layer_split(plan), manifest_path(cfg.checkpoint_dir));
  const std::string source = manifest_path(cfg.checkpoint_dir) + " (step " + std::to_string(manifest.step) + ")";
  const std::map<FileKey, StageCheckpoint> files = load_verified(cfg, manifest, chunks, comm);
  for (const StageChunk& c : chunks) load_stage(manifest, files, c, source);
  if (!comm || comm->rank() == 0) {
    spdlog::info("resumed from {} at step {} (every stage file verified: size and CRC32C)",
                 manifest_path(cfg.checkpoint_dir), manifest.step);
    const std::vector<std::pair<int, int>> mine = layer_split(plan);
    if (manifest.layers != mine || manifest.optimizer_shards != optimizer_shards(plan, cfg))
      spdlog::info("resharded the checkpoint (stages {}, optimizer state in {} shard(s) per stage) into this plan "
                   "(stages {}, {} shard(s) per stage)",
                   layers_text(manifest.layers), manifest.optimizer_shards, layers_text(mine),
                   optimizer_shards(plan, cfg));
    const int step_micro_batches = plan.replicas() * plan.job.micro_batches;
    if (manifest.step_micro_batches > 0 && manifest.step_micro_batches != step_micro_batches)
      spdlog::warn("the checkpoint's run took {} micro-batches per optimizer step, this one takes {} ({} replicas x {}): "
                   "the trajectory changes",
                   manifest.step_micro_batches, step_micro_batches, plan.replicas(), plan.job.micro_batches);
    if (!cfg.json_log.empty()) trim_json_log(cfg.json_log, manifest.step);
  }
  return manifest.step;
}

}  // namespace geopipe::runtime::detail
