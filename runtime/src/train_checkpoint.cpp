// The checkpoint protocol of a training run: writing every stage's file and the manifest, and
// resuming with every stage file verified first (checkpoint.h holds the files' format).
#include "trainer_parts.h"

#include <geopipe/comm/communicator.h>
#include <geopipe/core/error.h>
#include <geopipe/runtime/checkpoint.h>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <filesystem>
#include <fstream>

namespace geopipe::runtime::detail {

namespace fs = std::filesystem;

namespace {

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

// Loads this stage's file (size, CRC32C, meta and seed checked); nullopt with `*check` set when
// it is refused, so that every rank can learn of it before anyone throws.
std::optional<StageCheckpoint> load_own_file(const TrainConfig& cfg, const Manifest& manifest, int stage,
                                             FileCheck* check, std::optional<InputError>* refused) {
  try {
    StageCheckpoint ck = load_stage_checkpoint(cfg.checkpoint_dir, manifest, stage, check);
    if (ck.seed != cfg.seed)
      throw InputError(stage_checkpoint_path(cfg.checkpoint_dir, ck.step, stage), "meta.seed",
                       "checkpoint was trained with seed " + std::to_string(ck.seed) + ", this run has --seed " +
                           std::to_string(cfg.seed));
    return ck;
  } catch (const InputError& e) {
    *refused = e;
    if (*check == FileCheck::kOk) *check = FileCheck::kUnreadable;
    return std::nullopt;
  }
}

}  // namespace

void write_checkpoint(const Plan& plan, const TrainConfig& cfg, const std::vector<StageChunk>& chunks, int64_t step,
                      comm::Communicator* comm, const std::function<void()>& midway) {
  const int S = plan.num_stages();
  const int rank = comm ? comm->rank() : 0;
  // Sizes and checksums to every rank (one slot pair per stage, filled by the stage's first
  // rank: the sum is exact). It is also the barrier: every stage's file is on disk.
  std::vector<double> dv(2 * static_cast<size_t>(S), 0.0);
  // Replicas hold the same parameters and optimizer state: replica 0 writes the stage's file.
  for (size_t i = 0; i < chunks.size() && plan.replica_of(rank) <= 0; ++i) {
    const StageChunk& c = chunks[i];
    StageCheckpoint ck{c.stage, step, cfg.seed, step, c.model->named_parameters(), c.optimizer->state()};
    const FileDigest d = save_stage_checkpoint(cfg.checkpoint_dir, ck, i == 0 ? midway : std::function<void()>());
    if (rank == plan.stages[static_cast<size_t>(c.stage)].ranks.at(0)) {
      dv[2 * static_cast<size_t>(c.stage)] = static_cast<double>(d.bytes);
      dv[2 * static_cast<size_t>(c.stage) + 1] = static_cast<double>(d.crc32c);
    }
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

int64_t resume(const Plan& plan, const TrainConfig& cfg, const std::vector<StageChunk>& chunks,
               comm::Communicator* comm) {
  const int S = plan.num_stages();
  if (cfg.checkpoint_dir.empty()) throw InputError("--resume", "resume", "needs --checkpoint-dir");
  auto manifest = read_manifest(cfg.checkpoint_dir);
  if (!manifest) throw InputError(cfg.checkpoint_dir, "manifest.json", "no checkpoint to resume from");
  if (manifest->num_stages != S || manifest->job != plan.job.name)
    throw InputError(manifest_path(cfg.checkpoint_dir), "num_stages",
                     "checkpoint of job " + manifest->job + " with " + std::to_string(manifest->num_stages) +
                         " stages does not match plan " + plan.job.name + " with " + std::to_string(S));
  // Every rank verifies its own stage files; then all learn which stages failed, so every rank
  // refuses together, naming the file, before anything is written.
  std::optional<InputError> refused;
  std::vector<std::optional<StageCheckpoint>> loaded;
  std::vector<double> failed(static_cast<size_t>(S), 0.0);
  for (const StageChunk& c : chunks) {
    FileCheck check = FileCheck::kOk;
    loaded.push_back(load_own_file(cfg, *manifest, c.stage, &check, &refused));
    failed[static_cast<size_t>(c.stage)] = static_cast<double>(check);
  }
  if (comm) comm->allreduce_max(failed.data(), S, comm::Seconds(cfg.comm_timeout_s));
  if (refused) throw *refused;
  for (int s = 0; s < S; ++s)
    if (failed[static_cast<size_t>(s)] != 0)
      throw InputError((fs::path(cfg.checkpoint_dir) / manifest->files[static_cast<size_t>(s)].path).string(), "",
                       "stage " + std::to_string(s) + "'s checkpoint file is " +
                           file_check_name(static_cast<FileCheck>(static_cast<int>(failed[static_cast<size_t>(s)]))) +
                           " (named by " + manifest_path(cfg.checkpoint_dir) + "); not resuming");
  for (size_t i = 0; i < chunks.size(); ++i) {
    const StageCheckpoint& ck = *loaded[i];
    const std::string file = stage_checkpoint_path(cfg.checkpoint_dir, ck.step, chunks[i].stage);
    copy_into(ck.model, chunks[i].model->named_parameters(), file);
    chunks[i].optimizer->load_state(ck.optimizer, ck.step, file);
  }
  if (!comm || comm->rank() == 0) {
    spdlog::info("resumed from {} at step {} (every stage file verified: size and CRC32C)",
                 manifest_path(cfg.checkpoint_dir), manifest->step);
    if (!cfg.json_log.empty()) trim_json_log(cfg.json_log, manifest->step);
  }
  return manifest->step;
}

}  // namespace geopipe::runtime::detail
