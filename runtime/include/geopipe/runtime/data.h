// Training data: a token stream (byte-level text, or llm.c / nanoGPT uint16 shards), split into
// train and validation parts, and a deterministic batch sampler. A batch is a pure function of
// (seed, split, step, micro-batch): the first stage (inputs) and the last stage (targets) both
// compute it, so targets never travel between ranks, and resuming at step N needs no loader
// state beyond N. No LibTorch: batches are plain int64 vectors.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace geopipe::runtime {

// llm.c / nanoGPT token shard: 256 int32 header (magic, version, token count, rest zero),
// then `count` uint16 tokens, little-endian.
inline constexpr int32_t kShardMagic = 20240520;
inline constexpr int32_t kShardVersion = 1;

enum class Split { kTrain, kVal };

class TokenDataset {
 public:
  // format "text": every byte is a token (vocabulary 256). format "bin": one shard as above.
  // The last `val_fraction` of the tokens is the validation split. Throws InputError naming the
  // file for an unreadable file, a bad shard header, or too few tokens.
  static TokenDataset load(const std::string& path, const std::string& format, double val_fraction = 0.1);
  static TokenDataset from_tokens(std::vector<uint16_t> tokens, double val_fraction, std::string name);

  const std::vector<uint16_t>& tokens(Split split) const { return split == Split::kTrain ? train_ : val_; }
  int max_token() const { return max_token_; }  // largest token id seen
  const std::string& name() const { return name_; }

 private:
  std::vector<uint16_t> train_, val_;
  int max_token_ = 0;
  std::string name_;
};

struct TokenBatch {
  int batch = 0, seq_len = 0;
  std::vector<int64_t> inputs;   // [batch * seq_len], row-major
  std::vector<int64_t> targets;  // inputs shifted by one token
};

// Rows start at offsets drawn by a counter-based hash of (seed, split, step, micro_batch, row):
// no state, identical on every rank. Throws InputError when the split is shorter than seq_len + 1.
TokenBatch sample_batch(const TokenDataset& data, Split split, uint64_t seed, int64_t step, int micro_batch,
                        int batch, int seq_len);

// Writes a shard in the llm.c format (used by tests and by tools that convert text).
void write_token_shard(const std::string& path, const std::vector<uint16_t>& tokens);

// SplitMix64 finaliser: the project's counter-based hash for seeds.
uint64_t mix64(uint64_t x);

}  // namespace geopipe::runtime
