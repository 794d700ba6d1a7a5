// Loading a checkpoint into another plan of the same model (checkpoint.h, "Resharding"): which
// of the checkpoint's stage files hold a stage's tensors, whether the model matches, and the
// optimizer state of whole parameters put together from ZeRO-1 slices. Private to the runtime.
#pragma once

#include <geopipe/runtime/checkpoint.h>
#include <geopipe/runtime/gpt.h>

#include <map>
#include <string>
#include <vector>

namespace geopipe::runtime::detail {

// Refuses a checkpoint of another model, naming the manifest field and the first tensor that
// differs ("transformer.h.4.* is in the checkpoint, not in the plan's model of 4 layers").
void check_same_model(const Manifest& manifest, const GptConfig& model, const std::string& manifest_file);

// Refuses a checkpoint whose tensor index (manifest.tensors, when it has one) lacks a parameter
// of the plan's model split as `layers`, or gives it another shape, naming the manifest field.
// Every rank checks every stage, so all refuse together.
void check_tensor_index(const Manifest& manifest, const GptConfig& model, const std::vector<std::pair<int, int>>& layers,
                        const std::string& manifest_file);

// The checkpoint's stages whose files hold tensors of `stage`: with a tensor index, those of the
// files it names for the stage's parameters (check_tensor_index first); without, those whose
// layers overlap its layers, the first for the embeddings, the last for the head (needs
// manifest.layers).
std::vector<int> source_stages(const Manifest& manifest, const GptStage& stage);

// AdamW's state for `params` ("exp_avg.<name>", "exp_avg_sq.<name>", whole) from checkpoint
// entries that hold it whole or as ZeRO-1 slices "exp_avg.<name>[begin:end]"; InputError naming
// `source` and the entry when a parameter's state is missing or its slices leave a gap.
std::vector<NamedTensor> whole_optimizer_state(const std::map<std::string, at::Tensor>& entries,
                                               const std::vector<NamedTensor>& params, const std::string& source);

}  // namespace geopipe::runtime::detail
