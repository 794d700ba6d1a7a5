#include <geopipe/core/error.h>
#include <geopipe/scheduler/cost_model.h>
#include <geopipe/scheduler/profile.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace geopipe::scheduler {

Flops layer_flops(const ModelSpec& m, int micro_batch) {
  const double b = micro_batch, s = m.seq_len, h = m.d_model;
  const double fwd = b * s * (24.0 * h * h + 4.0 * s * h);
  return {fwd, 2.0 * fwd};
}

Flops embedding_flops(const ModelSpec& m, int micro_batch) {
  const double bsh = static_cast<double>(micro_batch) * m.seq_len * m.d_model;
  return {2.0 * bsh, 2.0 * bsh};
}

Flops head_flops(const ModelSpec& m, int micro_batch) {
  const double bs = static_cast<double>(micro_batch) * m.seq_len;
  const double fwd = 2.0 * bs * m.d_model * m.vocab + 5.0 * bs * m.vocab;
  return {fwd, 2.0 * 2.0 * bs * m.d_model * m.vocab};
}

namespace {

// Splits a backward into I and W when no measurement did: evenly, or all W (embedding).
WorkTimes work(double forward_s, double backward_s, double input_grad_s, double weight_grad_s, bool all_weight) {
  WorkTimes w{forward_s, backward_s, input_grad_s, weight_grad_s};
  if (input_grad_s <= 0 && weight_grad_s <= 0) {
    w.input_grad_s = all_weight ? 0.0 : backward_s / 2;
    w.weight_grad_s = backward_s - w.input_grad_s;
  }
  return w;
}

WorkTimes work(const PhaseTimes& p, bool all_weight) {
  return work(p.forward_s, p.backward_s, p.input_grad_s, p.weight_grad_s, all_weight);
}

}  // namespace

DeviceTimes device_times(const Region& region, const JobSpec& job, const CostParams& params,
                         const Profile* profile) {
  DeviceTimes d;
  if (profile && profile_applies(*profile, region)) {
    d.layer = work(profile->layer, false);
    d.embedding = work(profile->embedding, true);
    d.head = work(profile->head, false);
    d.from_profile = true;
    return d;
  }
  const double flops_per_s = region.gpu_tflops * 1e12 * params.efficiency;
  auto secs = [&](const Flops& f, bool all_weight) {
    return work(f.forward / flops_per_s, f.backward / flops_per_s, 0, 0, all_weight);
  };
  d.layer = secs(layer_flops(job.model, job.micro_batch), false);
  d.embedding = secs(embedding_flops(job.model, job.micro_batch), true);
  d.head = secs(head_flops(job.model, job.micro_batch), false);
  return d;
}

double codec_ratio(const std::string& codec, DType dtype) {
  const double elem = dtype_bytes(dtype);
  if (codec == "none" || codec.empty()) return 1.0;
  if (codec == "int4-block") return elem / 0.5;
  return elem / 1.0;  // int8-block, fp8-e4m3-block, fp8-e5m2-block: one byte per element
}

double boundary_bytes(const JobSpec& job, const std::string& codec) {
  const double elems = static_cast<double>(job.micro_batch) * job.model.seq_len * job.model.d_model;
  return elems * dtype_bytes(job.model.dtype) / codec_ratio(codec, job.model.dtype);
}

CodecRates codec_rates(const Region& region, const std::string& codec, const CodecProfile* profile) {
  if (codec == "none" || codec.empty()) return {};
  if (profile && codec_profile_applies(*profile, region)) {
    auto it = profile->codecs.find(codec);
    if (it != profile->codecs.end()) return it->second;
  }
  if (region.gpu_type != "cpu") return {kAssumedGpuCodecBps, kAssumedGpuCodecBps};
  // geopipe-codec-bench --device cpu, AVX2 loop, 32768x4096 bf16, GB/s read + written.
  if (codec == "int8-block") return {19.20e9, 21.03e9};
  if (codec == "int4-block") return {11.14e9, 13.59e9};
  if (codec == "fp8-e4m3-block") return {6.04e9, 9.35e9};
  if (codec == "fp8-e5m2-block") return {7.22e9, 8.44e9};
  throw Error("no measured speed for codec \"" + codec + "\" (cost_model.cpp, codec_rates)");
}

CodecWork codec_work(const JobSpec& job, const std::string& codec, const CodecRates& rates) {
  if (codec == "none" || codec.empty()) return {};
  const double moved = boundary_bytes(job, "none") + boundary_bytes(job, codec);
  return {moved / rates.encode_bps, moved / rates.decode_bps};
}

double link_time_s(double bytes, const LinkSpec& link) {
  const double bw = link.bytes_per_s();
  if (bw <= 0) return std::numeric_limits<double>::infinity();
  return bytes / bw + link.latency_ms * 1e-3;
}

double boundary_egress_usd(double fwd_bytes, double bwd_bytes, const LinkSpec& forward, const LinkSpec& backward,
                           int micro_batches) {
  const double per_micro_batch = fwd_bytes * forward.egress_usd_per_gb + bwd_bytes * backward.egress_usd_per_gb;
  return micro_batches * per_micro_batch / kBytesPerGB;
}

namespace {

double extra_s(size_t k, size_t n, const DeviceTimes& d) {
  double e = 0;
  if (k == 0) e += d.embedding.total();
  if (k + 1 == n) e += d.head.total();
  return e;
}

}  // namespace

// Stage k with n_k blocks takes n_k * a_k + e_k. The continuous optimum T_c solves
// sum_k (T_c - e_k) / a_k = L. Starting from n_k = max(1, floor((T_c - e_k) / a_k)), which is at
// most the optimum's capacity floor((T* - e_k) / a_k) for every k, adding each missing block
// where it ends soonest (or removing surplus blocks from the slowest stage) never passes T*, so
// the result is optimal. At most S blocks are added or removed: O(S^2), no bisection.
std::vector<int> balance_layers(int layers, const std::vector<DeviceTimes>& dev) {
  const size_t n = dev.size();
  std::vector<int> split(n, 1);
  if (n == 0 || layers <= static_cast<int>(n)) return split;
  std::vector<double> a(n), e(n);
  double inv = 0, shifted = 0;
  for (size_t k = 0; k < n; ++k) {
    a[k] = std::max(dev[k].layer.total(), 1e-300);
    e[k] = extra_s(k, n, dev[k]);
    inv += 1.0 / a[k];
    shifted += e[k] / a[k];
  }
  const double t_cont = (layers + shifted) / inv;
  long total = 0;
  for (size_t k = 0; k < n; ++k) {
    const double room = std::floor((t_cont - e[k]) / a[k]);
    split[k] = static_cast<int>(std::clamp(room, 1.0, static_cast<double>(layers)));
    total += split[k];
  }
  while (total < layers) {
    size_t best = 0;
    double best_t = std::numeric_limits<double>::infinity();
    for (size_t k = 0; k < n; ++k) {
      const double t = (split[k] + 1) * a[k] + e[k];
      if (t < best_t) best_t = t, best = k;
    }
    ++split[best];
    ++total;
  }
  while (total > layers) {
    size_t worst = n;
    double worst_t = -1;
    for (size_t k = 0; k < n; ++k) {
      if (split[k] <= 1) continue;
      const double t = split[k] * a[k] + e[k];
      if (t > worst_t) worst_t = t, worst = k;
    }
    if (worst == n) break;
    --split[worst];
    --total;
  }
  return split;
}

std::vector<double> stage_times(const std::vector<int>& split, const std::vector<DeviceTimes>& dev) {
  std::vector<double> t(split.size());
  for (size_t k = 0; k < split.size(); ++k) t[k] = split[k] * dev[k].layer.total() + extra_s(k, split.size(), dev[k]);
  return t;
}

const char* schedule_kind_name(ScheduleKind kind) {
  switch (kind) {
    case ScheduleKind::kGPipe: return "gpipe";
    case ScheduleKind::kOneFOneB: return "1f1b";
    case ScheduleKind::kOneFOneBLatencyHiding: return "1f1b-lh";
  }
  return "1f1b";
}

PipelineTiming pipeline_timing(const std::vector<double>& t, const std::vector<double>& x,
                               const std::vector<double>& lat, int micro_batches, ScheduleKind kind,
                               int shared_compute_slots) {
  PipelineTiming p;
  const int S = static_cast<int>(t.size());
  const int M = std::max(1, micro_batches);
  double link_max = 0;
  for (double v : t) p.compute_period_s = std::max(p.compute_period_s, v);
  for (double v : x) link_max = std::max(link_max, v);
  double base_period = std::max(p.compute_period_s, link_max);
  p.link_bound = link_max > p.compute_period_s;

  // Round trip seen by stage k: from the start of its forward of a micro-batch until it may run
  // that micro-batch's backward, plus the backward: L_k = sum_{i>=k} t_i + sum_{j>=k} (2 x_j + 2 lat_j).
  std::vector<double> loop(S, 0.0);
  double acc = 0;
  for (int k = S - 1; k >= 0; --k) {
    acc += t[k];
    if (k < S - 1) acc += 2.0 * (x[k] + lat[k]);
    loop[k] = acc;
  }
  p.fill_s = S > 0 ? loop[0] : 0.0;

  p.warmup.assign(S, 0);
  double period = base_period;
  if (kind == ScheduleKind::kGPipe) {
    for (int k = 0; k < S; ++k) p.warmup[k] = M;  // every forward before any backward
    // All forwards, then all backwards: the activations cross each link as one wave and the
    // gradients as a second one, so a slow link is paid per wave, not once per micro-batch as in
    // 1F1B, where an activation and a gradient cross in opposite directions at the same time.
    // Forward = t / 3 and backward = 2 t / 3 (the FLOPs ratio, layer_flops).
    period = std::max(p.compute_period_s / 3, link_max) + std::max(2 * p.compute_period_s / 3, link_max);
  } else {
    for (int k = 0; k < S; ++k) {
      int plain = std::min(S - 1 - k, M - 1);
      int w = plain;
      if (kind == ScheduleKind::kOneFOneBLatencyHiding && base_period > 0) {
        // (w + 1) micro-batches in flight must cover the round trip at the steady period.
        int need = static_cast<int>(std::ceil(loop[k] / base_period * (1 - 1e-12))) - 1;
        w = std::min(std::max(plain, need), M - 1);
      }
      p.warmup[k] = w;
      double stall_period = loop[k] / (w + 1);
      if (stall_period > period * (1 + 1e-12)) p.latency_stall = true;
      period = std::max(period, stall_period);
    }
  }
  p.period_s = period;
  p.iteration_s = (M - 1) * period + p.fill_s;
  const int D = shared_compute_slots;
  if (D > 0 && D < S) {
    double work = 0, ramp = 0;
    for (int k = 0; k < S; ++k) work += M * t[k];
    for (int k = 0; k + 1 < D; ++k) ramp += t[k] + 2.0 * (x[k] + lat[k]);
    const double shared = work / D + ramp;
    if (shared > p.iteration_s) {
      p.iteration_s = shared;
      p.compute_shared = true;
    }
  }
  return p;
}

double usable_memory_bytes(const Region& region) { return region.gpu_mem_gb * 1e9 * kMemorySafetyFactor; }

double chunk_parameters(const ModelSpec& m, int blocks, bool first, bool last) {
  const double h = m.d_model, V = m.vocab, T = m.seq_len;
  double n = blocks * (12 * h * h + 13 * h);
  if (first) n += (V + T) * h;
  if (last) n += 2 * h + V * h;
  return n;
}

StateBytes state_bytes_per_parameter(DType dtype, int replicas, bool shard_optimizer) {
  const double elem = dtype_bytes(dtype);
  const double master = dtype == DType::kFloat32 ? 0.0 : 4.0;
  const double moments = 8.0 / (shard_optimizer ? std::max(1, replicas) : 1);
  return {elem, elem, master + moments};
}

ActivationBytes chunk_activations(const ModelSpec& m, int micro_batch, int blocks, bool last, bool recompute) {
  const double b = micro_batch, T = m.seq_len, h = m.d_model, N = b * T;
  const double block = 16 * N * h + 4 * N + b * m.heads * T * T;
  const double head = 2 * N * h + 2 * N + N * m.vocab;
  constexpr double kFloat = 4;
  if (!recompute) return {kFloat * (blocks * block + (last ? head : N * h)), 0.0};
  // Block inputs (and the head's); the chunk's output is sent, not kept.
  return {kFloat * (blocks + (last ? 1 : 0)) * N * h, kFloat * std::max(block, last ? head : 0.0)};
}

int messages_held(bool cpu_rank, bool nccl, bool compressed, bool receiving, int micro_batches) {
  if (cpu_rank) return micro_batches;
  if (receiving) return nccl ? 1 : 0;
  return nccl || !compressed ? micro_batches : 0;
}

AllReduceTime allreduce_time(double grad_bytes, double backward_s, int replicas, const LinkSpec& intra) {
  AllReduceTime a;
  if (replicas <= 1 || grad_bytes <= 0) return a;
  const double R = replicas;
  auto ring = [&](double bytes) {
    return 2 * (R - 1) / R * bytes / intra.bytes_per_s() + 2 * (R - 1) * intra.latency_ms * 1e-3;
  };
  const double bucket = static_cast<double>(kGradBucketBytes);
  const double buckets = std::ceil(grad_bytes / bucket);
  const double last = grad_bytes - (buckets - 1) * bucket;
  a.total_s = (buckets - 1) * ring(bucket) + ring(last);
  a.exposed_s = std::max(ring(last), a.total_s - backward_s);
  return a;
}

EnergyCost iteration_energy(const std::vector<const Region*>& regions, const std::vector<double>& t,
                            double iteration_s, int micro_batches, const CostParams& params) {
  EnergyCost e;
  for (size_t k = 0; k < regions.size(); ++k) {
    const Region& r = *regions[k];
    const double busy = std::min(iteration_s, micro_batches * t[k]);
    const double joules = r.gpu_power_w * r.pue * (busy + params.idle_power_fraction * (iteration_s - busy));
    e.energy_j += joules;
    e.cost_usd += joules_to_kwh(joules) * r.price_usd_per_kwh;
  }
  return e;
}

}  // namespace geopipe::scheduler
