// What a training run reports: the progress line and JSON log line of each step, the summary at
// the end, and the merged trace (trainer_parts.h).
#include "trainer_parts.h"

#include "tags.h"

#include <geopipe/comm/communicator.h>
#include <geopipe/core/error.h>
#include <geopipe/runtime/checkpoint.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

namespace geopipe::runtime::detail {

namespace {

using Clock = std::chrono::steady_clock;

std::string fmt_duration(double s) {
  char buf[32];
  if (s < 0 || !std::isfinite(s)) return "?";
  const long t = static_cast<long>(s + 0.5);
  if (t >= 3600) std::snprintf(buf, sizeof(buf), "%ldh%02ldm", t / 3600, (t / 60) % 60);
  else if (t >= 60) std::snprintf(buf, sizeof(buf), "%ldm%02lds", t / 60, t % 60);
  else std::snprintf(buf, sizeof(buf), "%lds", t);
  return buf;
}

std::string fmt_bytes(double b) {
  char buf[32];
  if (b >= 1e9) std::snprintf(buf, sizeof(buf), "%.2f GB", b / 1e9);
  else if (b >= 1e6) std::snprintf(buf, sizeof(buf), "%.2f MB", b / 1e6);
  else if (b >= 1e3) std::snprintf(buf, sizeof(buf), "%.1f kB", b / 1e3);
  else std::snprintf(buf, sizeof(buf), "%.0f B", b);
  return buf;
}

// Electricity of the run: each stage's GPU power x PUE x wall time at its region's price.
// Every rank is a GPU (a stage's replicas each draw power): its region's power x PUE x its wall time.
std::pair<double, double> electricity(const Plan& plan, const Topology& topo, const std::vector<double>& rank_wall_s) {
  double kwh_sum = 0, usd = 0;
  for (int rank = 0; rank < plan.world_size(); ++rank) {
    const int ri = topo.region_index(plan.stages[static_cast<size_t>(plan.stage_of_rank(rank))].region);
    if (ri < 0) continue;
    const Region& r = topo.regions[static_cast<size_t>(ri)];
    const double kwh = r.gpu_power_w * r.pue * rank_wall_s[static_cast<size_t>(rank)] / 3.6e6;
    kwh_sum += kwh;
    usd += kwh * r.price_usd_per_kwh;
  }
  return {kwh_sum, usd};
}

}  // namespace

void RunTotals::add(const StepStats& st) {
  compute_s += st.compute_s;
  wait_s += st.wait_s;
  checkpoint_blocked_s += st.checkpoint_blocked_s;
  checkpoint_write_s += st.checkpoint_write_s;
  if (steps > 0) {  // the first step's all-reduce also waits for the replicas' start-up skew
    allreduce_s += st.allreduce_s;
    allreduce_exposed_s += st.allreduce_exposed_s;
  }
  for (const LinkStats& l : st.links) {
    link_wire[{l.from_stage, l.to_stage}] += l.bytes;
    if (!l.codec.empty()) codec_time[{l.from_stage, l.to_stage}][l.codec] += st.step_s;
  }
  ++steps;
}

StepLogger::StepLogger(const Plan& plan, const TrainConfig& cfg, bool rank0, int64_t first_step, int64_t iters)
    : config_(cfg), rank0_(rank0), first_step_(first_step), iters_(iters),
      tokens_per_step_(static_cast<double>(plan.job.micro_batch) * plan.job.model.seq_len * plan.job.micro_batches *
                       plan.replicas()),
      start_(Clock::now()) {
  if (!rank0 || cfg.json_log.empty()) return;
  // A fresh run starts the log afresh, but keeps the supervisor's restart lines (geopipe launch
  // --max-restarts relaunching from the start).
  if (!cfg.resume) trim_json_log(cfg.json_log, 0);
  json_.open(cfg.json_log, std::ios::app);
  if (!json_) throw InputError("--json-log", "json-log", "cannot write " + cfg.json_log);
}

void StepLogger::log(const StepStats& st, std::optional<double> val) {
  if (!rank0_) return;
  const double tok_s = st.step_s > 0 ? tokens_per_step_ / st.step_s : 0;
  const double elapsed = std::chrono::duration<double>(Clock::now() - start_).count();
  if (config_.progress) {
    const double done = static_cast<double>(st.step + 1 - first_step_);
    const double eta = elapsed / done * static_cast<double>(iters_ - st.step - 1);
    std::string line = fmt::format("step {}/{} | loss {:.4f}", st.step + 1, iters_, st.loss);
    if (val) line += fmt::format(" | val {:.4f}", *val);
    line += fmt::format(" | lr {:.2e} | norm {:.3f} | {:.0f} tok/s | {:.3f} s/step", st.lr, st.grad_norm, tok_s,
                        st.step_s);
    // The slowest link this step by measured throughput, and how long its receiver waited.
    const LinkStats* slow = nullptr;
    for (const auto& l : st.links)
      if (l.busy_s > 0 && (!slow || l.mb_per_s() < slow->mb_per_s())) slow = &l;
    if (slow) line += fmt::format(" | slowest link {} {:.3g} MB/s wait {:.3f} s", slow->name(), slow->mb_per_s(), slow->wait_s);
    if (st.allreduce_s > 0)  // replicas: rank 0's gradient all-reduce, and what the backward did not hide
      line += fmt::format(" | all-reduce {:.3f} s ({:.0f}% exposed)", st.allreduce_s,
                          100 * std::min(1.0, st.allreduce_exposed_s / st.allreduce_s));
    std::printf("%s | ETA %s\n", line.c_str(), fmt_duration(eta).c_str());
    for (const auto& l : st.links)  // --codec adaptive: what changes from the next step on, and why
      if (!l.codec_next.empty())
        std::printf("  link %s: %s -> %s from step %lld: %s\n", l.name().c_str(), l.codec.c_str(),
                    l.codec_next.c_str(), static_cast<long long>(st.step + 2), l.codec_reason.c_str());
    std::fflush(stdout);
  }
  if (!json_.is_open()) return;
  nlohmann::json j = {{"step", st.step + 1},        {"loss", st.loss},      {"lr", st.lr},
                      {"grad_norm", st.grad_norm}, {"tokens_per_s", tok_s}, {"step_s", st.step_s},
                      {"elapsed_s", elapsed}};
  if (val) j["val_loss"] = *val;
  if (st.checkpoint_blocked_s > 0) j["checkpoint_blocked_s"] = st.checkpoint_blocked_s;
  if (st.checkpoint_write_s > 0) j["checkpoint_write_s"] = st.checkpoint_write_s;
  if (st.allreduce_s > 0) {
    j["allreduce_s"] = st.allreduce_s;
    j["allreduce_exposed_s"] = st.allreduce_exposed_s;
  }
  if (!st.links.empty()) {
    nlohmann::json links = nlohmann::json::object();
    for (const auto& l : st.links) {
      auto& o = links[l.name()];
      o = {{"mb_per_s", l.mb_per_s()}, {"wait_s", l.wait_s}, {"busy_s", l.busy_s}, {"bytes", l.bytes}};
      if (!l.codec.empty()) o["codec"] = l.codec;
      if (!l.codec_next.empty()) o["codec_next"] = l.codec_next, o["codec_reason"] = l.codec_reason;
    }
    j["links"] = links;
  }
  json_ << j.dump() << "\n";
  json_.flush();
}

namespace {

// "0" or "0,2": the stages a rank runs.
std::string stages_of(const Plan& plan, int rank) {
  std::string out;
  for (int s : plan.stages_of_rank(rank)) out += (out.empty() ? "" : ",") + std::to_string(s);
  return out;
}

// One direction of a link over the run: raw bytes (fp32 activations of every micro-batch) and wire bytes.
std::string link_bytes(const Plan& plan, const RunTotals& tot, int from, int to) {
  const double raw = static_cast<double>(tot.steps) * plan.job.micro_batches * plan.job.micro_batch *
                     plan.job.model.seq_len * plan.job.model.d_model * 4.0;
  auto it = tot.link_wire.find({from, to});
  return fmt::format("{:>9} -> {:>9}", fmt_bytes(raw), fmt_bytes(it == tot.link_wire.end() ? 0.0 : it->second));
}

}  // namespace

std::string summarize(const Plan& plan, const TrainConfig& cfg, const RunTotals& tot, const TrainResult& result,
                      comm::Communicator* comm) {
  // Every rank's times in its slot, one all-reduce.
  const int R = plan.world_size(), rank = comm ? comm->rank() : 0;
  constexpr size_t K = 6;
  std::vector<double> v(static_cast<size_t>(R) * K, 0.0);
  const double mine[K] = {tot.compute_s, tot.wait_s,           tot.wall_s,
                          tot.allreduce_s, tot.allreduce_exposed_s, static_cast<double>(result.optimizer_state_bytes)};
  std::copy(mine, mine + K, v.begin() + static_cast<std::ptrdiff_t>(static_cast<size_t>(rank) * K));
  allreduce_sum(comm, v, cfg.comm_timeout_s);
  if (rank != 0 || result.steps.empty()) return "";
  auto at = [&](int r, size_t k) { return v[static_cast<size_t>(r) * K + k]; };
  const double steps = static_cast<double>(result.steps.size());
  const bool replicas = plan.replicas() > 1;
  std::ostringstream o;
  o << fmt::format("summary: {} steps, final loss {:.4f}", result.steps.size(), result.steps.back().loss);
  if (!result.val_losses.empty()) o << fmt::format(", validation loss {:.4f}", result.val_losses.back().second);
  o << fmt::format(", {:.3f} s/step\n", tot.wall_s / steps);
  o << (replicas ? "  stage/replica  region          compute  comm-wait  idle+other  optimizer  all-reduce/step  exposed\n"
                 : "  stage  region          compute  comm-wait  idle+other  optimizer\n");
  std::vector<double> wall(static_cast<size_t>(R), 0.0);
  for (int r = 0; r < R; ++r) {
    const std::vector<int> stages = plan.stages_of_rank(r);
    wall[static_cast<size_t>(r)] = at(r, 2);
    const double c = at(r, 0) / std::max(at(r, 2), 1e-9), w = at(r, 1) / std::max(at(r, 2), 1e-9);
    const std::string who = replicas ? fmt::format("{}/{}", stages_of(plan, r), plan.replica_of(r)) : stages_of(plan, r);
    o << fmt::format("  {:<{}}  {:<14} {:7.1f}%  {:8.1f}%  {:9.1f}%", who, replicas ? 13 : 5,
                     plan.stages[static_cast<size_t>(stages.front())].region, 100 * c, 100 * w,
                     100 * std::max(0.0, 1 - c - w));
    o << fmt::format("  {:>9}", fmt_bytes(at(r, 5)));  // AdamW's moments: what ZeRO-1 divides by R
    // Replicas: the gradient all-reduce per step, and the part the backward did not hide.
    if (replicas)
      o << fmt::format("  {:13.4f} s  {:6.1f}%", at(r, 3) / std::max(1.0, steps - 1),
                       100 * at(r, 4) / std::max(at(r, 3), 1e-12));
    o << "\n";
  }
  if (replicas) o << "  (all-reduce: mean over the steps after the first, which also waits for the replicas to start)\n";
  if (tot.checkpoints > 0)  // rank 0's: the loop's cost and the background write, per checkpoint
    o << fmt::format("  checkpoints: {}, the loop blocked {:.4f} s each ({:.1f}% of a step), files written in the "
                     "background in {:.4f} s each\n",
                     tot.checkpoints, tot.checkpoint_blocked_s / tot.checkpoints,
                     100 * tot.checkpoint_blocked_s / tot.checkpoints / std::max(tot.wall_s / steps, 1e-12),
                     tot.checkpoint_write_s / tot.checkpoints);
  if (plan.num_stages() > 1) o << "  link   activations raw -> wire (codec)      gradients raw -> wire (codec)\n";
  const auto [over_f, over_b] = codec_pair(cfg.codec);
  for (int s = 0; s + 1 < plan.num_stages(); ++s) {
    const LinkPlan* l = plan.link_between(s, s + 1);
    const std::string cf = !over_f.empty() ? over_f : l ? l->codec_forward : "none";
    const std::string cb = !over_b.empty() ? over_b : l ? l->codec_backward : "none";
    o << fmt::format("  {}->{}   {} ({:<14})  {} ({})\n", s, s + 1, link_bytes(plan, tot, s, s + 1), cf,
                     link_bytes(plan, tot, s + 1, s), cb);
  }
  for (const auto& [link, times] : tot.codec_time) {  // --codec adaptive
    o << fmt::format("  {}->{}   adaptive codec, time at each:", link.first, link.second);
    for (const auto& [codec, secs] : times) o << fmt::format(" {} {:.1f} s", codec, secs);
    o << "\n";
  }
  if (cfg.topology) {
    const auto [kwh, usd] = electricity(plan, *cfg.topology, wall);
    o << fmt::format("  electricity: {:.6f} kWh, ${:.6f} at the regions' prices (GPU power x PUE x wall time)\n",
                     kwh, usd);
  }
  return o.str();
}

void write_trace(const Plan& plan, const TrainConfig& cfg, const std::vector<TraceSpan>& spans, int64_t first_step,
                 comm::Communicator* comm) {
  const int rank = comm ? comm->rank() : 0;
  const comm::Seconds timeout(cfg.comm_timeout_s);
  nlohmann::json mine = nlohmann::json::array();
  mine.push_back({{"name", "process_name"}, {"ph", "M"}, {"pid", rank}, {"tid", 0},
                  {"args", {{"name", fmt::format("rank {} stage {} ({})", rank, stages_of(plan, rank),
                                                 plan.stages[static_cast<size_t>(plan.stage_of_rank(rank))].region)}}}});
  for (const auto& s : spans)
    mine.push_back({{"name", s.name}, {"ph", "X"}, {"pid", rank}, {"tid", 0}, {"ts", s.start_us}, {"dur", s.dur_us},
                    {"cat", s.name.rfind("SEND", 0) == 0 || s.name.find("wait") != std::string::npos ? "comm" : "compute"}});
  if (rank != 0) {
    std::string text = mine.dump();
    comm::MessageHeader h;
    h.kind = comm::MessageKind::kBytes;
    h.stage = plan.stage_of_rank(rank);
    comm->isend(text.data(), text.size(), 0, kTagTrace, h).wait(timeout);
    return;
  }
  nlohmann::json all = mine;
  for (int r = 1; comm && r < comm->size(); ++r) {
    comm::Request req = comm->irecv_any_size(r, kTagTrace);
    req.wait(timeout);
    const auto& p = req.payload();
    for (auto& e : nlohmann::json::parse(p.begin(), p.end())) all.push_back(std::move(e));
  }
  // otherData ties the trace to its plan and to the log's step numbers (geopipe report).
  nlohmann::json doc = {{"traceEvents", all},
                        {"displayTimeUnit", "ms"},
                        {"otherData", {{"plan_hash", plan.hash()}, {"first_step", first_step}}}};
  write_file_atomic(cfg.trace_file, doc.dump() + "\n");
}

}  // namespace geopipe::runtime::detail
