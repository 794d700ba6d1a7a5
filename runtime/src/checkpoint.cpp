#include <geopipe/comm/crc32c.h>
#include <geopipe/core/error.h>
#include <geopipe/runtime/checkpoint.h>

#include <caffe2/serialize/inline_container.h>
#include <torch/csrc/jit/serialization/pickle.h>
#include <torch/csrc/jit/serialization/pickler.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include <fcntl.h>
#include <unistd.h>

namespace geopipe::runtime {

namespace fs = std::filesystem;

namespace {

void fsync_path(const std::string& path, int flags) {
  int fd = ::open(path.c_str(), flags);
  if (fd < 0) throw Error("cannot open " + path + " to fsync it");
  int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) throw Error("fsync failed for " + path);
}

c10::impl::GenericDict tensor_dict(const std::vector<NamedTensor>& tensors) {
  c10::impl::GenericDict d(c10::StringType::get(), c10::TensorType::get());
  for (const auto& t : tensors) d.insert(t.name, t.tensor.detach().to(at::kCPU).contiguous());
  return d;
}

std::vector<NamedTensor> tensors_of(const c10::IValue& v, const std::string& key, const std::string& source) {
  if (!v.isGenericDict()) throw Error(source + ": \"" + key + "\" is not a dictionary");
  std::vector<NamedTensor> out;
  for (const auto& e : v.toGenericDict()) out.push_back({e.key().toStringRef(), e.value().toTensor()});
  return out;
}

// torch.save's zip layout (archive/data.pkl + archive/data/N), as torch::jit::pickle_save writes it,
// but with a plain pickle: pickle_save wraps every dict in a torch.jit._pickle.restore_type_tag
// call, which torch.load(weights_only=True), the default from PyTorch 2.6, refuses. The pickle
// then only names tensor-rebuild globals, which every torch.load accepts.
std::string torch_save_bytes(const c10::IValue& value) {
  std::string pkl;
  torch::jit::Pickler pickler([&](const char* b, size_t n) { pkl.append(b, n); }, nullptr, nullptr, nullptr,
                              nullptr, /*tag_aggregates=*/false);
  pickler.protocol();
  pickler.pushIValue(value);
  pickler.stop();
  std::string out;
  caffe2::serialize::PyTorchStreamWriter writer([&](const void* b, size_t n) {
    out.append(static_cast<const char*>(b), n);
    return n;
  });
  const std::vector<at::Tensor>& tensors = pickler.tensorData();
  for (size_t i = 0; i < tensors.size(); ++i) {
    torch::jit::WriteableTensorData data = torch::jit::getWriteableTensorData(tensors[i]);
    writer.writeRecord("data/" + std::to_string(i), data.data(), data.sizeInBytes());
  }
  writer.writeRecord("data.pkl", pkl.data(), pkl.size());
  writer.writeEndOfFile();
  return out;
}

}  // namespace

void write_file_atomic(const std::string& path, const std::string& bytes, const std::function<void()>& midway) {
  const fs::path p(path);
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) throw Error("cannot write " + tmp);
    const size_t half = midway ? bytes.size() / 2 : bytes.size();
    f.write(bytes.data(), static_cast<std::streamsize>(half));
    f.flush();
    if (midway) midway();
    f.write(bytes.data() + half, static_cast<std::streamsize>(bytes.size() - half));
    f.flush();
    if (!f) throw Error("cannot write " + tmp);
  }
  fsync_path(tmp, O_RDONLY);
  if (std::rename(tmp.c_str(), path.c_str()) != 0) throw Error("cannot rename " + tmp + " to " + path);
  fsync_path(p.parent_path().empty() ? "." : p.parent_path().string(), O_RDONLY | O_DIRECTORY);
}

std::string stage_checkpoint_path(const std::string& dir, int64_t step, int stage, int shard, int shards) {
  char name[96];
  if (shards > 1)
    std::snprintf(name, sizeof(name), "step-%06lld/stage-%d.shard-%d.pt", static_cast<long long>(step), stage, shard);
  else
    std::snprintf(name, sizeof(name), "step-%06lld/stage-%d.pt", static_cast<long long>(step), stage);
  return (fs::path(dir) / name).string();
}

FileDigest digest_of(const void* data, size_t bytes) { return {bytes, comm::crc32c(data, bytes)}; }

FileDigest save_stage_checkpoint(const std::string& dir, const StageCheckpoint& c, const std::function<void()>& midway) {
  const std::string path = stage_checkpoint_path(dir, c.step, c.stage, c.shard, c.shards);
  fs::create_directories(fs::path(path).parent_path());
  c10::impl::GenericDict meta(c10::StringType::get(), c10::IntType::get());
  meta.insert("step", c.step);
  meta.insert("seed", static_cast<int64_t>(c.seed));
  meta.insert("stage", static_cast<int64_t>(c.stage));
  meta.insert("data_position", c.data_position);
  if (c.shards > 1) {  // absent from unsharded files, as before shards existed
    meta.insert("shard", static_cast<int64_t>(c.shard));
    meta.insert("shards", static_cast<int64_t>(c.shards));
  }
  c10::impl::GenericDict root(c10::StringType::get(), c10::AnyType::get());
  root.insert("model", tensor_dict(c.model));
  root.insert("optimizer", tensor_dict(c.optimizer));
  root.insert("meta", meta);
  const std::string bytes = torch_save_bytes(c10::IValue(root));
  write_file_atomic(path, bytes, midway);
  return digest_of(bytes.data(), bytes.size());
}

void save_model_file(const std::string& path, const std::vector<NamedTensor>& model, const GptConfig& c,
                     int64_t step) {
  c10::impl::GenericDict args(c10::StringType::get(), c10::IntType::get());
  args.insert("n_layer", static_cast<int64_t>(c.n_layer));
  args.insert("n_head", static_cast<int64_t>(c.n_head));
  args.insert("n_embd", static_cast<int64_t>(c.n_embd));
  args.insert("block_size", static_cast<int64_t>(c.block_size));
  args.insert("vocab_size", static_cast<int64_t>(c.vocab_size));
  args.insert("bias", static_cast<int64_t>(1));
  args.insert("dropout", static_cast<int64_t>(0));
  c10::impl::GenericDict root(c10::StringType::get(), c10::AnyType::get());
  root.insert("model", tensor_dict(model));
  root.insert("model_args", args);
  root.insert("iter_num", step);
  write_file_atomic(path, torch_save_bytes(c10::IValue(root)));
}

namespace {

std::string hex32(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "%08x", v);
  return buf;
}

StageCheckpoint parse_stage_checkpoint(const std::vector<char>& bytes, const std::string& path) {
  c10::IValue v;
  try {
    v = torch::jit::pickle_load(bytes);
  } catch (const std::exception& e) {
    throw Error("checkpoint " + path + " is not readable: " + e.what());
  }
  if (!v.isGenericDict()) throw Error("checkpoint " + path + ": expected a dictionary at the top");
  auto root = v.toGenericDict();
  for (const char* key : {"model", "optimizer", "meta"})
    if (!root.contains(key)) throw Error("checkpoint " + path + ": no \"" + key + "\" entry");
  StageCheckpoint c;
  c.model = tensors_of(root.at("model"), "model", path);
  c.optimizer = tensors_of(root.at("optimizer"), "optimizer", path);
  auto meta = root.at("meta").toGenericDict();
  c.step = meta.at("step").toInt();
  c.seed = static_cast<uint64_t>(meta.at("seed").toInt());
  c.stage = static_cast<int>(meta.at("stage").toInt());
  c.data_position = meta.at("data_position").toInt();
  if (meta.contains("shards")) {
    c.shard = static_cast<int>(meta.at("shard").toInt());
    c.shards = static_cast<int>(meta.at("shards").toInt());
  }
  return c;
}

}  // namespace

const char* file_check_name(FileCheck check) {
  switch (check) {
    case FileCheck::kOk: return "sound";
    case FileCheck::kMissing: return "missing";
    case FileCheck::kWrongSize: return "of the wrong size (truncated or overwritten)";
    case FileCheck::kWrongChecksum: return "corrupted (CRC32C mismatch)";
    case FileCheck::kUnreadable: return "unreadable";
  }
  return "?";
}

StageCheckpoint load_stage_checkpoint(const std::string& dir, const Manifest& m, int stage, int shard,
                                      FileCheck* check) {
  FileCheck scratch;
  FileCheck& why = check ? *check : scratch;
  why = FileCheck::kOk;
  const std::string mpath = manifest_path(dir);
  const std::string which = "stage " + std::to_string(stage) +
                            (m.optimizer_shards > 1 ? " shard " + std::to_string(shard) : std::string());
  if (stage < 0 || stage >= m.num_stages || shard < 0 || shard >= m.optimizer_shards)
    throw InputError(mpath, "files", "names no file for " + which);
  const ManifestFile& entry = m.file(stage, shard);
  const std::string path = (fs::path(dir) / entry.path).string();
  const std::string named = " (" + which + " of step " + std::to_string(m.step) + ", named by " + mpath + ")";
  std::ifstream f(path, std::ios::binary);
  if (!f) {
    why = FileCheck::kMissing;
    throw InputError(path, "", "checkpoint file is missing or cannot be opened" + named);
  }
  std::vector<char> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  if (f.bad()) {
    why = FileCheck::kUnreadable;
    throw InputError(path, "", "checkpoint file cannot be read" + named);
  }
  // Verified before parsing: a damaged file never reaches the unpickler.
  if (bytes.size() != entry.digest.bytes) {
    why = FileCheck::kWrongSize;
    throw InputError(path, "bytes", "checkpoint file is " + std::to_string(bytes.size()) + " bytes, the manifest recorded " +
                                        std::to_string(entry.digest.bytes) + " (truncated or overwritten)" + named +
                                        "; refusing to load it");
  }
  const uint32_t crc = comm::crc32c(bytes.data(), bytes.size());
  if (crc != entry.digest.crc32c) {
    why = FileCheck::kWrongChecksum;
    throw InputError(path, "crc32c", "checkpoint file is corrupted: CRC32C " + hex32(crc) + " computed, the manifest recorded " +
                                         hex32(entry.digest.crc32c) + named + "; refusing to load it");
  }
  StageCheckpoint c;
  try {
    c = parse_stage_checkpoint(bytes, path);
  } catch (const std::exception& e) {  // geopipe::Error, or c10::Error for a missing meta key
    why = FileCheck::kUnreadable;
    throw InputError(path, "", std::string(e.what()) + named);
  }
  if (c.step != m.step || c.stage != stage || c.shard != (m.optimizer_shards > 1 ? shard : 0) ||
      c.shards != m.optimizer_shards) {
    why = FileCheck::kUnreadable;
    throw InputError(path, "meta", "holds stage " + std::to_string(c.stage) + " shard " + std::to_string(c.shard) +
                                       " of " + std::to_string(c.shards) + " of step " + std::to_string(c.step) +
                                       ", expected" + named);
  }
  return c;
}

namespace {

// The recorded layout must tile the model's layers: stage s holds [layers[s].first, .second),
// each starting where the previous ended, from 0 to the model's n_layer.
void check_layout(const Manifest& m, const std::string& path) {
  if (m.model.n_layer < 0 || (m.model.n_layer > 0 && (m.model.n_head < 1 || m.model.n_embd < 1 ||
                                                      m.model.block_size < 1 || m.model.vocab_size < 1)))
    throw InputError(path, "model", "every field must be a positive integer");
  if (m.step_micro_batches < 0) throw InputError(path, "step_micro_batches", "must be a positive integer");
  if (m.layers.empty()) return;
  if (m.layers.size() != static_cast<size_t>(m.num_stages))
    throw InputError(path, "layers", "expected num_stages (" + std::to_string(m.num_stages) + ") ranges, found " +
                                         std::to_string(m.layers.size()));
  int next = 0;
  for (size_t s = 0; s < m.layers.size(); ++s) {
    const auto [b, e] = m.layers[s];
    if (b != next || e < b)
      throw InputError(path, "layers[" + std::to_string(s) + "]",
                       "[" + std::to_string(b) + ", " + std::to_string(e) + ") does not continue at layer " +
                           std::to_string(next));
    next = e;
  }
  if (m.model.n_layer > 0 && next != m.model.n_layer)
    throw InputError(path, "layers", "cover " + std::to_string(next) + " layers, the model has " +
                                         std::to_string(m.model.n_layer));
}

// The manifest's "tensors": each entry's file must be one of `files`, its shape whole numbers.
std::map<std::string, ManifestTensor> read_tensor_index(const nlohmann::json& j, const std::vector<std::string>& files,
                                                        const std::string& path) {
  if (!j.is_object()) throw InputError(path, "tensors", "expected an object of tensor names, got " + j.dump().substr(0, 80));
  std::map<std::string, ManifestTensor> index;
  for (const auto& [name, entry] : j.items()) {
    const std::string field = "tensors." + name;
    const auto file = entry.is_object() ? entry.find("file") : entry.end();
    if (!entry.is_object() || file == entry.end() || !file->is_string())
      throw InputError(path, field + ".file", "expected the path of one of the manifest's files");
    const auto at = std::find(files.begin(), files.end(), file->get<std::string>());
    if (at == files.end()) throw InputError(path, field + ".file", "\"" + file->get<std::string>() + "\" is not in files");
    ManifestTensor t{static_cast<int>(at - files.begin()), {}};
    const auto shape = entry.find("shape");
    if (shape == entry.end() || !shape->is_array()) throw InputError(path, field + ".shape", "expected an array of sizes");
    for (const auto& d : *shape) {
      if (!d.is_number_integer() || d.get<int64_t>() < 0)
        throw InputError(path, field + ".shape", "expected whole numbers, got " + shape->dump());
      t.shape.push_back(d.get<int64_t>());
    }
    index.emplace(name, std::move(t));
  }
  return index;
}

}  // namespace

std::map<std::string, ManifestTensor> tensor_index(const GptConfig& model, const std::vector<std::pair<int, int>>& layers,
                                                   int shards) {
  std::map<std::string, ManifestTensor> index;
  const int S = static_cast<int>(layers.size());
  for (int s = 0; s < S; ++s) {
    const auto [begin, end] = layers[static_cast<size_t>(s)];
    for (auto& [name, shape] : stage_parameter_shapes(model, begin, end, s == 0, s == S - 1))
      index[name] = {s * shards, std::move(shape)};
  }
  return index;
}

std::string manifest_path(const std::string& dir) { return (fs::path(dir) / "manifest.json").string(); }

void write_manifest(const std::string& dir, const Manifest& m) {
  nlohmann::json files = nlohmann::json::array(), bytes = nlohmann::json::array(), crcs = nlohmann::json::array();
  for (const auto& f : m.files) {
    files.push_back(f.path);
    bytes.push_back(f.digest.bytes);
    crcs.push_back(hex32(f.digest.crc32c));
  }
  nlohmann::json j = {{"format", 2},         {"step", m.step},
                      {"num_stages", m.num_stages}, {"job", m.job},
                      {"replicas", m.replicas},     {"optimizer_shards", m.optimizer_shards},
                      {"files", files},             {"bytes", bytes},
                      {"crc32c", crcs}};
  if (!m.layers.empty()) {
    nlohmann::json layers = nlohmann::json::array();
    for (const auto& [b, e] : m.layers) layers.push_back({b, e});
    j["layers"] = layers;
  }
  if (m.step_micro_batches > 0) j["step_micro_batches"] = m.step_micro_batches;
  if (!m.tensors.empty()) {
    nlohmann::json tensors = nlohmann::json::object();
    for (const auto& [name, t] : m.tensors)
      tensors[name] = {{"file", m.files.at(static_cast<size_t>(t.file)).path}, {"shape", t.shape}};
    j["tensors"] = tensors;
  }
  if (m.model.n_layer > 0)
    j["model"] = {{"n_layer", m.model.n_layer},       {"n_head", m.model.n_head},
                  {"n_embd", m.model.n_embd},         {"block_size", m.model.block_size},
                  {"vocab_size", m.model.vocab_size}};
  fs::create_directories(dir);
  write_file_atomic(manifest_path(dir), j.dump(1) + "\n");
}

std::optional<Manifest> read_manifest(const std::string& dir) {
  const std::string path = manifest_path(dir);
  std::ifstream f(path);
  if (!f) return std::nullopt;
  nlohmann::json j;
  Manifest m;
  std::vector<std::string> files, crcs;
  std::vector<uint64_t> bytes;
  try {
    j = nlohmann::json::parse(f);
    m.step = j.at("step").get<int64_t>();
    m.num_stages = j.at("num_stages").get<int>();
    m.job = j.at("job").get<std::string>();
    files = j.at("files").get<std::vector<std::string>>();
    m.replicas = j.value("replicas", 1);  // absent before replicas existed
    m.optimizer_shards = j.value("optimizer_shards", 1);
    m.step_micro_batches = j.value("step_micro_batches", 0);
    if (j.contains("layers")) m.layers = j.at("layers").get<std::vector<std::pair<int, int>>>();
    if (j.contains("model")) {  // absent before resharding
      const auto& mj = j.at("model");
      m.model = {mj.at("n_layer").get<int>(), mj.at("n_head").get<int>(), mj.at("n_embd").get<int>(),
                 mj.at("block_size").get<int>(), mj.at("vocab_size").get<int>()};
    }
  } catch (const std::exception& e) {
    throw InputError(path, "", std::string("malformed checkpoint manifest: ") + e.what());
  }
  if (!j.contains("crc32c") || !j.contains("bytes"))
    throw InputError(path, "crc32c",
                     "manifest records no checksums (format 1, written before checkpoints were checksummed): "
                     "its files cannot be verified, so they are not loaded");
  try {
    bytes = j.at("bytes").get<std::vector<uint64_t>>();
    crcs = j.at("crc32c").get<std::vector<std::string>>();
  } catch (const std::exception& e) {
    throw InputError(path, "crc32c", std::string("malformed checkpoint manifest: ") + e.what());
  }
  if (m.step < 0) throw InputError(path, "step", "must not be negative, got " + std::to_string(m.step));
  if (m.replicas < 1 || m.replicas > 4096)
    throw InputError(path, "replicas", "expected 1..4096, got " + std::to_string(m.replicas));
  if (m.optimizer_shards != 1 && m.optimizer_shards != m.replicas)
    throw InputError(path, "optimizer_shards", "expected 1 or the replica count " + std::to_string(m.replicas) +
                                                   ", got " + std::to_string(m.optimizer_shards));
  const size_t expected = static_cast<size_t>(std::max(m.num_stages, 0)) * static_cast<size_t>(m.optimizer_shards);
  if (m.num_stages < 1 || m.num_stages > 1 << 20 || files.size() != expected || bytes.size() != files.size() ||
      crcs.size() != files.size())
    throw InputError(path, "files", "expected num_stages x optimizer_shards (" + std::to_string(expected) +
                                        ") entries in files, bytes and crc32c, found " + std::to_string(files.size()) +
                                        ", " + std::to_string(bytes.size()) + ", " + std::to_string(crcs.size()));
  check_layout(m, path);
  for (size_t i = 0; i < files.size(); ++i) {
    const fs::path rel(files[i]);
    bool escapes = rel.empty() || rel.is_absolute();
    for (const auto& part : rel) escapes = escapes || part == "..";
    if (escapes)
      throw InputError(path, "files[" + std::to_string(i) + "]",
                       "\"" + files[i] + "\" is not a path inside the checkpoint folder");
    char* end = nullptr;
    const unsigned long crc = std::strtoul(crcs[i].c_str(), &end, 16);
    if (crcs[i].size() != 8 || *end != '\0')
      throw InputError(path, "crc32c[" + std::to_string(i) + "]", "expected 8 hex digits, got \"" + crcs[i] + "\"");
    m.files.push_back({files[i], {bytes[i], static_cast<uint32_t>(crc)}});
  }
  if (j.contains("tensors")) m.tensors = read_tensor_index(j.at("tensors"), files, path);
  return m;
}

void copy_into(const std::vector<NamedTensor>& saved, const std::vector<NamedTensor>& params, const std::string& source) {
  std::map<std::string, at::Tensor> by_name;
  for (const auto& s : saved) by_name[s.name] = s.tensor;
  at::NoGradGuard no_grad;
  for (const auto& p : params) {
    auto it = by_name.find(p.name);
    if (it == by_name.end()) throw InputError(source, p.name, "the checkpoint has no such tensor (another model?)");
    if (!it->second.sizes().equals(p.tensor.sizes()))
      throw InputError(source, p.name, "is " + shape_of(it->second) + " in the checkpoint, " + shape_of(p.tensor) +
                                           " in this model (another model shape)");
    p.tensor.copy_(it->second);
  }
}

std::string shape_of(const at::Tensor& t) {
  std::string s = "[";
  for (int64_t d = 0; d < t.dim(); ++d) s += (d ? ", " : "") + std::to_string(t.size(d));
  return s + "]";
}

}  // namespace geopipe::runtime
