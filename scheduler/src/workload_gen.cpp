#include <geopipe/scheduler/simulator.h>

#include <algorithm>
#include <cmath>

namespace geopipe::scheduler {

Rng::Rng(uint64_t seed) : engine_(seed) {}

double Rng::uniform() { return static_cast<double>(engine_() >> 11) * 0x1.0p-53; }
double Rng::uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
double Rng::exponential(double mean) { return -mean * std::log1p(-uniform()); }

int Rng::pick(const std::vector<double>& weights) {
  double total = 0;
  for (double w : weights) total += w;
  double u = uniform() * total;
  for (size_t i = 0; i < weights.size(); ++i) {
    if (u < weights[i]) return static_cast<int>(i);
    u -= weights[i];
  }
  return static_cast<int>(weights.size()) - 1;
}

namespace {

struct ModelKind {
  const char* name;
  int layers, d_model, heads;
  int min_stages, max_stages;
  double weight;  // share of jobs: small models are most common (Acme, NSDI 2024)
};

// GPT-3 shapes (Brown et al. 2020, table 2.1) from 1.3B to 30B parameters (30B: OPT-30B shape).
const ModelKind kModels[] = {
    {"gpt-1.3b", 24, 2048, 16, 4, 8, 0.35},   {"gpt-2.7b", 32, 2560, 32, 4, 8, 0.25},
    {"gpt-6.7b", 32, 4096, 32, 8, 16, 0.20},  {"gpt-13b", 40, 5120, 40, 8, 16, 0.12},
    {"gpt-30b", 48, 7168, 56, 16, 16, 0.08},
};

}  // namespace

Workload generate_workload(const Topology& topology, const WorkloadGenOptions& o) {
  Rng rng(o.seed);
  Workload w;
  w.name = "generated-seed" + std::to_string(o.seed) + "-jobs" + std::to_string(o.jobs);
  std::vector<double> weights;
  for (const auto& m : kModels) weights.push_back(m.weight);
  // GPU-seconds of useful work per job, to set the arrival rate for the requested load.
  double mean_tflops = 0;
  for (const auto& r : topology.regions) mean_tflops += r.gpu_tflops * r.gpus;
  mean_tflops /= std::max(1, topology.total_gpus());
  const double gpu_flops = mean_tflops * 1e12 * 0.4;
  double gpu_seconds = 0;
  for (int i = 0; i < o.jobs; ++i) {
    const ModelKind& m = kModels[rng.pick(weights)];
    JobSpec j;
    j.name = std::string(m.name) + "-" + std::to_string(i);
    j.tenant = "t" + std::to_string(i % 16);
    j.model = {m.layers, m.d_model, m.heads, 2048, 50304, DType::kBFloat16};
    j.micro_batch = rng.uniform() < 0.5 ? 1 : 2;
    j.micro_batches = rng.uniform() < 0.5 ? 32 : 64;
    j.iterations = static_cast<int>(std::round(std::exp(rng.uniform(std::log(200.0), std::log(4000.0)))));
    j.min_stages = m.min_stages;
    j.max_stages = m.max_stages;
    const double tokens = static_cast<double>(j.micro_batch) * j.micro_batches * 2048;
    const double params = 12.0 * m.layers * m.d_model * static_cast<double>(m.d_model);
    gpu_seconds += 6.0 * params * tokens * j.iterations / gpu_flops;
    w.jobs.push_back(j);
  }
  const double mean_gpu_s = gpu_seconds / std::max(1, o.jobs);
  const double mean_gap = mean_gpu_s / (std::max(1e-9, o.load) * std::max(1, topology.total_gpus()));
  double t = 0;
  for (auto& j : w.jobs) {
    j.arrival_s = std::round(t * 1000.0) / 1000.0;
    t += rng.exponential(mean_gap);
  }
  return w;
}

}  // namespace geopipe::scheduler
