#include <geopipe/core/error.h>
#include <geopipe/runtime/checkpoint.h>

#include <caffe2/serialize/inline_container.h>
#include <torch/csrc/jit/serialization/pickle.h>
#include <torch/csrc/jit/serialization/pickler.h>

#include <nlohmann/json.hpp>

#include <cstdio>
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

void write_file_atomic(const std::string& path, const std::string& bytes) {
  const fs::path p(path);
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) throw Error("cannot write " + tmp);
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    f.flush();
    if (!f) throw Error("cannot write " + tmp);
  }
  fsync_path(tmp, O_RDONLY);
  if (std::rename(tmp.c_str(), path.c_str()) != 0) throw Error("cannot rename " + tmp + " to " + path);
  fsync_path(p.parent_path().empty() ? "." : p.parent_path().string(), O_RDONLY | O_DIRECTORY);
}

std::string stage_checkpoint_path(const std::string& dir, int64_t step, int stage) {
  char name[64];
  std::snprintf(name, sizeof(name), "step-%06lld/stage-%d.pt", static_cast<long long>(step), stage);
  return (fs::path(dir) / name).string();
}

void save_stage_checkpoint(const std::string& dir, const StageCheckpoint& c) {
  const std::string path = stage_checkpoint_path(dir, c.step, c.stage);
  fs::create_directories(fs::path(path).parent_path());
  c10::impl::GenericDict meta(c10::StringType::get(), c10::IntType::get());
  meta.insert("step", c.step);
  meta.insert("seed", static_cast<int64_t>(c.seed));
  meta.insert("stage", static_cast<int64_t>(c.stage));
  meta.insert("data_position", c.data_position);
  c10::impl::GenericDict root(c10::StringType::get(), c10::AnyType::get());
  root.insert("model", tensor_dict(c.model));
  root.insert("optimizer", tensor_dict(c.optimizer));
  root.insert("meta", meta);
  write_file_atomic(path, torch_save_bytes(c10::IValue(root)));
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

StageCheckpoint load_stage_checkpoint(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error("cannot open checkpoint " + path);
  std::vector<char> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
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
  return c;
}

void write_manifest(const std::string& dir, const Manifest& m) {
  nlohmann::json j = {{"step", m.step}, {"num_stages", m.num_stages}, {"job", m.job}, {"files", m.files}};
  fs::create_directories(dir);
  write_file_atomic((fs::path(dir) / "manifest.json").string(), j.dump(1) + "\n");
}

std::optional<Manifest> read_manifest(const std::string& dir) {
  const std::string path = (fs::path(dir) / "manifest.json").string();
  std::ifstream f(path);
  if (!f) return std::nullopt;
  try {
    nlohmann::json j = nlohmann::json::parse(f);
    Manifest m;
    m.step = j.at("step").get<int64_t>();
    m.num_stages = j.at("num_stages").get<int>();
    m.job = j.at("job").get<std::string>();
    m.files = j.at("files").get<std::vector<std::string>>();
    return m;
  } catch (const std::exception& e) {
    throw InputError(path, "", std::string("malformed checkpoint manifest: ") + e.what());
  }
}

void copy_into(const std::vector<NamedTensor>& saved, const std::vector<NamedTensor>& params, const std::string& source) {
  std::map<std::string, at::Tensor> by_name;
  for (const auto& s : saved) by_name[s.name] = s.tensor;
  at::NoGradGuard no_grad;
  for (const auto& p : params) {
    auto it = by_name.find(p.name);
    if (it == by_name.end()) throw Error(source + ": no parameter " + p.name);
    if (!it->second.sizes().equals(p.tensor.sizes()))
      throw Error(source + ": parameter " + p.name + " has the wrong shape");
    p.tensor.copy_(it->second);
  }
}

}  // namespace geopipe::runtime
