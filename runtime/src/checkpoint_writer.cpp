// Asynchronous checkpoints (trainer_parts.h: CheckpointWriter): the loop copies its tensors to
// host memory; a thread of this rank writes the files (and computes the replicas' parameter
// digest) while the next step runs; at the end of that step every rank waits for its own
// thread, all exchange sizes, checksums and digests in one all-reduce, and rank 0 writes the
// manifest. Finishing at a fixed step keeps the collectives in the same order on every rank.
#include "trainer_parts.h"

#include <geopipe/comm/communicator.h>
#include <geopipe/comm/crc32c.h>
#include <geopipe/core/error.h>
#include <geopipe/runtime/checkpoint.h>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>

namespace geopipe::runtime::detail {

namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

std::string hex32(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "%08x", v);
  return buf;
}

// A host copy the training loop no longer touches (a copy even when the tensor is on the CPU).
std::vector<NamedTensor> host_copy(const std::vector<NamedTensor>& tensors) {
  std::vector<NamedTensor> out;
  for (const NamedTensor& t : tensors)
    out.push_back({t.name, t.tensor.detach().to(at::kCPU, t.tensor.scalar_type(), false, /*copy=*/true).contiguous()});
  return out;
}

// CRC32C of a stage's parameter bytes, in model order: what its replicas compare.
uint32_t parameter_digest(const std::vector<NamedTensor>& params) {
  uint32_t crc = 0;
  for (const NamedTensor& p : params) crc = comm::crc32c(p.tensor.data_ptr(), p.tensor.nbytes(), crc);
  return crc;
}

}  // namespace

CheckpointWriter::CheckpointWriter(const Plan& plan, const TrainConfig& cfg, comm::Communicator* comm)
    : plan_(plan), cfg_(cfg), comm_(comm), rank_(comm ? comm->rank() : 0),
      replica_(std::max(plan.replica_of(rank_), 0)), shards_(optimizer_shards(plan, cfg)) {}

CheckpointWriter::~CheckpointWriter() {
  if (thread_.joinable()) thread_.join();  // an unfinished checkpoint is never named by a manifest
}

double CheckpointWriter::begin(const std::vector<StageChunk>& chunks, int64_t step, std::function<void()> midway) {
  const auto t0 = Clock::now();
  finish();  // the previous one first (normally finished already, a step after it began)
  step_ = step;
  snapshot_.clear();
  // Replicas hold the same parameters and optimizer state: replica 0 writes the stage's file,
  // or, with a sharded optimizer, every replica its shard (the model in shard 0's).
  const int shard = shards_ > 1 ? replica_ : 0;
  const bool writes = shards_ > 1 || replica_ == 0;
  for (const StageChunk& c : chunks) {
    StageCheckpoint ck{c.stage, step, cfg_.seed, step, host_copy(c.model->named_parameters()), {}, shard, shards_};
    if (writes) ck.optimizer = host_copy(c.optimizer->state());
    snapshot_.push_back(std::move(ck));
  }
  job_ = {};
  job_.files.assign(2 * static_cast<size_t>(plan_.num_stages() * shards_), 0.0);
  job_.digests.assign(static_cast<size_t>(plan_.num_stages() * plan_.replicas()), 0.0);
  thread_ = std::thread([this, writes, midway = std::move(midway)] { write_files(writes, midway); });
  pending_ = true;
  return seconds_since(t0);
}

// The writer thread: every stage's parameter digest, then (if this rank writes) its files.
void CheckpointWriter::write_files(bool writes, const std::function<void()>& midway) {
  const auto t0 = Clock::now();
  try {
    for (size_t i = 0; i < snapshot_.size(); ++i) {
      StageCheckpoint& ck = snapshot_[i];
      if (plan_.replicas() > 1)  // only replicas compare them
        job_.digests[static_cast<size_t>(ck.stage * plan_.replicas() + replica_)] = parameter_digest(ck.model);
      if (!writes) continue;
      if (ck.shard != 0) ck.model.clear();  // the model goes in shard 0's file only
      const FileDigest d = save_stage_checkpoint(cfg_.checkpoint_dir, ck, i == 0 ? midway : std::function<void()>());
      const size_t slot = 2 * static_cast<size_t>(ck.stage * shards_ + ck.shard);
      job_.files[slot] = static_cast<double>(d.bytes);
      job_.files[slot + 1] = static_cast<double>(d.crc32c);
    }
  } catch (const std::exception& e) {
    job_.error = e.what();
  } catch (...) {
    job_.error = "unknown error";
  }
  job_.write_s = seconds_since(t0);
}

CheckpointTimes CheckpointWriter::finish() {
  if (!pending_) return {};
  const auto t0 = Clock::now();
  thread_.join();
  pending_ = false;
  snapshot_.clear();
  // One all-reduce: every file's size and CRC32C (filled by its writer: the sum is exact), every
  // replica's parameter digest, and how many ranks failed to write.
  std::vector<double> v = job_.files;
  v.insert(v.end(), job_.digests.begin(), job_.digests.end());
  v.push_back(job_.error.empty() ? 0.0 : 1.0);
  allreduce_sum(comm_, v, cfg_.comm_timeout_s);
  const std::string where = "checkpoint of step " + std::to_string(step_) + ": ";
  if (v.back() > 0)
    throw Error(where + (job_.error.empty() ? std::to_string(static_cast<int>(v.back())) +
                                                  " rank(s) could not write their files (see their messages)"
                                            : "rank " + std::to_string(rank_) + " could not write its files: " +
                                                  job_.error) +
                "; no manifest names it (" + manifest_path(cfg_.checkpoint_dir) + " is unchanged)");
  check_replicas_agree(std::vector<double>(v.begin() + static_cast<std::ptrdiff_t>(job_.files.size()), v.end() - 1));
  if (rank_ == 0) write_manifest(cfg_.checkpoint_dir, manifest_of(v));
  return {seconds_since(t0), job_.write_s};
}

// The classic data-parallel bug is silent divergence (a missed all-reduce, a non-deterministic
// kernel, a flipped bit): every replica of every stage published its parameters' digest; all
// ranks see them all, so all refuse together and the manifest keeps naming the previous checkpoint.
void CheckpointWriter::check_replicas_agree(const std::vector<double>& digests) const {
  const int R = plan_.replicas();
  for (int s = 0; s < plan_.num_stages() && R > 1; ++s) {
    const double* d = &digests[static_cast<size_t>(s * R)];
    if (std::all_of(d, d + R, [&](double x) { return x == d[0]; })) continue;
    std::string who;
    for (int r = 0; r < R; ++r)
      who += (r ? ", replica " : "replica ") + std::to_string(r) + " (rank " + std::to_string(plan_.rank_of(s, r)) +
             ") " + hex32(static_cast<uint32_t>(d[r]));
    throw Error("replica check at step " + std::to_string(step_) + ": stage " + std::to_string(s) +
                "'s replicas hold different parameters (CRC32C " + who +
                "): a replica diverged; checkpoint not named, " + manifest_path(cfg_.checkpoint_dir) +
                " is unchanged");
  }
}

Manifest CheckpointWriter::manifest_of(const std::vector<double>& files) const {
  const int S = plan_.num_stages();
  Manifest m{step_, S, plan_.job.name, {}, plan_.replicas(), shards_, {}, gpt_config(plan_.job.model),
             plan_.replicas() * plan_.job.micro_batches};
  m.layers = layer_split(plan_);
  for (int s = 0; s < S; ++s)
    for (int r = 0; r < shards_; ++r) {
      const size_t slot = 2 * static_cast<size_t>(s * shards_ + r);
      m.files.push_back(
          {fs::relative(stage_checkpoint_path(cfg_.checkpoint_dir, step_, s, r, shards_), cfg_.checkpoint_dir).string(),
           {static_cast<uint64_t>(files[slot]), static_cast<uint32_t>(files[slot + 1])}});
    }
  m.tensors = tensor_index(m.model, m.layers, shards_);
  return m;
}

}  // namespace geopipe::runtime::detail
