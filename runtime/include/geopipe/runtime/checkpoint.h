// Checkpoints: one file per stage, in torch.save's zip/pickle format (as LibTorch's pickle_save
// writes it, without TorchScript type tags) that Python's torch.load reads, weights_only=True
// included, plus a JSON manifest that names the complete checkpoint.
//
//   DIR/step-000100/stage-0.pt   {"model": {name: tensor}, "optimizer": {"exp_avg.<name>": ...},
//                                 "meta": {"step": 100, "seed": 1, "stage": 0, "data_position": 100}}
//   DIR/manifest.json            {"step": 100, "num_stages": 4, "files": [...], "plan_job": "gpt-tiny"}
//
// Every file is written atomically (temp file in the same folder, fsync, rename, fsync of the
// folder). The manifest is written last, by one rank, after every stage's file is on disk, so
// a crash leaves the previous manifest pointing at a complete checkpoint.
#pragma once

#include <geopipe/runtime/gpt.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace geopipe::runtime {

struct StageCheckpoint {
  int stage = 0;
  int64_t step = 0;           // optimizer steps taken; training resumes at this step
  uint64_t seed = 0;
  int64_t data_position = 0;  // the sampler is a function of the step: equal to step
  std::vector<NamedTensor> model;
  std::vector<NamedTensor> optimizer;
};

std::string stage_checkpoint_path(const std::string& dir, int64_t step, int stage);
void save_stage_checkpoint(const std::string& dir, const StageCheckpoint& ckpt);
StageCheckpoint load_stage_checkpoint(const std::string& path);

struct Manifest {
  int64_t step = 0;
  int num_stages = 0;
  std::string job;
  std::vector<std::string> files;  // relative to the checkpoint folder, one per stage
};
void write_manifest(const std::string& dir, const Manifest& manifest);
std::optional<Manifest> read_manifest(const std::string& dir);  // nullopt when there is none

// Copies checkpointed tensors into `params` by name; throws Error naming the file and the
// parameter when one is missing or has another shape.
void copy_into(const std::vector<NamedTensor>& saved, const std::vector<NamedTensor>& params, const std::string& source);

// A whole-model file in nanoGPT's checkpoint layout: {"model": state dict, "model_args": {n_layer,
// n_head, n_embd, block_size, vocab_size, bias: 1, dropout: 0}, "iter_num": step}, atomically.
void save_model_file(const std::string& path, const std::vector<NamedTensor>& model, const GptConfig& config,
                     int64_t step);

// Atomic whole-file write: `path`.tmp, fsync, rename, fsync of the folder.
void write_file_atomic(const std::string& path, const std::string& bytes);

}  // namespace geopipe::runtime
