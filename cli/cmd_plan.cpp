// `geopipe plan`: places one job on an empty cluster and writes the plan the runtime executes.
#include "commands.h"

#include <geopipe/core/config.h>
#include <geopipe/core/error.h>
#include <geopipe/core/plan.h>
#include <geopipe/core/schedule.h>
#include <geopipe/scheduler/planner.h>
#include <geopipe/scheduler/profile.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>
#include <string>

namespace geopipe::cli {

namespace {

struct PlanOptions {
  std::string topology, job, out, profile, codec_profile;
  std::string policy = "bace";
  std::string codec = "auto";
  std::string schedule = "auto";
  int stages = 0;
  int virtual_stages = 0;
  int replicas = 0;  // 0: the job's (its "replicas" field, else 1; with "gpus" bounds, chosen)
  std::vector<int> gpus;  // --gpus MIN,MAX: the job's "gpus" bounds
  std::string recompute = "auto";
  bool shard_optimizer = false;
  double max_slowdown = scheduler::PlannerOptions{}.max_slowdown;
  double efficiency = 0.4;
  int shared_compute_slots = 0;
};

void print_schedules(const std::vector<scheduler::ScheduleOption>& options, const Plan& plan) {
  if (options.size() < 2) return;
  char line[256];
  std::cout << "  schedules on this placement (replayed with the cost model):\n";
  for (const auto& o : options) {
    if (!o.unavailable.empty()) {
      std::cout << "    " << o.kind << ": cannot run: " << o.unavailable << "\n";
      continue;
    }
    const int peak = *std::max_element(o.timing.peak_activations.begin(), o.timing.peak_activations.end());
    std::snprintf(line, sizeof line, "    %-12s V=%d%s  iteration %.4f s  peak activations %d  memory %.2f GB%s%s\n",
                  o.kind.c_str(), o.virtual_stages, o.recompute ? "  recompute" : "", o.timing.iteration_s, peak,
                  o.peak_memory_bytes() / 1e9,
                  o.fits() ? "" : "  (does not fit)", o.kind == plan.schedule.kind ? "  <- chosen" : "");
    std::cout << line;
  }
}

// "rank 3", or for a stage's replicas "ranks 2-3" (consecutive) or "ranks 1,5".
std::string rank_list(const std::vector<int>& ranks) {
  if (ranks.size() == 1) return "rank " + std::to_string(ranks[0]);
  bool consecutive = true;
  for (size_t i = 1; i < ranks.size(); ++i) consecutive = consecutive && ranks[i] == ranks[i - 1] + 1;
  if (consecutive) return "ranks " + std::to_string(ranks.front()) + "-" + std::to_string(ranks.back());
  std::string s = "ranks ";
  for (size_t i = 0; i < ranks.size(); ++i) s += (i ? "," : "") + std::to_string(ranks[i]);
  return s;
}

void print_summary(const Plan& plan, const std::vector<scheduler::ScheduleOption>& options, const std::string& out) {
  char line[256];
  std::cout << "plan for job \"" << plan.job.name << "\" (policy " << plan.provenance.policy << ", topology "
            << plan.provenance.topology_name << "): " << plan.world_size() << (plan.world_size() == 1 ? " rank, " : " ranks, ")
            << plan.num_stages() << (plan.num_stages() == 1 ? " stage" : " stages");
  if (plan.replicas() > 1) std::cout << " x " << plan.replicas() << " replicas";
  std::cout << ", schedule " << plan.schedule.kind;
  if (plan.schedule.virtual_stages > 1) std::cout << " (" << plan.schedule.virtual_stages << " stages per rank)";
  if (plan.schedule.recompute) std::cout << ", recomputation (only block inputs kept)";
  std::cout << "\n";
  for (size_t k = 0; k < plan.stages.size(); ++k) {
    const auto& s = plan.stages[k];
    std::snprintf(line, sizeof line, "  stage %-3d %-8s %-26s layers [%d, %d)  %.4f s/micro-batch", s.index,
                  rank_list(s.ranks).c_str(), s.region.c_str(), s.layer_begin, s.layer_end,
                  plan.predicted.stage_compute_s[k]);
    std::cout << line;
    if (k < plan.schedule.warmup.size()) std::cout << "  warm-up " << plan.schedule.warmup[k];
    std::cout << "\n";
  }
  for (size_t i = 0; i < plan.links.size(); ++i) {
    const auto& l = plan.links[i];
    std::snprintf(line, sizeof line, "  link  %d -> %d  %s -> %s  codec %s/%s%s  %s  utilisation %.0f %%\n",
                  l.from_stage, l.to_stage, l.from_region.c_str(), l.to_region.c_str(), l.codec_forward.c_str(),
                  l.codec_backward.c_str(), l.adaptive ? " (adaptive)" : "", l.transport.c_str(),
                  100 * plan.predicted.link_utilisation[i]);
    std::cout << line;
  }
  // One line per pipeline position: its replicas (consecutive ranks, planner.h) hold the same chunks.
  const int replicas = plan.replicas();
  for (int r = 0; r < static_cast<int>(plan.predicted.peak_activations.size()); r += replicas) {
    std::vector<int> ranks(static_cast<size_t>(replicas));
    for (int k = 0; k < replicas; ++k) ranks[k] = r + k;
    const std::string who = replicas == 1 ? "rank  " + std::to_string(r) : rank_list(ranks);
    std::snprintf(line, sizeof line, "  %-9s peak activations %d micro-batches, memory %.3f GB", who.c_str(),
                  plan.predicted.peak_activations[r], plan.predicted.memory_bytes[r] / 1e9);
    std::cout << line;
    if (static_cast<size_t>(r) < plan.predicted.allreduce_s.size()) {
      std::snprintf(line, sizeof line, ", gradient all-reduce %.4f s (exposed %.4f s)", plan.predicted.allreduce_s[r],
                    plan.predicted.allreduce_exposed_s[r]);
      std::cout << line;
    }
    std::cout << "\n";
  }
  std::snprintf(line, sizeof line,
                "  predicted: iteration %.4f s, job %.1f s (%d iterations), energy %.3f kWh, cost %.4f USD "
                "(electricity %.4f + egress %.4f)\n",
                plan.predicted.iteration_s, plan.predicted.jct_s, plan.job.iterations, plan.predicted.energy_kwh,
                plan.predicted.cost_usd, plan.predicted.electricity_usd, plan.predicted.egress_usd);
  std::cout << line;
  print_schedules(options, plan);
  if (!out.empty()) std::cout << "wrote " << out << "\n";
}

// The job with --gpus N or MIN,MAX as its "gpus" field, checked by the job parser's own rules.
JobSpec with_gpus(const JobSpec& job, const std::vector<int>& gpus) {
  nlohmann::json doc = to_json(job);
  if (gpus.size() == 1)
    doc["gpus"] = gpus[0];
  else
    doc["gpus"] = gpus;
  return parse_job(doc, "--gpus");
}

int run_plan(const PlanOptions& o) {
  Topology topology = load_topology(o.topology);
  JobSpec job = load_job(o.job);
  if (!o.gpus.empty()) job = with_gpus(job, o.gpus);
  // A plain job records the count it was made with; a job with "gpus" bounds has its choice fixed.
  if (o.replicas > 0 && !job.chooses_replicas()) job.replicas = o.replicas;
  auto policy = scheduler::parse_policy(o.policy);
  if (!policy) throw InputError("--policy", "", "unknown policy \"" + o.policy + "\"");
  scheduler::PlannerOptions po;
  po.codec = o.codec;
  po.schedule = o.schedule;
  po.virtual_stages = o.virtual_stages;
  po.recompute = o.recompute;
  po.shard_optimizer = o.shard_optimizer;
  if (o.virtual_stages > 0 && o.schedule != "interleaved" && o.schedule != "auto")
    throw InputError("--virtual-stages", "", "only --schedule interleaved (or auto) takes a chunk count; " +
                                                 o.schedule + " runs " + (o.schedule == "zbv" ? "2" : "1") +
                                                 " per rank");
  po.fixed_stages = o.stages;
  if (job.chooses_replicas()) po.fixed_replicas = o.replicas;
  po.max_slowdown = o.max_slowdown;
  po.cost.efficiency = o.efficiency;
  po.cost.shared_compute_slots = o.shared_compute_slots;
  std::unique_ptr<scheduler::Profile> profile;
  if (!o.profile.empty()) {
    profile = std::make_unique<scheduler::Profile>(scheduler::load_profile(o.profile));
    po.profile = profile.get();
  }
  std::unique_ptr<scheduler::CodecProfile> codec_profile;
  if (!o.codec_profile.empty()) {
    codec_profile = std::make_unique<scheduler::CodecProfile>(scheduler::load_codec_profile(o.codec_profile));
    po.codec_profile = codec_profile.get();
  }
  std::vector<scheduler::ScheduleOption> considered;
  Plan plan = scheduler::plan_job(*policy, topology, job, po, &considered);
  if (o.out.empty() || o.out == "-") {
    std::cout << to_json(plan).dump(2) << "\n";
  } else {
    save_plan(plan, o.out);
    print_summary(plan, considered, o.out);
  }
  return kExitOk;
}

}  // namespace

void register_plan(CLI::App& app, int& exit_code) {
  auto o = std::make_shared<PlanOptions>();
  auto* cmd = app.add_subcommand("plan", "Place one job on an empty cluster (BACE-Pipe or a baseline) and write its plan");
  cmd->add_option("--topology", o->topology, "Topology file")->required()->check(CLI::ExistingFile);
  cmd->add_option("--job", o->job, "Job file")->required()->check(CLI::ExistingFile);
  cmd->add_option("-o,--output", o->out, "Plan file to write (default: print the plan's JSON)")
      ->check([](const std::string& path) {  // refuse a path in a missing folder now, not after the work
        const auto folder = std::filesystem::path(path).parent_path();
        return folder.empty() || std::filesystem::is_directory(folder) ? std::string()
                                                                       : "folder " + folder.string() + " does not exist";
      });
  std::vector<std::string> names;
  for (auto p : scheduler::all_policies()) names.push_back(scheduler::policy_name(p));
  cmd->add_option("--policy", o->policy, "Placement policy (default bace)")->check(CLI::IsMember(names));
  cmd->add_option("--stages", o->stages, "Fix the stage count (default: choose within the job's range)")
      ->check(CLI::Range(1, 4096));
  std::vector<std::string> codecs = {"auto", "adaptive"};
  for (const auto& c : known_codec_names()) codecs.push_back(c);
  cmd->add_option("--codec", o->codec,
                  "Inter-region codec: auto (int8-block where it makes a hop faster, or saves more egress than its "
                  "compute costs), none, one codec for every hop, or "
                  "adaptive (start as auto does; the runtime steps each hop's codec with the link it measures)")
      ->check(CLI::IsMember(codecs));
  std::vector<std::string> schedules = {"auto"};
  for (const auto& k : known_schedule_kinds()) schedules.push_back(k);
  cmd->add_option("--schedule", o->schedule,
                  "auto (the fastest that fits in memory), gpipe, 1f1b, 1f1b-lh (deeper warm-up hides latency), "
                  "interleaved (V stages per rank), zb-h1 or zbv (zero bubble: split backward; zbv 2 stages per rank)")
      ->check(CLI::IsMember(schedules));
  cmd->add_option("--virtual-stages", o->virtual_stages,
                  "Stages (model chunks) per rank for interleaved: the layers split into stages x V chunks (default 2)")
      ->check(CLI::Range(1, 64));
  cmd->add_option("--replicas", o->replicas,
                  "Data-parallel replicas of every stage, all in the stage's region (default: the job's "
                  "\"replicas\", else 1); a stage then needs this many GPUs of its region")
      ->check(CLI::Range(1, kMaxReplicas));
  cmd->add_option("--gpus", o->gpus,
                  "N or MIN,MAX: GPUs the job may hold (its \"gpus\" field): the planner chooses the replicas R "
                  "(dividing micro_batches, each replica running micro_batches / R) and the stages S with "
                  "MIN <= S x R <= MAX; --replicas then fixes R")
      ->expected(1, 2)
      ->delimiter(',');
  cmd->add_option("--recompute", o->recompute,
                  "auto (recompute only when the activations would not fit), none, or full (keep only each "
                  "block's input; train with --recompute full)")
      ->check(CLI::IsMember({"auto", "none", "full"}));
  cmd->add_flag("--shard-optimizer", o->shard_optimizer,
                "Plan memory for ZeRO-1 (train with --shard-optimizer): AdamW's moments divided among a stage's "
                "replicas");
  add_max_slowdown_option(cmd, o->max_slowdown);
  cmd->add_option("--efficiency", o->efficiency, "Achieved fraction of peak GPU FLOP/s (default 0.4)")
      ->check(CLI::Range(0.001, 1.0));
  cmd->add_option("--profile", o->profile, "Measured compute profile (replaces the FLOPs model for its device)")
      ->check(CLI::ExistingFile);
  cmd->add_option("--codec-profile", o->codec_profile,
                  "Codec speeds measured by geopipe-codec-bench --json (for the regions whose gpu_type its device "
                  "names); default: the CPU twins' measured speeds, an assumed 1 TB/s on GPUs")
      ->check(CLI::ExistingFile);
  cmd->add_option("--shared-compute-slots", o->shared_compute_slots,
                  "Every stage runs on this one host, which computes N stages at once (emulated regions: its cores, "
                  "one LibTorch thread per rank); 0 (default): each stage has its own device")
      ->check(CLI::Range(0, 1 << 20));
  cmd->callback([o, &exit_code] { exit_code = run_plan(*o); });
}

}  // namespace geopipe::cli
