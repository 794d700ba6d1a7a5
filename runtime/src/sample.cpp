// Text generation through the pipeline (sample.h).
#include <geopipe/comm/communicator.h>
#include <geopipe/comm/torch.h>
#include <geopipe/core/error.h>
#include <geopipe/runtime/checkpoint.h>
#include <geopipe/runtime/data.h>
#include <geopipe/runtime/executor.h>
#include <geopipe/runtime/gpt.h>
#include <geopipe/runtime/sample.h>
#include <geopipe/runtime/trainer.h>

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <sstream>

#include "tags.h"

namespace geopipe::runtime {

namespace {

// A byte-level model (vocabulary 256) reads the prompt as bytes; any other vocabulary needs a
// tokenizer geopipe does not have, so its prompt is token ids ("464 2068 7586").
std::vector<int64_t> encode_prompt(const std::string& prompt, int vocab) {
  std::vector<int64_t> ids;
  if (vocab == 256) {
    for (unsigned char c : prompt) ids.push_back(c);
  } else {
    std::istringstream in(prompt);
    for (std::string word; in >> word;) {
      char* end = nullptr;
      const long long v = std::strtoll(word.c_str(), &end, 10);
      if (*end != '\0' || v < 0 || v >= vocab)
        throw InputError("--prompt", "prompt", "the model's vocabulary is " + std::to_string(vocab) +
                                                   " (not bytes): give token ids 0.." + std::to_string(vocab - 1) +
                                                   " separated by spaces, got \"" + word + "\"");
      ids.push_back(v);
    }
  }
  if (ids.empty()) throw InputError("--prompt", "prompt", "the prompt must hold at least one token");
  return ids;
}

std::string decode(const std::vector<int64_t>& ids, int vocab) {
  std::string out;
  for (int64_t id : ids) {
    if (vocab == 256) out += static_cast<char>(static_cast<unsigned char>(id));
    else out += (out.empty() ? "" : " ") + std::to_string(id);
  }
  return out;
}

// Every tensor the checkpoint holds, from all its stage files (each verified: size, CRC32C).
std::vector<NamedTensor> load_all_model_tensors(const std::string& dir, int64_t* step) {
  auto manifest = read_manifest(dir);
  if (!manifest) throw InputError(dir, "manifest.json", "no checkpoint to sample from");
  std::vector<NamedTensor> all;
  for (int s = 0; s < manifest->num_stages; ++s) {
    StageCheckpoint ck = load_stage_checkpoint(dir, *manifest, s);
    all.insert(all.end(), ck.model.begin(), ck.model.end());
  }
  *step = manifest->step;
  return all;
}

void check_config(const SampleConfig& c) {
  if (c.checkpoint_dir.empty()) throw InputError("--sample", "sample", "needs --checkpoint-dir");
  if (c.tokens < 1) throw InputError("--sample", "sample", "expected >= 1 tokens, got " + std::to_string(c.tokens));
  if (!(c.temperature >= 0) || !std::isfinite(c.temperature))
    throw InputError("--temperature", "temperature", "expected a finite value >= 0");
  if (c.top_k < 0) throw InputError("--top-k", "top-k", "expected >= 0");
}

}  // namespace

int64_t pick_token(const std::vector<float>& logits, double temperature, int top_k, uint64_t seed, int64_t position) {
  const auto n = static_cast<int64_t>(logits.size());
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  // Most likely first; ties by token id so the order is total and the same everywhere.
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return logits[a] > logits[b]; });
  if (temperature == 0 || n == 1) return order[0];
  const int64_t keep = top_k > 0 ? std::min<int64_t>(top_k, n) : n;
  std::vector<double> p(static_cast<size_t>(keep));
  const double top = logits[order[0]] / temperature;
  double sum = 0;
  for (int64_t i = 0; i < keep; ++i) sum += p[i] = std::exp(logits[order[i]] / temperature - top);
  // A uniform draw in [0, 1) from the counter-based hash of (seed, position): 53 random bits.
  const uint64_t h = mix64(mix64(seed ^ 0x73616d706c65ULL) ^ static_cast<uint64_t>(position));
  double u = static_cast<double>(h >> 11) * 0x1.0p-53 * sum;
  for (int64_t i = 0; i < keep; ++i) {
    if (u < p[i]) return order[i];
    u -= p[i];
  }
  return order[keep - 1];  // rounding left u just past the end
}

SampleResult generate(const Plan& plan, const SampleConfig& cfg, comm::Communicator* comm) {
  check_config(cfg);
  const int S = plan.num_stages();
  const int rank = comm ? comm->rank() : 0;
  if (plan.schedule.virtual_stages > 1)
    throw InputError("plan", "schedule.virtual_stages",
                     "sampling runs one stage per rank; sample with a one-stage plan (a checkpoint of this model "
                     "loads into any plan)");
  if (plan.replicas() > 1)
    throw InputError("plan", "stages", "sampling runs one pipeline; this plan has " + std::to_string(plan.replicas()) +
                                           " replicas per stage (sample with a plan of one replica: a checkpoint "
                                           "loads into any plan of the same stages)");
  const int stage = comm ? plan.stage_of_rank(rank) : 0;
  if (S > 1 && !comm) throw Error("a " + std::to_string(S) + "-stage plan needs MPI (run it under mpirun / geopipe launch)");
  const StagePlan& sp = plan.stages.at(static_cast<size_t>(stage));
  const bool first = stage == 0, last = stage == S - 1;
  const GptConfig gc = gpt_config(plan.job.model);
  const at::Device device = pick_device(cfg.device);
  GptStage model(gc, sp.layer_begin, sp.layer_end, first, last, cfg.seed, device);

  SampleResult r;
  try {
    copy_into(load_all_model_tensors(cfg.checkpoint_dir, &r.step), model.named_parameters(), cfg.checkpoint_dir);
  } catch (const InputError&) {
    throw;
  } catch (const Error& e) {  // a tensor missing or of another shape: another model
    throw InputError(manifest_path(cfg.checkpoint_dir), "model", std::string(e.what()) + " (the plan's model is " +
                                                                   plan.job.name + ")");
  }
  std::vector<int64_t> seq = encode_prompt(cfg.prompt, gc.vocab_size);
  const int prev = first ? -1 : plan.stages[static_cast<size_t>(stage) - 1].ranks.at(0);
  const int next = last ? -1 : plan.stages[static_cast<size_t>(stage) + 1].ranks.at(0);
  const auto timeout = comm::Seconds(cfg.comm_timeout_s);
  at::NoGradGuard no_grad;
  for (int64_t i = 0; i < cfg.tokens; ++i) {
    const auto ctx_len = std::min<int64_t>(static_cast<int64_t>(seq.size()), gc.block_size);
    at::Tensor input;
    if (first) {
      std::vector<int64_t> ctx(seq.end() - ctx_len, seq.end());
      input = at::tensor(ctx, at::TensorOptions().dtype(at::kLong)).view({1, ctx_len}).to(device);
    } else {
      comm::Request req = comm->irecv_any_size(prev, kTagSample);
      req.wait(timeout);
      input = comm::tensor_from_message(req.header(), req.payload()).to(device);
    }
    at::Tensor out = model.forward(input);
    if (!last) {
      const at::Tensor h = out.to(at::kCPU).contiguous();
      comm::isend_tensor(*comm, h, next, kTagSample, comm::tensor_header(h, comm::MessageKind::kActivation, stage, 0))
          .wait(timeout);
    }
    // The last stage picks; one all-reduce (everyone else adds 0) tells every stage the token.
    std::vector<double> token(1, 0.0);
    if (last) {
      const at::Tensor l = out.select(1, out.size(1) - 1).reshape({-1}).to(at::kCPU, at::kFloat).contiguous();
      std::vector<float> logits(l.data_ptr<float>(), l.data_ptr<float>() + l.numel());
      token[0] = static_cast<double>(pick_token(logits, cfg.temperature, cfg.top_k, cfg.seed, i));
    }
    allreduce_sum(comm, token, cfg.comm_timeout_s);
    seq.push_back(static_cast<int64_t>(token[0]));
    r.generated.push_back(seq.back());
  }
  r.text = decode(seq, gc.vocab_size);
  return r;
}

}  // namespace geopipe::runtime
