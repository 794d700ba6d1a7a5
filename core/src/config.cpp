#include <geopipe/core/config.h>
#include <geopipe/core/error.h>

#include "json_reader.h"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <set>
#include <sstream>

namespace geopipe {

using detail::child_path;
using detail::index_path;
using detail::json;
using detail::JsonReader;

// ---- DType ---------------------------------------------------------------------------------

int dtype_bytes(DType dtype) {
  switch (dtype) {
    case DType::kFloat32: return 4;
    case DType::kBFloat16: return 2;
    case DType::kFloat16: return 2;
  }
  return 4;
}

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kFloat32: return "fp32";
    case DType::kBFloat16: return "bf16";
    case DType::kFloat16: return "fp16";
  }
  return "fp32";
}

std::optional<DType> parse_dtype(const std::string& name) {
  if (name == "fp32" || name == "float32") return DType::kFloat32;
  if (name == "bf16" || name == "bfloat16") return DType::kBFloat16;
  if (name == "fp16" || name == "float16") return DType::kFloat16;
  return std::nullopt;
}

std::string fnv1a_hex(const std::string& bytes) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 1099511628211ull;
  }
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

json read_json_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(path, "", "cannot open file for reading");
  std::stringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw InputError(path, "", "error while reading the file");
  try {
    return json::parse(ss.str());
  } catch (const json::exception& e) {  // parse_error, or out_of_range for a number like 1e400
    throw InputError(path, "", std::string("malformed JSON: ") + e.what());
  }
}

// ---- Topology ------------------------------------------------------------------------------

int Topology::region_index(const std::string& region) const {
  for (size_t i = 0; i < regions.size(); ++i)
    if (regions[i].name == region) return static_cast<int>(i);
  return -1;
}

std::optional<LinkSpec> Topology::link(int from, int to) const {
  if (from < 0 || to < 0 || from >= num_regions() || to >= num_regions()) return std::nullopt;
  if (from == to) return intra_region;
  if (directed.size() != regions.size() * regions.size()) return std::nullopt;
  return directed[static_cast<size_t>(from) * regions.size() + static_cast<size_t>(to)];
}

int Topology::total_gpus() const {
  int n = 0;
  for (const auto& r : regions) n += r.gpus;
  return n;
}

void Topology::finalize() {
  const size_t n = regions.size();
  directed.assign(n * n, std::nullopt);
  // Pass 1: every link both ways; pass 2: links given in both directions override the reverse.
  for (const auto& l : links) {
    int a = region_index(l.a), b = region_index(l.b);
    if (a < 0 || b < 0 || a == b) continue;
    directed[static_cast<size_t>(a) * n + b] = l.spec;
    if (!directed[static_cast<size_t>(b) * n + a]) directed[static_cast<size_t>(b) * n + a] = l.spec;
  }
  for (const auto& l : links) {
    int a = region_index(l.a), b = region_index(l.b);
    if (a < 0 || b < 0 || a == b) continue;
    directed[static_cast<size_t>(a) * n + b] = l.spec;
  }
}

std::string Topology::hash() const {
  // Hash the planning-relevant content (not name/note/hosts), in a canonical order.
  json j = json::object();
  j["intra"] = {intra_region.gbps, intra_region.latency_ms};
  json rs = json::array();
  for (const auto& r : regions)
    rs.push_back({r.name, r.gpus, r.gpu_tflops, r.gpu_mem_gb, r.gpu_power_w, r.pue, r.price_usd_per_kwh});
  j["regions"] = rs;
  json ls = json::array();
  for (int a = 0; a < num_regions(); ++a)
    for (int b = 0; b < num_regions(); ++b)
      if (a != b) {
        auto l = link(a, b);
        ls.push_back(l ? json{l->gbps, l->latency_ms} : json(nullptr));
      }
  j["links"] = ls;
  // Egress prices joined the hash later: only a topology that sets one hashes them, so the hashes
  // (and the plans made) of topologies without prices stay what they were.
  if (priced()) {
    json prices = {intra_region.egress_usd_per_gb};
    for (int a = 0; a < num_regions(); ++a)
      for (int b = 0; b < num_regions(); ++b)
        if (a != b) {
          auto l = link(a, b);
          prices.push_back(l ? json(l->egress_usd_per_gb) : json(nullptr));
        }
    j["egress_usd_per_gb"] = prices;
  }
  return fnv1a_hex(j.dump());
}

bool Topology::priced() const {
  if (intra_region.egress_usd_per_gb > 0) return true;
  for (const auto& l : links)
    if (l.spec.egress_usd_per_gb > 0) return true;
  return false;
}

namespace {

// The fields of a link or of intra_region; `v` is known to be an object. A missing price is free:
// older topologies carry none.
void read_link_spec(JsonReader& r, const json& v, const std::string& path, LinkSpec& out) {
  if (auto g = r.number(v, path, "gbps", /*positive=*/true)) out.gbps = *g;
  if (auto l = r.number(v, path, "latency_ms", /*positive=*/false)) out.latency_ms = *l;
  if (auto e = r.number(v, path, "egress_usd_per_gb", /*positive=*/false, /*required=*/false))
    out.egress_usd_per_gb = *e;
}

json link_spec_json(const LinkSpec& spec) {
  json j = {{"gbps", spec.gbps}, {"latency_ms", spec.latency_ms}};
  // A free direction is left out, as in a file written before prices: it reads back as 0.
  if (spec.egress_usd_per_gb > 0) j["egress_usd_per_gb"] = spec.egress_usd_per_gb;
  return j;
}

}  // namespace

Topology parse_topology(const json& doc, const std::string& file) {
  JsonReader r(file);
  Topology t;
  t.source = file;
  if (!r.expect_object(doc, "", {"name", "note", "intra_region", "regions", "links"})) r.throw_if_errors();
  if (auto name = r.string(doc, "", "name")) t.name = *name;
  if (const json* intra = r.field(doc, "", "intra_region");
      intra && r.expect_object(*intra, "intra_region", {"gbps", "latency_ms", "egress_usd_per_gb"}))
    read_link_spec(r, *intra, "intra_region", t.intra_region);

  std::set<std::string> names;
  if (const json* regions = r.field(doc, "", "regions"); regions && r.expect_array(*regions, "regions")) {
    if (regions->empty()) r.error("regions", "expected at least one region");
    for (size_t i = 0; i < regions->size(); ++i) {
      const json& v = (*regions)[i];
      const std::string p = index_path("regions", i);
      if (!r.expect_object(v, p, {"name", "gpus", "gpu_type", "gpu_tflops", "gpu_mem_gb", "gpu_power_w", "pue",
                                  "price_usd_per_kwh", "hosts", "note"}))
        continue;
      Region reg;
      if (auto s = r.string(v, p, "name")) {
        reg.name = *s;
        if (!names.insert(*s).second) r.error(child_path(p, "name"), "duplicate region name \"" + *s + "\"");
      }
      if (auto g = r.integer(v, p, "gpus", 0, 1 << 20)) reg.gpus = static_cast<int>(*g);
      if (auto s = r.string(v, p, "gpu_type")) reg.gpu_type = *s;
      if (auto x = r.number(v, p, "gpu_tflops", true)) reg.gpu_tflops = *x;
      if (auto x = r.number(v, p, "gpu_mem_gb", true)) reg.gpu_mem_gb = *x;
      if (auto x = r.number(v, p, "gpu_power_w", true)) reg.gpu_power_w = *x;
      if (auto x = r.number(v, p, "pue", true)) {
        if (*x < 1.0) r.error(child_path(p, "pue"), "expected a PUE >= 1.0, got " + std::to_string(*x));
        reg.pue = *x;
      }
      if (auto x = r.number(v, p, "price_usd_per_kwh", false)) reg.price_usd_per_kwh = *x;
      if (const json* hosts = r.field(v, p, "hosts", false); hosts && r.expect_array(*hosts, child_path(p, "hosts"))) {
        for (size_t h = 0; h < hosts->size(); ++h) {
          const json& hv = (*hosts)[h];
          if (!hv.is_string() || hv.get<std::string>().empty())
            r.error(index_path(child_path(p, "hosts"), h), "expected a host name, got " + detail::json_type_name(hv));
          else
            reg.hosts.push_back(hv.get<std::string>());
        }
      }
      t.regions.push_back(std::move(reg));
    }
  }

  std::set<std::pair<std::string, std::string>> seen_links;
  if (const json* links = r.field(doc, "", "links"); links && r.expect_array(*links, "links")) {
    for (size_t i = 0; i < links->size(); ++i) {
      const json& v = (*links)[i];
      const std::string p = index_path("links", i);
      if (!r.expect_object(v, p, {"a", "b", "gbps", "latency_ms", "egress_usd_per_gb", "note"})) continue;
      Link l;
      auto a = r.string(v, p, "a");
      auto b = r.string(v, p, "b");
      if (a && !names.count(*a)) r.error(child_path(p, "a"), "unknown region \"" + *a + "\"");
      if (b && !names.count(*b)) r.error(child_path(p, "b"), "unknown region \"" + *b + "\"");
      if (a && b && *a == *b) r.error(p, "a link must join two different regions (both are \"" + *a + "\")");
      if (a && b && !seen_links.insert({*a, *b}).second)
        r.error(p, "duplicate link " + *a + " -> " + *b);
      read_link_spec(r, v, p, l.spec);
      if (a) l.a = *a;
      if (b) l.b = *b;
      t.links.push_back(std::move(l));
    }
  }
  r.throw_if_errors();
  t.finalize();
  return t;
}

Topology load_topology(const std::string& path) { return parse_topology(read_json_file(path), path); }

json to_json(const Topology& t) {
  json j;
  j["name"] = t.name;
  j["intra_region"] = link_spec_json(t.intra_region);
  j["regions"] = json::array();
  for (const auto& r : t.regions) {
    json rj = {{"name", r.name},       {"gpus", r.gpus},           {"gpu_type", r.gpu_type},
               {"gpu_tflops", r.gpu_tflops}, {"gpu_mem_gb", r.gpu_mem_gb}, {"gpu_power_w", r.gpu_power_w},
               {"pue", r.pue},         {"price_usd_per_kwh", r.price_usd_per_kwh}};
    if (!r.hosts.empty()) rj["hosts"] = r.hosts;
    j["regions"].push_back(rj);
  }
  j["links"] = json::array();
  for (const auto& l : t.links) {
    json lj = link_spec_json(l.spec);
    lj["a"] = l.a;
    lj["b"] = l.b;
    j["links"].push_back(lj);
  }
  return j;
}

// ---- Job -----------------------------------------------------------------------------------

namespace {

// "gpus": N or [min, max], after the stages and micro_batches: some stage count of the job's
// range times some replica count dividing micro_batches must lie in the bounds.
void read_gpus(JsonReader& r, const json& doc, const std::string& path, JobSpec& job) {
  const json* g = r.field(doc, path, "gpus", false);
  if (!g) return;
  const std::string gp = child_path(path, "gpus");
  constexpr long long kMost = 1LL << 20;
  long long lo = 0, hi = 0;
  if (g->is_number_integer()) {
    lo = hi = g->get<long long>();
  } else if (g->is_array() && g->size() == 2 && (*g)[0].is_number_integer() && (*g)[1].is_number_integer()) {
    lo = (*g)[0].get<long long>();
    hi = (*g)[1].get<long long>();
  } else {
    r.error(gp, "expected a GPU count or a range [min, max], got " + detail::json_type_name(*g));
    return;
  }
  if (lo < 1 || hi < lo || hi > kMost) {
    r.error(gp, "expected [min, max] with 1 <= min <= max <= " + std::to_string(kMost) + ", got " + g->dump());
    return;
  }
  if (doc.contains("replicas")) {
    r.error(gp, "cannot be given with \"replicas\" (which fixes the replicas, each running micro_batches); "
                "give one of the two");
    return;
  }
  job.min_gpus = static_cast<int>(lo);
  job.max_gpus = static_cast<int>(hi);
  for (int R = 1; R <= job.micro_batches && R <= job.max_gpus; ++R) {
    if (job.micro_batches % R != 0) continue;
    const int s_lo = std::max(job.min_stages, (job.min_gpus + R - 1) / R);
    const int s_hi = std::min(job.max_stages, job.max_gpus / R);
    if (s_lo <= s_hi) return;
  }
  r.error(gp, "no stage count in [" + std::to_string(job.min_stages) + ", " + std::to_string(job.max_stages) +
                  "] times a replica count dividing micro_batches (" + std::to_string(job.micro_batches) +
                  ") lies in " + g->dump());
}

void read_job(JsonReader& r, const json& doc, const std::string& path, JobSpec& job) {
  if (!r.expect_object(doc, path, {"name", "tenant", "note", "model", "micro_batch", "micro_batches", "iterations",
                                   "stages", "replicas", "gpus", "arrival_s"}))
    return;
  if (auto s = r.string(doc, path, "name")) job.name = *s;
  if (auto s = r.string(doc, path, "tenant", false)) job.tenant = *s;
  const std::string mp = child_path(path, "model");
  if (const json* m = r.field(doc, path, "model");
      m && r.expect_object(*m, mp, {"name", "layers", "d_model", "heads", "seq_len", "vocab", "dtype"})) {
    ModelSpec& model = job.model;
    if (auto x = r.integer(*m, mp, "layers", 1, 100000)) model.layers = static_cast<int>(*x);
    if (auto x = r.integer(*m, mp, "d_model", 1, 1 << 20)) model.d_model = static_cast<int>(*x);
    if (auto x = r.integer(*m, mp, "heads", 1, 1 << 16)) model.heads = static_cast<int>(*x);
    if (auto x = r.integer(*m, mp, "seq_len", 1, 1 << 24)) model.seq_len = static_cast<int>(*x);
    if (auto x = r.integer(*m, mp, "vocab", 1, 1 << 24)) model.vocab = static_cast<int>(*x);
    if (model.d_model > 0 && model.heads > 0 && model.d_model % model.heads != 0)
      r.error(child_path(mp, "heads"), "d_model (" + std::to_string(model.d_model) +
                                           ") must be divisible by heads (" + std::to_string(model.heads) + ")");
    if (auto s = r.string(*m, mp, "dtype", false)) {
      if (auto d = parse_dtype(*s))
        model.dtype = *d;
      else
        r.error(child_path(mp, "dtype"), "expected one of fp32, bf16, fp16, got \"" + *s + "\"");
    }
  }
  if (auto x = r.integer(doc, path, "micro_batch", 1, 1 << 20)) job.micro_batch = static_cast<int>(*x);
  if (auto x = r.integer(doc, path, "micro_batches", 1, 1 << 20)) job.micro_batches = static_cast<int>(*x);
  if (auto x = r.integer(doc, path, "iterations", 1, 1LL << 40)) job.iterations = static_cast<int>(std::min<long long>(*x, 1 << 30));
  if (auto x = r.number(doc, path, "arrival_s", false, false)) job.arrival_s = *x;
  if (auto x = r.integer(doc, path, "replicas", 1, kMaxReplicas, false)) job.replicas = static_cast<int>(*x);

  const std::string sp = child_path(path, "stages");
  if (const json* st = r.field(doc, path, "stages")) {
    if (st->is_number_integer()) {
      long long n = st->get<long long>();
      if (n < 1 || n > 4096)
        r.error(sp, "expected a stage count in [1, 4096], got " + st->dump());
      else
        job.min_stages = job.max_stages = static_cast<int>(n);
    } else if (st->is_array() && st->size() == 2 && (*st)[0].is_number_integer() && (*st)[1].is_number_integer()) {
      long long lo = (*st)[0].get<long long>(), hi = (*st)[1].get<long long>();
      if (lo < 1 || hi < lo || hi > 4096)
        r.error(sp, "expected a range [min, max] with 1 <= min <= max <= 4096, got " + st->dump());
      else {
        job.min_stages = static_cast<int>(lo);
        job.max_stages = static_cast<int>(hi);
      }
    } else {
      r.error(sp, "expected a stage count or a range [min, max], got " + detail::json_type_name(*st));
    }
  }
  if (job.model.layers > 0 && job.min_stages > job.model.layers)
    r.error(sp, "more stages (" + std::to_string(job.min_stages) + ") than layers (" +
                    std::to_string(job.model.layers) + ")");
  else if (job.model.layers > 0 && job.max_stages > job.model.layers)
    job.max_stages = job.model.layers;  // a range may reach past the layer count; clip it
  read_gpus(r, doc, path, job);
}

}  // namespace

std::string JobSpec::hash() const { return fnv1a_hex(to_json(*this).dump()); }

JobSpec parse_job(const json& doc, const std::string& file, const std::string& path) {
  JsonReader r(file);
  JobSpec job;
  read_job(r, doc, path, job);
  r.throw_if_errors();
  return job;
}

JobSpec load_job(const std::string& path) { return parse_job(read_json_file(path), path); }

json to_json(const JobSpec& job) {
  json j;
  j["name"] = job.name;
  j["tenant"] = job.tenant;
  j["model"] = {{"layers", job.model.layers},   {"d_model", job.model.d_model}, {"heads", job.model.heads},
                {"seq_len", job.model.seq_len}, {"vocab", job.model.vocab},     {"dtype", dtype_name(job.model.dtype)}};
  j["micro_batch"] = job.micro_batch;
  j["micro_batches"] = job.micro_batches;
  j["iterations"] = job.iterations;
  if (job.min_stages == job.max_stages)
    j["stages"] = job.min_stages;
  else
    j["stages"] = {job.min_stages, job.max_stages};
  if (job.replicas != 1) j["replicas"] = job.replicas;  // absent at 1: JobSpec::hash of older jobs unchanged
  if (job.chooses_replicas()) {
    if (job.min_gpus == job.max_gpus)
      j["gpus"] = job.min_gpus;
    else
      j["gpus"] = {job.min_gpus, job.max_gpus};
  }
  j["arrival_s"] = job.arrival_s;
  return j;
}

// ---- Workload ------------------------------------------------------------------------------

Workload parse_workload(const json& doc, const std::string& file) {
  JsonReader r(file);
  Workload w;
  if (!r.expect_object(doc, "", {"name", "note", "jobs"})) r.throw_if_errors();
  if (auto s = r.string(doc, "", "name")) w.name = *s;
  std::set<std::string> names;
  if (const json* jobs = r.field(doc, "", "jobs"); jobs && r.expect_array(*jobs, "jobs")) {
    for (size_t i = 0; i < jobs->size(); ++i) {
      JobSpec job;
      const std::string p = index_path("jobs", i);
      size_t before = r.error_count();
      read_job(r, (*jobs)[i], p, job);
      if (r.error_count() == before && !names.insert(job.name).second)
        r.error(child_path(p, "name"), "duplicate job name \"" + job.name + "\"");
      w.jobs.push_back(std::move(job));
    }
  }
  r.throw_if_errors();
  std::stable_sort(w.jobs.begin(), w.jobs.end(),
                   [](const JobSpec& a, const JobSpec& b) { return a.arrival_s < b.arrival_s; });
  return w;
}

Workload load_workload(const std::string& path) { return parse_workload(read_json_file(path), path); }

json to_json(const Workload& w) {
  json j;
  j["name"] = w.name;
  j["jobs"] = json::array();
  for (const auto& job : w.jobs) j["jobs"].push_back(to_json(job));
  return j;
}

}  // namespace geopipe
