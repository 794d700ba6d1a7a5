// Text generation from checkpoints (one process; the 4-stage case is in pipeline_test.cpp) and
// the step-0 checkpoint of the initial weights.
#include "test_plan.h"

#include <geopipe/core/error.h>
#include <geopipe/runtime/checkpoint.h>
#include <geopipe/runtime/gpt.h>
#include <geopipe/runtime/sample.h>
#include <geopipe/runtime/trainer.h>

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <map>

using namespace geopipe;
using namespace geopipe::runtime;
namespace fs = std::filesystem;

namespace {

std::string fresh_dir(const std::string& name) {
  std::string d = testing::TempDir() + "/" + name;
  fs::remove_all(d);
  return d;
}

// A 2-layer tiny model trained for 3 steps, checkpointed: the sampling tests' model.
const std::string& trained_checkpoint() {
  static const std::string dir = [] {
    Plan plan = testing_support::tiny_plan({{0, 2}}, {"us-east"});
    TrainConfig cfg = testing_support::tiny_config(3);
    cfg.checkpoint_dir = fresh_dir("ckpt_sample");
    cfg.checkpoint_every = 3;
    run_training(plan, cfg, nullptr);
    return cfg.checkpoint_dir;
  }();
  return dir;
}

SampleConfig sample_config(int64_t tokens) {
  SampleConfig c;
  c.checkpoint_dir = trained_checkpoint();
  c.tokens = tokens;
  c.prompt = "And God said";
  c.seed = 7;
  return c;
}

}  // namespace

TEST(Sampling, GreedyPicksTheMostLikelyTokenAndTopKOfOneIsGreedy) {
  const std::vector<float> logits = {0.1f, 2.0f, -1.0f, 2.0f, 1.5f};
  EXPECT_EQ(pick_token(logits, 0.0, 0, 1, 0), 1);  // tie between 1 and 3: the lower id
  for (int64_t pos = 0; pos < 50; ++pos) EXPECT_EQ(pick_token(logits, 1.0, 1, 9, pos), 1);
}

TEST(Sampling, DrawsFollowTheSoftmaxOfTheLogitsOverTemperature) {
  const std::vector<double> p = {0.5, 0.25, 0.15, 0.1};
  std::vector<float> logits;
  for (double x : p) logits.push_back(static_cast<float>(2.0 * std::log(x)));  // temperature 2 undoes the 2x
  const int n = 40000;
  std::vector<int> count(p.size(), 0);
  for (int64_t pos = 0; pos < n; ++pos) ++count.at(static_cast<size_t>(pick_token(logits, 2.0, 0, 3, pos)));
  for (size_t i = 0; i < p.size(); ++i)  // standard deviation of each frequency <= 0.0025
    EXPECT_NEAR(count[i] / static_cast<double>(n), p[i], 0.012) << "token " << i;
}

TEST(Sampling, TopKNeverPicksOutsideTheKMostLikely) {
  const std::vector<float> logits = {0.0f, 0.3f, 0.2f, 0.1f, 0.25f};  // top 2: tokens 1 and 4
  std::map<int64_t, int> seen;
  for (int64_t pos = 0; pos < 2000; ++pos) ++seen[pick_token(logits, 1.0, 2, 5, pos)];
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_GT(seen[1], 0);
  EXPECT_GT(seen[4], 0);
}

TEST(Sampling, SameCheckpointPromptAndSeedGiveTheSameTextAndAnotherSeedAnother) {
  Plan plan = testing_support::tiny_plan({{0, 2}}, {"us-east"});
  SampleResult a = generate(plan, sample_config(40), nullptr);
  SampleResult b = generate(plan, sample_config(40), nullptr);
  EXPECT_EQ(a.step, 3);
  ASSERT_EQ(a.generated.size(), 40u);
  EXPECT_EQ(a.text.rfind("And God said", 0), 0u) << a.text;
  EXPECT_EQ(a.text.size(), std::string("And God said").size() + 40);
  EXPECT_EQ(a.text, b.text);
  SampleConfig other = sample_config(40);
  other.seed = 8;
  EXPECT_NE(generate(plan, other, nullptr).text, a.text);
  // Greedy decoding does not depend on the seed.
  SampleConfig g1 = sample_config(20), g2 = sample_config(20);
  g1.temperature = g2.temperature = 0;
  g2.seed = 99;
  EXPECT_EQ(generate(plan, g1, nullptr).text, generate(plan, g2, nullptr).text);
}

TEST(Sampling, AContextLongerThanTheModelsKeepsTheLastSeqLenTokens) {
  Plan plan = testing_support::tiny_plan({{0, 2}}, {"us-east"});  // seq_len 16
  SampleConfig c = sample_config(30);
  c.prompt = std::string(40, 'x');
  SampleResult r = generate(plan, c, nullptr);
  EXPECT_EQ(r.generated.size(), 30u);
  for (int64_t t : r.generated) EXPECT_LT(t, 256);
}

TEST(Sampling, BadInputIsRefusedNamingWhatIsWrong) {
  Plan plan = testing_support::tiny_plan({{0, 2}}, {"us-east"});
  SampleConfig none = sample_config(5);
  none.checkpoint_dir = fresh_dir("no_ckpt_here");
  EXPECT_THROW(generate(plan, none, nullptr), InputError);
  SampleConfig zero = sample_config(0);
  EXPECT_THROW(generate(plan, zero, nullptr), InputError);
  SampleConfig empty = sample_config(5);
  empty.prompt = "";
  EXPECT_THROW(generate(plan, empty, nullptr), InputError);
  // A checkpoint of a 2-layer model cannot feed a 3-layer plan: the missing block is named.
  Plan deeper = testing_support::tiny_plan({{0, 3}}, {"us-east"});
  try {
    generate(deeper, sample_config(5), nullptr);
    FAIL() << "a checkpoint of another model was accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("transformer.h.2."), std::string::npos) << e.what();
  }
}

TEST(Training, CheckpointAtStartHoldsTheInitialWeightsAndResumesLikeAFreshRun) {
  Plan plan = testing_support::tiny_plan({{0, 2}}, {"us-east"});
  TrainConfig cfg = testing_support::tiny_config(0);  // zero steps: only the step-0 checkpoint
  cfg.checkpoint_dir = fresh_dir("ckpt_start");
  cfg.checkpoint_at_start = true;
  TrainResult none = run_training(plan, cfg, nullptr);
  EXPECT_TRUE(none.steps.empty());
  auto m = read_manifest(cfg.checkpoint_dir);
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->step, 0);
  StageCheckpoint ck = load_stage_checkpoint(cfg.checkpoint_dir, *m, 0);
  GptStage fresh(gpt_config(plan.job.model), 0, 2, true, true, cfg.seed);
  std::map<std::string, at::Tensor> saved;
  for (const auto& t : ck.model) saved[t.name] = t.tensor;
  ASSERT_EQ(saved.size(), fresh.named_parameters().size());
  for (const auto& p : fresh.named_parameters()) EXPECT_TRUE(at::equal(saved.at(p.name), p.tensor)) << p.name;

  // Resuming from step 0 is the same trajectory as starting afresh.
  TrainConfig straight = testing_support::tiny_config(3);
  TrainConfig resume = straight;
  resume.checkpoint_dir = cfg.checkpoint_dir;
  resume.resume = true;
  TrainResult a = run_training(plan, straight, nullptr), b = run_training(plan, resume, nullptr);
  ASSERT_EQ(b.steps.size(), 3u);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(a.steps[i].loss, b.steps[i].loss) << "step " << i;

  TrainConfig no_dir = testing_support::tiny_config(0);
  no_dir.checkpoint_at_start = true;
  EXPECT_THROW(run_training(plan, no_dir, nullptr), InputError);
}
