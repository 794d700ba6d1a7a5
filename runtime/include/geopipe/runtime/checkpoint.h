// Checkpoints: one file per stage, in torch.save's zip/pickle format (as LibTorch's pickle_save
// writes it, without TorchScript type tags) that Python's torch.load reads, weights_only=True
// included, plus a JSON manifest that names the complete checkpoint.
//
//   DIR/step-000100/stage-0.pt   {"model": {name: tensor}, "optimizer": {"exp_avg.<name>": ...},
//                                 "meta": {"step": 100, "seed": 1, "stage": 0, "data_position": 100}}
//   DIR/manifest.json            {"format": 2, "step": 100, "num_stages": 4, "job": "gpt-tiny",
//                                 "replicas": 2, "optimizer_shards": 1, "layers": [[0, 1], ...],
//                                 "model": {"n_layer": 4, "n_head": 4, "n_embd": 64, ...},
//                                 "step_micro_batches": 16,
//                                 "files": ["step-000100/stage-0.pt", ...],
//                                 "bytes": [123456, ...], "crc32c": ["1a2b3c4d", ...],
//                                 "tensors": {"transformer.wte.weight": {"file": "step-000100/stage-0.pt",
//                                                                        "shape": [256, 64]}, ...}}
//
// "tensors" indexes every parameter by name: the file that holds it (its stage's file, shard 0)
// and its shape; the parameter's optimizer state is in the files of the same stage. --resume
// finds each tensor its stages need through it, and refuses a checkpoint whose index lacks one
// of them or gives it another shape, naming the field. Manifests written before the index load
// as before (the stages whose layers overlap).
//
// Stage replicas hold the same parameters and optimizer state: replica 0 writes the stage's file.
// With a sharded optimizer (ZeRO-1) each replica r holds AdamW state for its slices only and
// writes step-N/stage-S.shard-R.pt: shard 0 also holds the model, the others their optimizer
// state only; "optimizer_shards" is then the replica count and "files" lists every stage's
// shards, stage-major.
//
// Resharding (docs/ARCHITECTURE.md, "Checkpoints"): tensors keep nanoGPT's global names and the
// optimizer state is named after its parameter ("exp_avg.<name>", or "exp_avg.<name>[b:e]" for a
// ZeRO-1 slice), so a run under another plan — other stage count, layer split, replica count,
// schedule, sharding — loads each tensor from the files of the stages whose layers hold it.
//
// Every file is written atomically (temp file in the same folder, fsync, rename, fsync of the
// folder). The manifest is written last, by one rank, after every stage's file is on disk, so
// a crash leaves the previous manifest pointing at a complete checkpoint.
//
// Integrity: the manifest records each stage file's size and CRC32C (comm's crc32c.h, the
// transport's own checksum, SSE4.2-accelerated: the size catches truncation, the CRC every burst
// error up to 32 bits and other damage but for a 2^-32 chance; it is no defence against a
// forger, which docs/SECURITY.md leaves to the file system's permissions). Loading
// checks size, then checksum, BEFORE the bytes are parsed, and refuses a mismatch with an
// InputError naming the file and the manifest. A manifest without checksums (format 1, written
// before they existed) is refused: its files cannot be verified.
#pragma once

#include <geopipe/runtime/gpt.h>

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace geopipe::runtime {

struct StageCheckpoint {
  int stage = 0;
  int64_t step = 0;           // optimizer steps taken; training resumes at this step
  uint64_t seed = 0;
  int64_t data_position = 0;  // the sampler is a function of the step: equal to step
  std::vector<NamedTensor> model;  // empty in optimizer shards other than 0
  std::vector<NamedTensor> optimizer;
  int shard = 0, shards = 1;  // optimizer shard (the replica that wrote it) of how many
};

// Size and CRC32C of a file's bytes: what the manifest records for each stage file.
struct FileDigest {
  uint64_t bytes = 0;
  uint32_t crc32c = 0;
  bool operator==(const FileDigest& o) const { return bytes == o.bytes && crc32c == o.crc32c; }
};
FileDigest digest_of(const void* data, size_t bytes);

// DIR/step-000100/stage-S.pt, or DIR/step-000100/stage-S.shard-R.pt when shards > 1.
std::string stage_checkpoint_path(const std::string& dir, int64_t step, int stage, int shard = 0, int shards = 1);
// Writes the stage file atomically and returns its digest. `midway` (tests' fault hook) is
// called when half of the temp file has been written and flushed.
FileDigest save_stage_checkpoint(const std::string& dir, const StageCheckpoint& ckpt,
                                 const std::function<void()>& midway = {});

struct ManifestFile {
  std::string path;  // relative to the checkpoint folder
  FileDigest digest;
};
struct ManifestTensor {
  int file = 0;                 // index into Manifest::files: its stage's file (shard 0)
  std::vector<int64_t> shape;
};
struct Manifest {
  int64_t step = 0;
  int num_stages = 0;
  std::string job;
  std::vector<ManifestFile> files;  // num_stages x optimizer_shards, stage-major
  int replicas = 1;          // replicas per stage of the run that wrote it
  int optimizer_shards = 1;  // files per stage: 1, or the replica count with a sharded optimizer
  // The layout and model that wrote it, which let any plan of the same model load it
  // (resharding): each stage's layers [begin, end), and the model's shape. Both absent from
  // manifests written before resharding (layers empty, model.n_layer 0): those load only into a
  // plan with the same stages.
  std::vector<std::pair<int, int>> layers{};
  GptConfig model{};
  int step_micro_batches = 0;  // micro-batches per optimizer step, all replicas (0: not recorded)
  std::map<std::string, ManifestTensor> tensors{};  // every parameter by name (empty: written before the index)
  const ManifestFile& file(int stage, int shard = 0) const {
    return files.at(static_cast<size_t>(stage) * static_cast<size_t>(optimizer_shards) + static_cast<size_t>(shard));
  }
};
// The index of every parameter of a run whose stages own `layers` (Manifest::layers) of `model`,
// with `shards` files per stage (Manifest::optimizer_shards): what the writer puts in "tensors".
std::map<std::string, ManifestTensor> tensor_index(const GptConfig& model, const std::vector<std::pair<int, int>>& layers,
                                                   int shards);
std::string manifest_path(const std::string& dir);  // DIR/manifest.json
void write_manifest(const std::string& dir, const Manifest& manifest);
// nullopt when there is none; InputError naming the manifest when it is malformed, has no
// checksums (format 1), or names a file outside the folder.
std::optional<Manifest> read_manifest(const std::string& dir);

// Why a stage file was refused (FileCheck::kOk when it is sound).
enum class FileCheck { kOk = 0, kMissing = 1, kWrongSize = 2, kWrongChecksum = 3, kUnreadable = 4 };
const char* file_check_name(FileCheck check);  // "missing", "truncated or overwritten", ...

// Loads shard `shard` of stage `stage` of the checkpoint `manifest` names: reads DIR/<file>,
// checks its size and CRC32C against the manifest before parsing, then that its meta (step,
// stage, shard) agrees. Throws InputError naming the file and the manifest; `*check` (when
// given) says why.
StageCheckpoint load_stage_checkpoint(const std::string& dir, const Manifest& manifest, int stage, int shard = 0,
                                      FileCheck* check = nullptr);

// Copies checkpointed tensors into `params` by name; throws InputError naming `source` and the
// parameter when one is missing or has another shape (with both shapes).
void copy_into(const std::vector<NamedTensor>& saved, const std::vector<NamedTensor>& params, const std::string& source);
std::string shape_of(const at::Tensor& t);  // "[256, 64]"

// A whole-model file in nanoGPT's checkpoint layout: {"model": state dict, "model_args": {n_layer,
// n_head, n_embd, block_size, vocab_size, bias: 1, dropout: 0}, "iter_num": step}, atomically.
void save_model_file(const std::string& path, const std::vector<NamedTensor>& model, const GptConfig& config,
                     int64_t step);

// Atomic whole-file write: `path`.tmp, fsync, rename, fsync of the folder. `midway`, when set,
// runs after the first half of the bytes is written and flushed (tests' kill-in-checkpoint).
void write_file_atomic(const std::string& path, const std::string& bytes, const std::function<void()>& midway = {});

}  // namespace geopipe::runtime
