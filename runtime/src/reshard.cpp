#include "reshard.h"

#include <geopipe/core/error.h>

#include <algorithm>
#include <cstdlib>
#include <set>

namespace geopipe::runtime::detail {

void check_same_model(const Manifest& m, const GptConfig& mine, const std::string& file) {
  const GptConfig& ck = m.model;
  if (ck.n_layer == 0) return;  // not recorded (older manifest): the tensors' shapes decide
  auto refuse = [&](const std::string& field, int theirs, int ours, const std::string& tensor) {
    throw InputError(file, "model." + field,
                     "the checkpoint's model has " + field + " " + std::to_string(theirs) + ", the plan's " +
                         std::to_string(ours) + (tensor.empty() ? "" : ": " + tensor));
  };
  if (ck.n_layer > mine.n_layer)
    refuse("n_layer", ck.n_layer, mine.n_layer,
           "transformer.h." + std::to_string(mine.n_layer) + ".* is in the checkpoint, not in the plan's model");
  if (ck.n_layer < mine.n_layer)
    refuse("n_layer", ck.n_layer, mine.n_layer,
           "the plan's transformer.h." + std::to_string(ck.n_layer) + ".* is not in the checkpoint");
  const std::string wte = "transformer.wte.weight is [" + std::to_string(ck.vocab_size) + ", " +
                          std::to_string(ck.n_embd) + "] in the checkpoint, [" + std::to_string(mine.vocab_size) +
                          ", " + std::to_string(mine.n_embd) + "] in the plan's model";
  if (ck.n_embd != mine.n_embd) refuse("n_embd", ck.n_embd, mine.n_embd, wte);
  if (ck.vocab_size != mine.vocab_size) refuse("vocab_size", ck.vocab_size, mine.vocab_size, wte);
  if (ck.block_size != mine.block_size)
    refuse("block_size", ck.block_size, mine.block_size,
           "transformer.wpe.weight is [" + std::to_string(ck.block_size) + ", " + std::to_string(ck.n_embd) +
               "] in the checkpoint, [" + std::to_string(mine.block_size) + ", " + std::to_string(mine.n_embd) +
               "] in the plan's model");
  if (ck.n_head != mine.n_head)  // every tensor has the same shape: only the manifest can tell
    refuse("n_head", ck.n_head, mine.n_head, "same tensor shapes, another attention");
}

namespace {

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + "]";
}

}  // namespace

void check_tensor_index(const Manifest& m, const GptConfig& model, const std::vector<std::pair<int, int>>& layers,
                        const std::string& file) {
  if (m.tensors.empty()) return;  // written before the index
  if (!m.layers.empty()) {  // the index is derived from the manifest's own layout: it must agree
    const auto derived = tensor_index(model, m.layers, m.optimizer_shards);
    auto path_of = [&](int f) {
      return f >= 0 && static_cast<size_t>(f) < m.files.size() ? m.files[static_cast<size_t>(f)].path
                                                                 : "file #" + std::to_string(f);
    };
    for (const auto& [name, t] : m.tensors) {
      const auto d = derived.find(name);
      if (d == derived.end())
        throw InputError(file, "tensors." + name, "is not a parameter of the model the manifest records");
      if (d->second.file != t.file)
        throw InputError(file, "tensors." + name + ".file",
                         "names " + path_of(t.file) + ", but the manifest's layers put " + name + " in " +
                             path_of(d->second.file));
    }
  }
  const int S = static_cast<int>(layers.size());
  for (int s = 0; s < S; ++s) {
    const auto [begin, end] = layers[static_cast<size_t>(s)];
    for (const auto& [name, shape] : stage_parameter_shapes(model, begin, end, s == 0, s == S - 1)) {
      const auto it = m.tensors.find(name);
      if (it == m.tensors.end())
        throw InputError(file, "tensors", "has no entry for " + name + ", which stage " + std::to_string(s) +
                                              " of the plan needs: the checkpoint is of another model");
      if (it->second.shape != shape)
        throw InputError(file, "tensors." + name + ".shape",
                         shape_text(it->second.shape) + " in the checkpoint, " + shape_text(shape) +
                             " in the plan's model");
    }
  }
}

std::vector<int> source_stages(const Manifest& m, const GptStage& stage) {
  if (!m.tensors.empty()) {  // the index says where each tensor is
    std::set<int> stages;
    for (const NamedTensor& p : stage.named_parameters()) {
      const auto it = m.tensors.find(p.name);
      if (it == m.tensors.end())  // check_tensor_index refuses this first; never a bare out_of_range
        throw InputError("manifest", "tensors", "has no entry for " + p.name);
      stages.insert(it->second.file / m.optimizer_shards);
    }
    return {stages.begin(), stages.end()};
  }
  std::vector<int> out;
  const int S = m.num_stages;
  for (int s = 0; s < S; ++s) {
    const auto [begin, end] = m.layers.at(static_cast<size_t>(s));
    const bool overlaps = begin < stage.layer_end() && stage.layer_begin() < end;
    if (overlaps || (s == 0 && stage.is_first()) || (s == S - 1 && stage.is_last())) out.push_back(s);
  }
  return out;
}

namespace {

// "exp_avg.w[8:16]" -> (8, 16), given the prefix "exp_avg.w[".
bool slice_range(const std::string& key, size_t prefix_len, int64_t* begin, int64_t* end) {
  const char* p = key.c_str() + prefix_len;
  char* colon = nullptr;
  *begin = std::strtoll(p, &colon, 10);
  if (colon == p || *colon != ':') return false;
  char* close = nullptr;
  *end = std::strtoll(colon + 1, &close, 10);
  return close != colon + 1 && *close == ']' && close[1] == '\0';
}

// One moment of one parameter, whole: the entry itself, or its slices copied into place.
at::Tensor whole_moment(const std::map<std::string, at::Tensor>& entries, const std::string& key,
                        const at::Tensor& param, const std::string& source) {
  if (auto it = entries.find(key); it != entries.end()) return it->second;
  at::Tensor flat = at::empty({param.numel()}, at::TensorOptions().dtype(at::kFloat));
  std::vector<std::pair<int64_t, int64_t>> ranges;
  const std::string prefix = key + "[";
  for (auto it = entries.lower_bound(prefix); it != entries.end() && it->first.compare(0, prefix.size(), prefix) == 0;
       ++it) {
    int64_t begin = 0, end = 0;
    if (!slice_range(it->first, prefix.size(), &begin, &end) || begin < 0 || end > param.numel() ||
        end - begin != it->second.numel())
      throw InputError(source, it->first, "is not a slice of " + key + " (" + std::to_string(param.numel()) +
                                              " elements)");
    flat.narrow(0, begin, end - begin).copy_(it->second.reshape(-1));
    ranges.emplace_back(begin, end);
  }
  if (ranges.empty()) throw InputError(source, key, "the checkpoint has no optimizer state for this parameter");
  // The slices must tile the parameter: no gap (a missing shard file), no overlap (foreign slices).
  std::sort(ranges.begin(), ranges.end());
  int64_t covered = 0;
  for (const auto& [begin, end] : ranges) {
    if (begin != covered) break;
    covered = end;
  }
  if (covered != param.numel())
    throw InputError(source, key, "its slices tile " + std::to_string(covered) + " of " +
                                      std::to_string(param.numel()) +
                                      " elements from the start (a shard file missing, or slices that overlap)");
  return flat.view(param.sizes());
}

}  // namespace

std::vector<NamedTensor> whole_optimizer_state(const std::map<std::string, at::Tensor>& entries,
                                               const std::vector<NamedTensor>& params, const std::string& source) {
  std::vector<NamedTensor> out;
  for (const NamedTensor& p : params)
    for (const char* moment : {"exp_avg.", "exp_avg_sq."}) {
      const std::string key = moment + p.name;
      out.push_back({key, whole_moment(entries, key, p.tensor, source)});
    }
  return out;
}

}  // namespace geopipe::runtime::detail
