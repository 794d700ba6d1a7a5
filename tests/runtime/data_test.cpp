// Token data: byte-level text, llm.c shards, the train/validation split and the stateless sampler.
#include <geopipe/core/error.h>
#include <geopipe/runtime/data.h>

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>

using namespace geopipe;
using namespace geopipe::runtime;

namespace {

std::string temp_file(const std::string& name, const std::string& bytes) {
  std::string path = testing::TempDir() + "/" + name;
  std::ofstream(path, std::ios::binary) << bytes;
  return path;
}

std::vector<uint16_t> iota_tokens(size_t n) {
  std::vector<uint16_t> t(n);
  for (size_t i = 0; i < n; ++i) t[i] = static_cast<uint16_t>(i % 1000);
  return t;
}

}  // namespace

TEST(Data, TextIsOneTokenPerByteAndTheTailIsValidation) {
  std::string path = temp_file("data_text.txt", "abcdefghij");
  TokenDataset d = TokenDataset::load(path, "text", 0.2);
  ASSERT_EQ(d.tokens(Split::kTrain).size(), 8u);
  ASSERT_EQ(d.tokens(Split::kVal).size(), 2u);
  EXPECT_EQ(d.tokens(Split::kTrain)[0], 'a');
  EXPECT_EQ(d.tokens(Split::kVal)[0], 'i');
  EXPECT_EQ(d.max_token(), 'j');
  std::remove(path.c_str());
}

TEST(Data, ShippedCorpusLoadsAsBytes) {
  TokenDataset d = TokenDataset::load(std::string(GEOPIPE_SOURCE_DIR) + "/examples/gpt/data/kjv-pentateuch.txt", "text");
  EXPECT_GT(d.tokens(Split::kTrain).size(), 500000u);
  EXPECT_LT(d.max_token(), 128);  // ASCII
}

TEST(Data, LlmcShardRoundTrips) {
  std::string path = testing::TempDir() + "/data_shard.bin";
  std::vector<uint16_t> tokens = iota_tokens(5000);
  tokens[17] = 50256;  // a GPT-2 token id beyond one byte
  write_token_shard(path, tokens);
  TokenDataset d = TokenDataset::load(path, "bin", 0.0);
  EXPECT_EQ(d.tokens(Split::kTrain), tokens);
  EXPECT_EQ(d.max_token(), 50256);
  std::remove(path.c_str());
}

TEST(Data, ShardWithBadMagicOrCountNamesTheFileAndField) {
  std::string path = testing::TempDir() + "/data_bad.bin";
  write_token_shard(path, iota_tokens(100));
  {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    int32_t bad = 12345;
    f.write(reinterpret_cast<const char*>(&bad), 4);
  }
  try {
    TokenDataset::load(path, "bin");
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("header[0]"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos);
  }
  write_token_shard(path, iota_tokens(100));
  { std::ofstream(path, std::ios::app | std::ios::binary) << "xx"; }  // 1 token more than the header says
  EXPECT_THROW(TokenDataset::load(path, "bin"), InputError);
  std::string small = temp_file("data_small.bin", "tiny");
  EXPECT_THROW(TokenDataset::load(small, "bin"), InputError);
  EXPECT_THROW(TokenDataset::load(small, "csv"), InputError);
  EXPECT_THROW(TokenDataset::load("/nonexistent/file.txt", "text"), InputError);
  std::remove(path.c_str());
  std::remove(small.c_str());
}

TEST(Data, BatchIsAPureFunctionOfSeedStepAndMicroBatch) {
  TokenDataset d = TokenDataset::from_tokens(iota_tokens(10000), 0.1, "iota");
  TokenBatch a = sample_batch(d, Split::kTrain, 7, 3, 1, 4, 16);
  TokenBatch b = sample_batch(d, Split::kTrain, 7, 3, 1, 4, 16);
  EXPECT_EQ(a.inputs, b.inputs);
  EXPECT_EQ(a.targets, b.targets);
  EXPECT_NE(sample_batch(d, Split::kTrain, 7, 4, 1, 4, 16).inputs, a.inputs);  // next step
  EXPECT_NE(sample_batch(d, Split::kTrain, 7, 3, 2, 4, 16).inputs, a.inputs);  // next micro-batch
  EXPECT_NE(sample_batch(d, Split::kTrain, 8, 3, 1, 4, 16).inputs, a.inputs);  // other seed
}

TEST(Data, TargetsAreInputsShiftedByOneWithinTheSplit) {
  std::vector<uint16_t> seq(3000);
  for (size_t i = 0; i < seq.size(); ++i) seq[i] = static_cast<uint16_t>(i);
  TokenDataset d = TokenDataset::from_tokens(seq, 0.5, "sequence");
  for (Split split : {Split::kTrain, Split::kVal}) {
    TokenBatch b = sample_batch(d, split, 1, 0, 0, 8, 10);
    ASSERT_EQ(b.inputs.size(), 80u);
    for (int r = 0; r < 8; ++r) {
      for (int t = 0; t + 1 < 10; ++t) EXPECT_EQ(b.targets[r * 10 + t], b.inputs[r * 10 + t + 1]);
      EXPECT_EQ(b.targets[r * 10 + 9], b.inputs[r * 10 + 9] + 1);
      if (split == Split::kVal) {
        EXPECT_GE(b.inputs[r * 10], 1500);  // the validation half
      }
      if (split == Split::kTrain) {
        EXPECT_LT(b.targets[r * 10 + 9], 1500);
      }
    }
  }
}

TEST(Data, SplitShorterThanOneSequenceIsInputError) {
  TokenDataset d = TokenDataset::from_tokens(iota_tokens(100), 0.05, "short");
  EXPECT_THROW(sample_batch(d, Split::kVal, 1, 0, 0, 1, 10), InputError);
  EXPECT_NO_THROW(sample_batch(d, Split::kTrain, 1, 0, 0, 1, 10));
}
