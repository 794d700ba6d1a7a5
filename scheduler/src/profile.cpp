#include <geopipe/core/error.h>
#include <geopipe/core/plan.h>
#include <geopipe/scheduler/profile.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <set>

#include <unistd.h>

namespace geopipe::scheduler {

using nlohmann::json;

namespace {

// Collects every problem of a profile document (file, JSON path, message), like core's parsers.
struct Reader {
  std::string file;
  std::vector<Diagnostic> diags;
  void error(const std::string& path, const std::string& msg) { diags.push_back({file, path, msg}); }

  bool object(const json& v, const std::string& path, const std::set<std::string>& allowed) {
    if (!v.is_object()) {
      error(path, "expected an object");
      return false;
    }
    for (auto it = v.begin(); it != v.end(); ++it)
      if (!allowed.count(it.key())) error(path.empty() ? it.key() : path + "." + it.key(), "unknown field");
    return true;
  }
  const json* field(const json& obj, const std::string& path, const char* key) {
    auto it = obj.find(key);
    if (it == obj.end()) {
      error(path.empty() ? key : path + "." + key, "missing required field");
      return nullptr;
    }
    return &*it;
  }
  static std::string join(const std::string& path, const char* key) { return path.empty() ? key : path + "." + key; }
  // A required non-empty string field of the top-level object; "" (and a diagnostic) otherwise.
  std::string text(const json& obj, const char* key, const std::string& expected) {
    const json* v = field(obj, "", key);
    if (v && v->is_string() && !v->get<std::string>().empty()) return v->get<std::string>();
    if (v) error(key, expected);
    return "";
  }
  double seconds(const json& obj, const std::string& path, const char* key) {
    const json* v = field(obj, path, key);
    if (!v) return 0;
    if (!v->is_number() || !std::isfinite(v->get<double>()) || v->get<double>() < 0) {
      error(join(path, key), "expected a number of seconds >= 0");
      return 0;
    }
    return v->get<double>();
  }
  PhaseTimes phase(const json& obj, const char* key) {
    PhaseTimes p;
    const json* v = field(obj, "", key);
    if (!v || !object(*v, key, {"forward_s", "backward_s", "input_grad_s", "weight_grad_s"})) return p;
    p.forward_s = seconds(*v, key, "forward_s");
    p.backward_s = seconds(*v, key, "backward_s");
    if (v->contains("input_grad_s") != v->contains("weight_grad_s"))
      error(join(key, v->contains("input_grad_s") ? "weight_grad_s" : "input_grad_s"),
            "input_grad_s and weight_grad_s come together (the two halves of the split backward)");
    if (v->contains("input_grad_s")) p.input_grad_s = seconds(*v, key, "input_grad_s");
    if (v->contains("weight_grad_s")) p.weight_grad_s = seconds(*v, key, "weight_grad_s");
    return p;
  }
};

}  // namespace

Profile parse_profile(const json& doc, const std::string& file) {
  Reader r{file, {}};
  Profile p;
  p.source = file;
  if (!r.object(doc, "", {"version", "device", "model", "micro_batch", "layer", "embedding", "head", "note"}))
    throw InputError(r.diags);
  if (const json* v = r.field(doc, "", "version"); v && !(v->is_number_integer() && v->get<int>() == 1))
    r.error("version", "unsupported profile version (this geopipe reads version 1)");
  p.device = r.text(doc, "device", "expected the device name (a region's gpu_type), a non-empty string");
  if (const json* v = r.field(doc, "", "micro_batch")) {
    if (!v->is_number_integer() || v->get<long long>() < 1)
      r.error("micro_batch", "expected an integer >= 1");
    else
      p.micro_batch = v->get<int>();
  }
  if (const json* m = r.field(doc, "", "model")) {
    // The model block has the job file's format: reuse the job parser through a minimal job.
    json job = {{"name", "profile"}, {"model", *m}, {"stages", 1}, {"micro_batch", 1}, {"micro_batches", 1}, {"iterations", 1}};
    try {
      p.model = parse_job(job, file).model;
    } catch (const InputError& e) {
      for (const auto& d : e.diagnostics()) r.error(d.path, d.message);
    }
  }
  p.layer = r.phase(doc, "layer");
  p.embedding = r.phase(doc, "embedding");
  p.head = r.phase(doc, "head");
  if (doc.contains("note") && doc["note"].is_string()) p.note = doc["note"].get<std::string>();
  if (!r.diags.empty()) throw InputError(r.diags);
  return p;
}

Profile load_profile(const std::string& path) { return parse_profile(read_json_file(path), path); }

json to_json(const Profile& p) {
  auto phase = [](const PhaseTimes& t) {
    json j{{"forward_s", t.forward_s}, {"backward_s", t.backward_s}};
    if (t.input_grad_s > 0 || t.weight_grad_s > 0) {
      j["input_grad_s"] = t.input_grad_s;
      j["weight_grad_s"] = t.weight_grad_s;
    }
    return j;
  };
  json j = {{"version", 1},
            {"device", p.device},
            {"model",
             {{"layers", p.model.layers},
              {"d_model", p.model.d_model},
              {"heads", p.model.heads},
              {"seq_len", p.model.seq_len},
              {"vocab", p.model.vocab},
              {"dtype", dtype_name(p.model.dtype)}}},
            {"micro_batch", p.micro_batch},
            {"layer", phase(p.layer)},
            {"embedding", phase(p.embedding)},
            {"head", phase(p.head)}};
  if (!p.note.empty()) j["note"] = p.note;
  return j;
}

void save_profile(const Profile& profile, const std::string& path) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw Error("cannot write " + tmp);
    out << to_json(profile).dump(2) << "\n";
    if (!out) {
      std::remove(tmp.c_str());
      throw Error("error while writing " + tmp);
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw Error("cannot rename " + tmp + " to " + path);
  }
}

void check_profile_matches(const Profile& p, const JobSpec& job) {
  std::vector<Diagnostic> d;
  auto cmp = [&](const char* path, long long have, long long want) {
    if (have != want)
      d.push_back({p.source, path, "profile measured " + std::to_string(have) + " but job \"" + job.name + "\" has " +
                                       std::to_string(want) + " (profile another shape or drop --profile)"});
  };
  cmp("model.d_model", p.model.d_model, job.model.d_model);
  cmp("model.heads", p.model.heads, job.model.heads);
  cmp("model.seq_len", p.model.seq_len, job.model.seq_len);
  cmp("model.vocab", p.model.vocab, job.model.vocab);
  cmp("micro_batch", p.micro_batch, job.micro_batch);
  if (p.model.dtype != job.model.dtype)
    d.push_back({p.source, "model.dtype", std::string("profile measured ") + dtype_name(p.model.dtype) + " but job \"" +
                                              job.name + "\" uses " + dtype_name(job.model.dtype)});
  if (!d.empty()) throw InputError(d);
}

bool profile_applies(const Profile& profile, const Region& region) { return profile.device == region.gpu_type; }

namespace {

// One measured row of the codec bench that the codec profile keeps.
struct CodecRow {
  double numel = 0, gbps = 0;
};

// The row to keep for one codec and op: the largest tensor, then the fastest path.
void keep_row(CodecRow& kept, double numel, double gbps) {
  if (numel > kept.numel || (numel == kept.numel && gbps > kept.gbps)) kept = {numel, gbps};
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char ch) { return std::tolower(ch); });
  return s;
}

}  // namespace

CodecProfile parse_codec_profile(const json& doc, const std::string& file) {
  Reader r{file, {}};
  CodecProfile p;
  p.source = file;
  if (!doc.is_object()) throw InputError({{file, "", "expected the JSON object geopipe-codec-bench --json writes"}});
  p.device = r.text(doc, "device", "expected the device the codecs were measured on, a non-empty string");
  std::map<std::string, CodecRow> encode, decode;
  if (const json* rows = r.field(doc, "", "rows"); rows && !rows->is_array()) {
    r.error("rows", "expected an array of measured rows");
  } else if (rows) {
    for (size_t i = 0; i < rows->size(); ++i) {
      const json& row = (*rows)[i];
      const std::string at = "rows[" + std::to_string(i) + "]";
      auto str = [&](const char* k) { return row.contains(k) && row[k].is_string() ? row[k].get<std::string>() : ""; };
      auto num = [&](const char* k) { return row.contains(k) && row[k].is_number() ? row[k].get<double>() : -1.0; };
      const std::string codec = str("codec"), op = str("op");
      const double numel = num("numel"), gbps = num("gbps");
      if (codec.empty() || (op != "quantize" && op != "dequantize") || !(numel > 0) || !(gbps > 0) ||
          !std::isfinite(gbps)) {
        r.error(at, "expected a row with codec, op (quantize or dequantize), numel > 0 and gbps > 0");
        continue;
      }
      const auto& names = known_codec_names();
      if (codec == "none" || std::find(names.begin(), names.end(), codec) == names.end()) {
        r.error(at + ".codec", "unknown codec \"" + codec + "\"");
        continue;
      }
      keep_row((op == "quantize" ? encode : decode)[codec], numel, gbps);
    }
  }
  for (const auto& [codec, row] : encode) {
    if (!decode.count(codec)) r.error("rows", "codec " + codec + " has quantize rows but no dequantize row");
    else p.codecs[codec] = {row.gbps * 1e9, decode[codec].gbps * 1e9};
  }
  for (const auto& [codec, row] : decode)
    if (!encode.count(codec)) r.error("rows", "codec " + codec + " has dequantize rows but no quantize row");
  if (p.codecs.empty()) r.error("rows", "no codec was measured");
  if (!r.diags.empty()) throw InputError(r.diags);
  return p;
}

CodecProfile load_codec_profile(const std::string& path) { return parse_codec_profile(read_json_file(path), path); }

bool codec_profile_applies(const CodecProfile& profile, const Region& region) {
  // A whole word of the device line: "L4" must not match "NVIDIA L40S", nor "A10" "A100-SXM4".
  const std::string device = lower(profile.device), type = lower(region.gpu_type);
  auto word_char = [](char ch) { return std::isalnum(static_cast<unsigned char>(ch)) != 0; };
  for (size_t at = device.find(type); !type.empty() && at != std::string::npos; at = device.find(type, at + 1)) {
    const size_t end = at + type.size();
    if ((at == 0 || !word_char(device[at - 1])) && (end == device.size() || !word_char(device[end]))) return true;
  }
  return false;
}

}  // namespace geopipe::scheduler
