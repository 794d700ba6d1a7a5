#include <geopipe/core/error.h>
#include <geopipe/runtime/data.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <iterator>

namespace geopipe::runtime {

uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

TokenDataset TokenDataset::from_tokens(std::vector<uint16_t> tokens, double val_fraction, std::string name) {
  if (!(val_fraction >= 0.0 && val_fraction < 1.0))
    throw InputError(name, "val_fraction", "expected a fraction in [0, 1), got " + std::to_string(val_fraction));
  TokenDataset d;
  d.name_ = std::move(name);
  const size_t n_val = static_cast<size_t>(static_cast<double>(tokens.size()) * val_fraction);
  const size_t n_train = tokens.size() - n_val;
  d.train_.assign(tokens.begin(), tokens.begin() + static_cast<std::ptrdiff_t>(n_train));
  d.val_.assign(tokens.begin() + static_cast<std::ptrdiff_t>(n_train), tokens.end());
  for (uint16_t t : tokens) d.max_token_ = std::max<int>(d.max_token_, t);
  return d;
}

TokenDataset TokenDataset::load(const std::string& path, const std::string& format, double val_fraction) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw InputError(path, "", "cannot open data file");
  std::vector<char> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  std::vector<uint16_t> tokens;
  if (format == "text") {
    tokens.reserve(bytes.size());
    for (char c : bytes) tokens.push_back(static_cast<uint8_t>(c));
  } else if (format == "bin") {
    constexpr size_t kHeaderBytes = 256 * sizeof(int32_t);
    if (bytes.size() < kHeaderBytes)
      throw InputError(path, "header", "expected a 1024-byte llm.c shard header, file has " +
                                           std::to_string(bytes.size()) + " bytes");
    int32_t header[256];
    std::memcpy(header, bytes.data(), kHeaderBytes);
    if (header[0] != kShardMagic)
      throw InputError(path, "header[0]", "expected magic " + std::to_string(kShardMagic) + ", got " +
                                              std::to_string(header[0]));
    if (header[1] != kShardVersion)
      throw InputError(path, "header[1]", "expected version " + std::to_string(kShardVersion) + ", got " +
                                              std::to_string(header[1]));
    const int64_t count = header[2];
    const size_t have = (bytes.size() - kHeaderBytes) / sizeof(uint16_t);
    if (count < 0 || static_cast<size_t>(count) != have || (bytes.size() - kHeaderBytes) % 2 != 0)
      throw InputError(path, "header[2]", "token count " + std::to_string(count) + " does not match the " +
                                              std::to_string(bytes.size() - kHeaderBytes) + " payload bytes");
    tokens.resize(static_cast<size_t>(count));
    std::memcpy(tokens.data(), bytes.data() + kHeaderBytes, tokens.size() * sizeof(uint16_t));
  } else {
    throw InputError(path, "--data-format", "expected text or bin, got \"" + format + "\"");
  }
  if (tokens.size() < 2) throw InputError(path, "", "expected at least 2 tokens, got " + std::to_string(tokens.size()));
  return from_tokens(std::move(tokens), val_fraction, path);
}

TokenBatch sample_batch(const TokenDataset& data, Split split, uint64_t seed, int64_t step, int micro_batch,
                        int batch, int seq_len) {
  const auto& tok = data.tokens(split);
  const char* split_name = split == Split::kTrain ? "train" : "validation";
  if (tok.size() < static_cast<size_t>(seq_len) + 1)
    throw InputError(data.name(), split_name,
                     "split has " + std::to_string(tok.size()) + " tokens, fewer than seq_len + 1 = " +
                         std::to_string(seq_len + 1));
  TokenBatch b;
  b.batch = batch;
  b.seq_len = seq_len;
  b.inputs.resize(static_cast<size_t>(batch) * seq_len);
  b.targets.resize(b.inputs.size());
  const uint64_t range = tok.size() - static_cast<uint64_t>(seq_len);  // valid starts: [0, range)
  uint64_t h = mix64(seed ^ mix64(split == Split::kTrain ? 1 : 2));
  h = mix64(h ^ static_cast<uint64_t>(step));
  h = mix64(h ^ static_cast<uint64_t>(micro_batch));
  for (int r = 0; r < batch; ++r) {
    const uint64_t start = mix64(h ^ static_cast<uint64_t>(r)) % range;
    for (int t = 0; t < seq_len; ++t) {
      b.inputs[static_cast<size_t>(r) * seq_len + t] = tok[start + t];
      b.targets[static_cast<size_t>(r) * seq_len + t] = tok[start + t + 1];
    }
  }
  return b;
}

void write_token_shard(const std::string& path, const std::vector<uint16_t>& tokens) {
  int32_t header[256] = {};
  header[0] = kShardMagic;
  header[1] = kShardVersion;
  header[2] = static_cast<int32_t>(tokens.size());
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f) throw Error("cannot write token shard " + path);
  f.write(reinterpret_cast<const char*>(header), sizeof(header));
  f.write(reinterpret_cast<const char*>(tokens.data()), static_cast<std::streamsize>(tokens.size() * sizeof(uint16_t)));
  if (!f) throw Error("cannot write token shard " + path);
}

}  // namespace geopipe::runtime
