#include <geopipe/core/error.h>
#include <geopipe/core/plan.h>
#include <geopipe/core/schedule.h>

#include "json_reader.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <set>

#include <unistd.h>

namespace geopipe {

using detail::child_path;
using detail::index_path;
using detail::json;
using detail::JsonReader;

const std::vector<std::string>& adaptive_codec_ladder(bool activations) {
  static const std::vector<std::string> act = {"none", "int8-block", "int4-block"};
  static const std::vector<std::string> grad = {"none", "int8-block"};
  return activations ? act : grad;
}

const std::vector<std::string>& known_codec_names() {
  static const std::vector<std::string> names = {"none", "int8-block", "fp8-e4m3-block", "fp8-e5m2-block",
                                                 "int4-block"};
  return names;
}

int Plan::world_size() const {
  std::set<int> ranks;
  for (const auto& s : stages) ranks.insert(s.ranks.begin(), s.ranks.end());
  return static_cast<int>(ranks.size());
}

int Plan::stage_of_rank(int rank) const {
  for (const auto& s : stages)
    if (std::find(s.ranks.begin(), s.ranks.end(), rank) != s.ranks.end()) return s.index;
  return -1;
}

std::vector<int> Plan::stages_of_rank(int rank) const {
  std::vector<int> out;
  for (const auto& s : stages)
    if (std::find(s.ranks.begin(), s.ranks.end(), rank) != s.ranks.end()) out.push_back(s.index);
  return out;
}

int Plan::replica_of(int rank) const {
  for (const auto& s : stages)
    for (size_t r = 0; r < s.ranks.size(); ++r)
      if (s.ranks[r] == rank) return static_cast<int>(r);
  return -1;
}

const std::vector<std::string>& known_schedule_kinds() {
  static const std::vector<std::string> kinds = {"gpipe", "1f1b", "1f1b-lh", "interleaved", "zb-h1", "zbv"};
  return kinds;
}

const LinkPlan* Plan::link_between(int from_stage, int to_stage) const {
  for (const auto& l : links)
    if (l.from_stage == from_stage && l.to_stage == to_stage) return &l;
  return nullptr;
}

namespace {

bool known_codec(const std::string& name) {
  const auto& names = known_codec_names();
  return std::find(names.begin(), names.end(), name) != names.end();
}

std::string codec_list() {
  std::string s;
  for (const auto& n : known_codec_names()) s += (s.empty() ? "" : ", ") + n;
  return s;
}

void read_codec(JsonReader& r, const json& link, const std::string& p, LinkPlan& out) {
  const json* c = r.field(link, p, "codec", false);
  if (!c) return;
  const std::string cp = child_path(p, "codec");
  auto check = [&](const std::string& path, const std::string& name, std::string& dst) {
    if (!known_codec(name))
      r.error(path, "unknown codec \"" + name + "\" (expected one of: " + codec_list() + ")");
    else
      dst = name;
  };
  if (c->is_string()) {
    check(cp, c->get<std::string>(), out.codec_forward);
    check(cp, c->get<std::string>(), out.codec_backward);
  } else if (r.expect_object(*c, cp, {"forward", "backward", "adaptive"})) {
    if (auto f = r.string(*c, cp, "forward", false)) check(child_path(cp, "forward"), *f, out.codec_forward);
    if (auto b = r.string(*c, cp, "backward", false)) check(child_path(cp, "backward"), *b, out.codec_backward);
    if (const json* a = r.field(*c, cp, "adaptive", false)) {
      if (!a->is_boolean()) r.error(child_path(cp, "adaptive"), "expected true or false");
      else out.adaptive = a->get<bool>();
    }
  }
  if (out.codec_backward == "int4-block") r.error(child_path(cp, "backward"), "int4-block is for forward activations only");
  if (!out.adaptive) return;
  for (const bool fwd : {true, false}) {
    const auto& ladder = adaptive_codec_ladder(fwd);
    const std::string& codec = fwd ? out.codec_forward : out.codec_backward;
    if (std::find(ladder.begin(), ladder.end(), codec) == ladder.end())
      r.error(child_path(cp, fwd ? "forward" : "backward"),
              "an adaptive link starts on its ladder (" + std::string(fwd ? "none, int8-block, int4-block" : "none, int8-block") +
                  "), not \"" + codec + "\"");
  }
}

std::vector<double> read_doubles(JsonReader& r, const json& obj, const std::string& p, const char* key) {
  std::vector<double> out;
  const json* v = r.field(obj, p, key, false);
  if (!v || !r.expect_array(*v, child_path(p, key))) return out;
  for (size_t i = 0; i < v->size(); ++i) {
    if (!(*v)[i].is_number())
      r.error(index_path(child_path(p, key), i), "expected a number, got " + detail::json_type_name((*v)[i]));
    else
      out.push_back((*v)[i].get<double>());
  }
  return out;
}

}  // namespace

namespace {

// Data-parallel replicas: every stage has as many ranks, and a rank that runs several stages
// (virtual stages) is the same replica of each, sharing the stages' position in the pipeline:
// replica r's ranks run one copy of replica 0's pipeline.
void check_replicas(const Plan& plan, const std::vector<int>& placed, JsonReader& r) {
  const size_t replicas = plan.stages.front().ranks.size();
  bool same_counts = replicas > 0;
  for (size_t i = 1; i < plan.stages.size(); ++i)
    if (plan.stages[i].ranks.size() != replicas && !plan.stages[i].ranks.empty()) {
      same_counts = false;
      r.error(child_path(index_path("stages", i), "ranks"),
              "has " + std::to_string(plan.stages[i].ranks.size()) + " ranks (replicas), stage 0 has " +
                  std::to_string(replicas) + ": every stage needs the same number of replicas");
    }
  if (placed.empty() || !same_counts) return;
  for (size_t rep = 0; rep < replicas; ++rep) {
    std::map<int, std::pair<int, size_t>> rank_at;  // pipeline position -> (rank, first stage there)
    for (size_t i = 0; i < plan.stages.size(); ++i) {
      const int rank = plan.stages[i].ranks[rep];
      auto [it, fresh] = rank_at.emplace(placed[i], std::make_pair(rank, i));
      if (!fresh && it->second.first != rank)
        r.error(index_path(child_path(index_path("stages", i), "ranks"), rep),
                "replica " + std::to_string(rep) + " of stage " + std::to_string(i) + " runs on rank " +
                    std::to_string(rank) + ", but this schedule places it with stage " +
                    std::to_string(it->second.second) + " (rank " + std::to_string(it->second.first) + ")");
    }
  }
}

// One rank per stage, or with virtual stages the schedule kind's placement, one region per rank.
void check_stage_placement(const Plan& plan, JsonReader& r) {
  const int V = plan.schedule.virtual_stages, S = plan.num_stages();
  const std::string& kind = plan.schedule.kind;
  if (V > 1 && kind != "interleaved" && kind != "zbv")
    r.error("schedule.virtual_stages", "only interleaved and zbv schedules run several stages per rank, got " +
                                           std::to_string(V) + " for " + kind);
  if (kind == "zbv" && V != 2) r.error("schedule.virtual_stages", "zbv runs 2 stages per rank, got " + std::to_string(V));
  if (S == 0) return;
  if (S % V != 0) {
    r.error("stages", std::to_string(S) + " stages do not split into " + std::to_string(V) + " per rank");
    return;
  }
  const int R = S / V;
  const std::vector<int> placed = V > 1 ? stage_ranks(chunk_placement_of(kind), R, V) : std::vector<int>{};
  check_replicas(plan, placed, r);
  // By position in the array: a stage's "index" may be wrong (reported elsewhere) and must not
  // index anything here.
  std::map<int, size_t> first_stage_of;  // rank -> position of the first stage it appeared in
  for (size_t i = 0; i < plan.stages.size(); ++i) {
    const StagePlan& st = plan.stages[i];
    const std::string p = index_path("stages", i);
    for (size_t k = 0; k < st.ranks.size(); ++k) {
      const int rank = st.ranks[k];
      auto [it, fresh] = first_stage_of.emplace(rank, i);
      if (fresh) continue;
      const StagePlan& other = plan.stages[it->second];
      if (V == 1)
        r.error(index_path(child_path(p, "ranks"), k), "rank " + std::to_string(rank) + " is assigned to two stages");
      else if (other.region != st.region)
        r.error(child_path(p, "region"), "rank " + std::to_string(rank) + " runs stages " +
                                             std::to_string(it->second) + " and " + std::to_string(i) +
                                             ", in two regions (" + other.region + ", " + st.region + ")");
    }
    if (V > 1 && st.ranks.size() == 1 && st.ranks[0] != placed[i])
      r.error(child_path(p, "ranks"), kind + " with " + std::to_string(V) + " stages per rank runs stage " +
                                          std::to_string(i) + " on rank " + std::to_string(placed[i]) + ", not " +
                                          std::to_string(st.ranks[0]));
  }
}

void read_version(JsonReader& r, const json& doc) {
  if (auto v = r.integer(doc, "", "version", 1, 1000)) {
    if (*v != kPlanVersion)
      r.error("version", "unsupported plan version " + std::to_string(*v) + " (this geopipe reads version " +
                             std::to_string(kPlanVersion) + ")");
  }
}

// parse_job throws its own diagnostics; they join the plan's so that all problems are reported at once.
void read_job(JsonReader& r, const json& doc, const std::string& file, Plan& plan) {
  if (const json* job = r.field(doc, "", "job")) {
    try {
      plan.job = parse_job(*job, file, "job");
      // A plan is what runs: its replicas, each with its micro_batches. Bounds are the planner's input.
      if (plan.job.chooses_replicas())
        r.error("job.gpus", "a plan's job gives the replicas it runs, not \"gpus\" bounds (those are for the "
                            "job file that geopipe plan reads)");
    } catch (const InputError& e) {
      for (const auto& d : e.diagnostics()) r.error(d.path, d.message);
    }
  }
}

void read_stage_ranks(JsonReader& r, const json& v, const std::string& p, StagePlan& s, std::set<int>& all_ranks) {
  const json* ranks = r.field(v, p, "ranks");
  if (!ranks || !r.expect_array(*ranks, child_path(p, "ranks"))) return;
  if (ranks->empty()) r.error(child_path(p, "ranks"), "expected at least one rank");
  for (size_t k = 0; k < ranks->size(); ++k) {
    const json& rv = (*ranks)[k];
    const std::string rp = index_path(child_path(p, "ranks"), k);
    if (!rv.is_number_integer() || rv.get<long long>() < 0 || rv.get<long long>() > (1 << 20)) {
      r.error(rp, "expected a rank number in [0, 1048576], got " + detail::json_type_name(rv));
      continue;
    }
    int rank = rv.get<int>();
    all_ranks.insert(rank);  // a rank in two stages: allowed with virtual stages only (check_stage_placement)
    s.ranks.push_back(rank);
  }
}

// A bad range leaves the stage without layers ([0, 0)), which check_layer_tiling skips.
void read_stage_layers(JsonReader& r, const json& v, const std::string& p, StagePlan& s) {
  const std::string lp = child_path(p, "layers");
  const json* layers = r.field(v, p, "layers");
  if (!layers) return;
  if (!layers->is_array() || layers->size() != 2 || !(*layers)[0].is_number_integer() ||
      !(*layers)[1].is_number_integer()) {
    r.error(lp, "expected [begin, end) as two integers, got " + detail::json_type_name(*layers));
    return;
  }
  const long long begin = (*layers)[0].get<long long>(), end = (*layers)[1].get<long long>();
  if (begin < 0 || end <= begin || end > 100000) {
    r.error(lp, "expected 0 <= begin < end <= 100000, got " + layers->dump());
    return;
  }
  s.layer_begin = static_cast<int>(begin);
  s.layer_end = static_cast<int>(end);
}

// Stage `i` of the plan's list, at JSON path `p`; its ranks are also added to `all_ranks`.
StagePlan read_stage(JsonReader& r, const json& v, const std::string& p, size_t i, std::set<int>& all_ranks) {
  StagePlan s;
  if (auto x = r.integer(v, p, "index", 0, 1 << 20)) {
    s.index = static_cast<int>(*x);
    if (s.index != static_cast<int>(i))
      r.error(child_path(p, "index"), "expected stage index " + std::to_string(i) + " (stages are listed in order), got " +
                                          std::to_string(s.index));
  }
  if (auto reg = r.string(v, p, "region")) s.region = *reg;
  read_stage_ranks(r, v, p, s, all_ranks);
  read_stage_layers(r, v, p, s);
  return s;
}

// Layer ranges must tile [0, layers) in order: no gap, no overlap.
void check_layer_tiling(const Plan& plan, JsonReader& r) {
  int expected_begin = 0;
  for (size_t i = 0; i < plan.stages.size(); ++i) {
    const auto& s = plan.stages[i];
    if (s.layer_end <= s.layer_begin) continue;
    if (s.layer_begin < expected_begin)
      r.error(child_path(index_path("stages", i), "layers"),
              "layer range [" + std::to_string(s.layer_begin) + ", " + std::to_string(s.layer_end) +
                  ") overlaps the previous stage (which ends at " + std::to_string(expected_begin) + ")");
    else if (s.layer_begin > expected_begin)
      r.error(child_path(index_path("stages", i), "layers"),
              "layer range starts at " + std::to_string(s.layer_begin) + " but the previous stage ends at " +
                  std::to_string(expected_begin) + " (layers in between belong to no stage)");
    expected_begin = s.layer_end;
  }
  if (!plan.stages.empty() && plan.job.model.layers > 0 && expected_begin != plan.job.model.layers)
    r.error(child_path(index_path("stages", plan.stages.size() - 1), "layers"),
            "stages end at layer " + std::to_string(expected_begin) + " but the model has " +
                std::to_string(plan.job.model.layers) + " layers");
}

// Ranks must be 0..N-1 so that the plan maps onto an MPI world.
void check_rank_numbering(const std::set<int>& all_ranks, JsonReader& r) {
  int n = 0;
  for (int rank : all_ranks) {
    if (rank != n) {
      r.error("stages", "ranks must be numbered 0.." + std::to_string(all_ranks.size() - 1) + " without gaps (rank " +
                            std::to_string(n) + " is missing)");
      break;
    }
    ++n;
  }
}

void read_stages(JsonReader& r, const json& doc, Plan& plan) {
  const json* stages = r.field(doc, "", "stages");
  if (!stages || !r.expect_array(*stages, "stages")) return;
  if (stages->empty()) r.error("stages", "expected at least one stage");
  std::set<int> all_ranks;
  for (size_t i = 0; i < stages->size(); ++i) {
    const json& v = (*stages)[i];
    const std::string p = index_path("stages", i);
    if (!r.expect_object(v, p, {"index", "region", "ranks", "layers"})) continue;
    plan.stages.push_back(read_stage(r, v, p, i, all_ranks));
  }
  check_layer_tiling(plan, r);
  check_rank_numbering(all_ranks, r);
}

// region_pair may be left out: the link then takes the regions of the stages it joins, which a given pair
// must match.
void read_link_regions(JsonReader& r, const json& v, const std::string& p, const Plan& plan, bool joins_next_stage,
                       LinkPlan& l) {
  if (const json* pair = r.field(v, p, "region_pair", false)) {
    if (!pair->is_array() || pair->size() != 2 || !(*pair)[0].is_string() || !(*pair)[1].is_string())
      r.error(child_path(p, "region_pair"), "expected [from_region, to_region]");
    else {
      l.from_region = (*pair)[0].get<std::string>();
      l.to_region = (*pair)[1].get<std::string>();
    }
  }
  if (!joins_next_stage) return;
  const auto& a = plan.stages[static_cast<size_t>(l.from_stage)];
  const auto& b = plan.stages[static_cast<size_t>(l.to_stage)];
  if (l.from_region.empty()) {
    l.from_region = a.region;
    l.to_region = b.region;
  } else if (l.from_region != a.region || l.to_region != b.region) {
    r.error(child_path(p, "region_pair"), "says " + l.from_region + " -> " + l.to_region + " but the stages run in " +
                                              a.region + " -> " + b.region);
  }
}

void read_link_transport(JsonReader& r, const json& v, const std::string& p, LinkPlan& l) {
  if (auto t = r.string(v, p, "transport", false)) {
    if (*t != "mpi" && *t != "nccl")
      r.error(child_path(p, "transport"), "expected \"mpi\" or \"nccl\", got \"" + *t + "\"");
    else
      l.transport = *t;
  }
  if (l.transport == "nccl" && !l.from_region.empty() && l.from_region != l.to_region)
    r.error(child_path(p, "transport"), "nccl is used only inside a region (" + l.from_region + " -> " + l.to_region + ")");
}

// The link at JSON path `p`; its regions are checked against the stages already read into `plan`.
LinkPlan read_link(JsonReader& r, const json& v, const std::string& p, const Plan& plan) {
  LinkPlan l;
  auto from = r.integer(v, p, "from_stage", 0, 1 << 20);
  auto to = r.integer(v, p, "to_stage", 0, 1 << 20);
  if (from) l.from_stage = static_cast<int>(*from);
  if (to) l.to_stage = static_cast<int>(*to);
  const bool joins_next_stage = from && to && *to == *from + 1 && *to < static_cast<long long>(plan.stages.size());
  if (from && to && !joins_next_stage)
    r.error(p, "a link must join stage k to stage k+1 of this plan, got " + std::to_string(*from) + " -> " +
                   std::to_string(*to));
  read_link_regions(r, v, p, plan, joins_next_stage, l);
  read_codec(r, v, p, l);
  read_link_transport(r, v, p, l);
  return l;
}

void check_one_link_per_stage_pair(const Plan& plan, JsonReader& r) {
  for (size_t k = 0; k + 1 < plan.stages.size(); ++k) {
    int found = 0;
    for (const auto& l : plan.links) found += l.from_stage == static_cast<int>(k);
    if (found != 1)
      r.error("links", "expected exactly one link from stage " + std::to_string(k) + " to stage " +
                           std::to_string(k + 1) + ", found " + std::to_string(found));
  }
}

// Links: one per pair of consecutive stages, in order.
void read_links(JsonReader& r, const json& doc, Plan& plan) {
  const json* links = r.field(doc, "", "links");
  if (!links || !r.expect_array(*links, "links")) return;
  for (size_t i = 0; i < links->size(); ++i) {
    const json& v = (*links)[i];
    const std::string p = index_path("links", i);
    if (!r.expect_object(v, p, {"from_stage", "to_stage", "region_pair", "codec", "transport"})) continue;
    plan.links.push_back(read_link(r, v, p, plan));
  }
  check_one_link_per_stage_pair(plan, r);
}

void read_warmup(JsonReader& r, const json& sch, Plan& plan) {
  const json* w = r.field(sch, "schedule", "warmup", false);
  if (!w || !r.expect_array(*w, "schedule.warmup")) return;
  for (size_t i = 0; i < w->size(); ++i) {
    const json& x = (*w)[i];
    if (!x.is_number_integer() || x.get<long long>() < 0 || x.get<long long>() > (1 << 20))
      r.error(index_path("schedule.warmup", i), "expected a warm-up depth in [0, 1048576], got " + detail::json_type_name(x));
    else
      plan.schedule.warmup.push_back(x.get<int>());
  }
  if (!plan.stages.empty() && !plan.schedule.warmup.empty() && plan.schedule.warmup.size() != plan.stages.size())
    r.error("schedule.warmup", "expected one warm-up depth per stage (" + std::to_string(plan.stages.size()) +
                                   "), got " + std::to_string(w->size()));
}

void read_schedule(JsonReader& r, const json& doc, Plan& plan) {
  const json* sch = r.field(doc, "", "schedule");
  if (!sch || !r.expect_object(*sch, "schedule", {"kind", "warmup", "virtual_stages", "recompute"})) return;
  if (auto k = r.string(*sch, "schedule", "kind")) {
    const auto& kinds = known_schedule_kinds();
    if (std::find(kinds.begin(), kinds.end(), *k) == kinds.end())
      r.error("schedule.kind", "expected gpipe, 1f1b, 1f1b-lh, interleaved, zb-h1 or zbv, got \"" + *k + "\"");
    else
      plan.schedule.kind = *k;
  }
  if (r.field(*sch, "schedule", "virtual_stages", false))
    if (auto v = r.integer(*sch, "schedule", "virtual_stages", 1, 64)) plan.schedule.virtual_stages = static_cast<int>(*v);
  if (const json* rc = r.field(*sch, "schedule", "recompute", false)) {
    if (!rc->is_boolean()) r.error("schedule.recompute", "expected true or false");
    else plan.schedule.recompute = rc->get<bool>();
  }
  read_warmup(r, *sch, plan);
}

void read_predicted(JsonReader& r, const json& doc, Plan& plan) {
  const json* pr = r.field(doc, "", "predicted", false);
  if (!pr || !r.expect_object(*pr, "predicted",
                              {"iteration_s", "jct_s", "energy_kwh", "cost_usd", "electricity_usd", "egress_usd",
                               "stage_compute_s", "link_utilisation", "peak_activations", "memory_bytes",
                               "allreduce_s", "allreduce_exposed_s"}))
    return;
  if (auto x = r.number(*pr, "predicted", "iteration_s", false, false)) plan.predicted.iteration_s = *x;
  if (auto x = r.number(*pr, "predicted", "jct_s", false, false)) plan.predicted.jct_s = *x;
  if (auto x = r.number(*pr, "predicted", "energy_kwh", false, false)) plan.predicted.energy_kwh = *x;
  if (auto x = r.number(*pr, "predicted", "cost_usd", false, false)) plan.predicted.cost_usd = *x;
  // Plans from before egress was priced give only cost_usd, which was all electricity.
  if (auto x = r.number(*pr, "predicted", "egress_usd", false, false)) plan.predicted.egress_usd = *x;
  if (auto x = r.number(*pr, "predicted", "electricity_usd", false, false))
    plan.predicted.electricity_usd = *x;
  else
    plan.predicted.electricity_usd = std::max(0.0, plan.predicted.cost_usd - plan.predicted.egress_usd);
  plan.predicted.stage_compute_s = read_doubles(r, *pr, "predicted", "stage_compute_s");
  plan.predicted.link_utilisation = read_doubles(r, *pr, "predicted", "link_utilisation");
  plan.predicted.memory_bytes = read_doubles(r, *pr, "predicted", "memory_bytes");
  plan.predicted.allreduce_s = read_doubles(r, *pr, "predicted", "allreduce_s");
  plan.predicted.allreduce_exposed_s = read_doubles(r, *pr, "predicted", "allreduce_exposed_s");
  const std::vector<double> peaks = read_doubles(r, *pr, "predicted", "peak_activations");
  for (size_t i = 0; i < peaks.size(); ++i) {
    if (!(peaks[i] >= 0 && peaks[i] <= 1e9) || std::floor(peaks[i]) != peaks[i])
      r.error(index_path("predicted.peak_activations", i), "expected a count of micro-batches >= 0");
    else
      plan.predicted.peak_activations.push_back(static_cast<int>(peaks[i]));
  }
}

void read_provenance(JsonReader& r, const json& doc, Plan& plan) {
  const json* pv = r.field(doc, "", "provenance");
  if (!pv || !r.expect_object(*pv, "provenance", {"policy", "topology", "topology_hash", "job_hash", "generator"}))
    return;
  if (auto s = r.string(*pv, "provenance", "policy", false)) plan.provenance.policy = *s;
  if (auto s = r.string(*pv, "provenance", "topology", false)) plan.provenance.topology_name = *s;
  if (auto s = r.string(*pv, "provenance", "topology_hash")) plan.provenance.topology_hash = *s;
  if (auto s = r.string(*pv, "provenance", "job_hash", false)) plan.provenance.job_hash = *s;
  if (auto s = r.string(*pv, "provenance", "generator", false)) plan.provenance.generator = *s;
}

}  // namespace

// The parts are read in this order because each is checked against those before it: the stages' layers
// against the job's model, the links against the stages, the stage placement against the schedule.
Plan parse_plan(const json& doc, const std::string& file) {
  JsonReader r(file);
  Plan plan;
  if (!r.expect_object(doc, "", {"version", "job", "stages", "links", "schedule", "predicted", "provenance", "note"}))
    r.throw_if_errors();
  read_version(r, doc);
  read_job(r, doc, file, plan);
  read_stages(r, doc, plan);
  read_links(r, doc, plan);
  read_schedule(r, doc, plan);
  check_stage_placement(plan, r);
  // Predictions and provenance are informative; read what is there.
  read_predicted(r, doc, plan);
  read_provenance(r, doc, plan);
  r.throw_if_errors();
  return plan;
}

// The canonical JSON form (sorted keys, round-trip doubles): the same for a plan and its copy.
std::string Plan::hash() const { return fnv1a_hex(to_json(*this).dump()); }

Plan load_plan(const std::string& path) { return parse_plan(read_json_file(path), path); }

json to_json(const Plan& plan) {
  json j;
  j["version"] = plan.version;
  j["job"] = to_json(plan.job);
  j["stages"] = json::array();
  for (const auto& s : plan.stages)
    j["stages"].push_back(
        {{"index", s.index}, {"region", s.region}, {"ranks", s.ranks}, {"layers", {s.layer_begin, s.layer_end}}});
  j["links"] = json::array();
  for (const auto& l : plan.links)
    j["links"].push_back({{"from_stage", l.from_stage},
                          {"to_stage", l.to_stage},
                          {"region_pair", {l.from_region, l.to_region}},
                          {"codec", {{"forward", l.codec_forward}, {"backward", l.codec_backward}}},
                          {"transport", l.transport}});
  for (size_t i = 0; i < plan.links.size(); ++i)
    if (plan.links[i].adaptive) j["links"][i]["codec"]["adaptive"] = true;
  j["schedule"] = {{"kind", plan.schedule.kind}, {"warmup", plan.schedule.warmup}};
  if (plan.schedule.virtual_stages != 1) j["schedule"]["virtual_stages"] = plan.schedule.virtual_stages;
  if (plan.schedule.recompute) j["schedule"]["recompute"] = true;
  j["predicted"] = {{"iteration_s", plan.predicted.iteration_s},
                    {"jct_s", plan.predicted.jct_s},
                    {"energy_kwh", plan.predicted.energy_kwh},
                    {"cost_usd", plan.predicted.cost_usd},
                    {"electricity_usd", plan.predicted.electricity_usd},
                    {"egress_usd", plan.predicted.egress_usd},
                    {"stage_compute_s", plan.predicted.stage_compute_s},
                    {"link_utilisation", plan.predicted.link_utilisation}};
  if (!plan.predicted.peak_activations.empty()) j["predicted"]["peak_activations"] = plan.predicted.peak_activations;
  if (!plan.predicted.memory_bytes.empty()) j["predicted"]["memory_bytes"] = plan.predicted.memory_bytes;
  if (!plan.predicted.allreduce_s.empty()) j["predicted"]["allreduce_s"] = plan.predicted.allreduce_s;
  if (!plan.predicted.allreduce_exposed_s.empty())
    j["predicted"]["allreduce_exposed_s"] = plan.predicted.allreduce_exposed_s;
  // The optional provenance fields are written only when set: the reader refuses an empty string.
  j["provenance"] = {{"topology_hash", plan.provenance.topology_hash}};
  const std::pair<const char*, const std::string*> optional[] = {{"policy", &plan.provenance.policy},
                                                                 {"topology", &plan.provenance.topology_name},
                                                                 {"job_hash", &plan.provenance.job_hash},
                                                                 {"generator", &plan.provenance.generator}};
  for (const auto& [key, value] : optional)
    if (!value->empty()) j["provenance"][key] = *value;
  return j;
}

void save_plan(const Plan& plan, const std::string& path) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw Error("cannot write " + tmp, kExitFailure);
    out << to_json(plan).dump(2) << "\n";
    out.flush();
    if (!out) {
      std::remove(tmp.c_str());
      throw Error("error while writing " + tmp, kExitFailure);
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw Error("cannot rename " + tmp + " to " + path, kExitFailure);
  }
}

void check_plan_against(const Plan& plan, const Topology& topology, const std::string& plan_file, int world_size) {
  JsonReader r(plan_file);
  if (plan.provenance.topology_hash != topology.hash())
    r.error("provenance.topology_hash", "plan was made for topology hash " + plan.provenance.topology_hash +
                                            " but " + topology.source + " hashes to " + topology.hash() +
                                            " (re-plan for this topology)");
  for (size_t i = 0; i < plan.stages.size(); ++i)
    if (topology.region_index(plan.stages[i].region) < 0)
      r.error(child_path(index_path("stages", i), "region"),
              "region \"" + plan.stages[i].region + "\" is not in " + topology.source);
  if (world_size > 0 && world_size != plan.world_size())
    r.error("stages", "plan needs " + std::to_string(plan.world_size()) + " ranks but the job was started with " +
                          std::to_string(world_size));
  r.throw_if_errors();
}

}  // namespace geopipe
