// geopipe-train --profile: times one block, the embedding and the head on this device, forward,
// backward and the split backward (I, W), and writes the profile `geopipe plan --profile` reads.
#include <geopipe/comm/communicator.h>
#include <geopipe/runtime/stage_compute.h>
#include <geopipe/runtime/trainer.h>
#include <geopipe/scheduler/profile.h>

#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <functional>

namespace geopipe::runtime {

namespace {

using Clock = std::chrono::steady_clock;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Medians over `repeats` runs after one warm-up of a forward and its backward, whole and split.
struct Timer {
  at::Device device;
  int repeats;

  void sync() const {
    if (device.is_cuda()) at::empty({1}, at::TensorOptions().device(device)).cpu();  // waits for the stream
  }
  // forward_s and backward_s of fwd(nullptr); input_grad_s and weight_grad_s of fwd(stash) with
  // the stash deferring each linear's weight gradient (I), then applying them (W).
  // Embedding and head: the same input every round (their times are small next to the blocks').
  scheduler::PhaseTimes time(const std::function<at::Tensor(WeightGradStash*)>& fwd) const {
    std::vector<double> f, b, in, w;
    for (int i = 0; i <= repeats; ++i) {
      sync();
      auto t0 = Clock::now();
      at::Tensor y = fwd(nullptr);
      sync();
      const double tf = since(t0);
      t0 = Clock::now();
      y.backward(at::ones_like(y));
      sync();
      const double tb = since(t0);
      WeightGradStash stash;
      stash.defer = true;
      y = fwd(&stash);
      sync();
      t0 = Clock::now();
      y.backward(at::ones_like(y));
      sync();
      const double ti = since(t0);
      t0 = Clock::now();
      stash.apply_and_clear();
      sync();
      const double tw = since(t0);
      if (i == 0) continue;
      f.push_back(tf), b.push_back(tb), in.push_back(ti), w.push_back(tw);
    }
    return {median(f), median(b), median(in), median(w)};
  }
};

// The blocks as a training step runs them: StageCompute's F, B, I and W over `in_flight`
// micro-batches of different data held at once (the activations of one micro-batch are not
// still in cache when its backward runs, as in a pipeline), medians per action over `repeats`
// rounds after one warm-up round, divided by the block count.
scheduler::PhaseTimes time_blocks(const GptConfig& gc, const Timer& timer, int B, int in_flight) {
  GptStage blocks(gc, 0, gc.n_layer, false, false, 1, timer.device);
  StageCompute compute(blocks, Recompute::kNone);
  const auto floats = at::TensorOptions().device(timer.device);
  std::vector<at::Tensor> inputs;
  for (int mb = 0; mb < in_flight; ++mb) inputs.push_back(at::randn({B, gc.block_size, gc.n_embd}, floats));
  at::Tensor grad = at::randn({B, gc.block_size, gc.n_embd}, floats);
  std::vector<double> f, b, in, w;
  auto timed = [&](std::vector<double>& out, bool keep, const std::function<void()>& fn) {
    timer.sync();
    const auto t0 = Clock::now();
    fn();
    timer.sync();
    if (keep) out.push_back(since(t0));
  };
  for (int round = 0; round <= timer.repeats; ++round) {
    const bool keep = round > 0;
    for (int mb = 0; mb < in_flight; ++mb) timed(f, keep, [&] { compute.forward(mb, inputs[mb]); });
    for (int mb = 0; mb < in_flight; ++mb) timed(b, keep, [&] { compute.backward(mb, grad); });
    for (int mb = 0; mb < in_flight; ++mb) compute.forward(mb, inputs[mb]);
    for (int mb = 0; mb < in_flight; ++mb) timed(in, keep, [&] { compute.backward_input(mb, grad); });
    for (int mb = 0; mb < in_flight; ++mb) timed(w, keep, [&] { compute.backward_weight(mb); });
  }
  const double n = gc.n_layer;
  return {median(f) / n, median(b) / n, median(in) / n, median(w) / n};
}

// Co-located ranks measure at once (the times of stages that share this host): the mean over ranks.
void average_over_ranks(scheduler::Profile& p, comm::Communicator* comm, double timeout_s) {
  std::vector<double> v;
  for (auto* t : {&p.embedding, &p.layer, &p.head})
    v.insert(v.end(), {t->forward_s, t->backward_s, t->input_grad_s, t->weight_grad_s});
  comm->allreduce_sum(v.data(), static_cast<int>(v.size()), comm::Seconds(timeout_s));
  const double n = comm->size();
  size_t i = 0;
  for (auto* t : {&p.embedding, &p.layer, &p.head}) {
    *t = {v[i] / n, v[i + 1] / n, v[i + 2] / n, v[i + 3] / n};
    i += 4;
  }
}

}  // namespace

void write_profile(const Plan& plan, const std::string& device_name, const std::string& out_file, int repeats,
                   comm::Communicator* comm, double timeout_s) {
  GptConfig gc = gpt_config(plan.job.model);
  const Timer timer{pick_device(device_name), repeats};
  GptStage model(gc, 0, gc.n_layer, true, true, 1, timer.device);
  const int B = plan.job.micro_batch, T = gc.block_size;
  const auto longs = at::TensorOptions().dtype(at::kLong);
  at::Tensor tokens = at::randint(gc.vocab_size, {B, T}, longs).to(timer.device);
  at::Tensor targets = at::randint(gc.vocab_size, {B, T}, longs).to(timer.device);
  at::Tensor x = model.embed(tokens).detach().set_requires_grad(true);
  if (comm) comm->barrier(comm::Seconds(timeout_s));  // co-located ranks start together
  scheduler::Profile p;
  p.device = timer.device.is_cuda() ? "cuda" : "cpu";
  p.model = plan.job.model;
  p.micro_batch = B;
  p.embedding = timer.time([&](WeightGradStash*) { return model.embed(tokens); });
  p.embedding.input_grad_s = 0;  // token ids have no gradient: the embedding's backward is all W
  p.embedding.weight_grad_s = p.embedding.backward_s;
  p.layer = time_blocks(gc, timer, B, std::clamp(plan.job.micro_batches, 1, 4));
  p.head = timer.time([&](WeightGradStash* st) { return GptStage::loss(model.head(x, st), targets); });
  p.note = "measured by geopipe-train --profile (median of " + std::to_string(repeats) + " runs)";
  if (comm && comm->size() > 1) {
    average_over_ranks(p, comm, timeout_s);
    p.note = "measured by geopipe-train --profile on " + std::to_string(comm->size()) +
             " ranks at once, mean over the ranks of each one's median of " + std::to_string(repeats) +
             " runs: the times of stages that share this host";
    if (comm->rank() != 0) return;
  }
  scheduler::save_profile(p, out_file);
}

}  // namespace geopipe::runtime
