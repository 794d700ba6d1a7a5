// Checkpoint integrity in one process: the manifest records every stage file's size and CRC32C,
// loading verifies both before parsing and refuses a damaged, missing or unverifiable file with
// an InputError naming it and the manifest; an interrupted write never replaces a good file; a
// refused --resume writes nothing. Also the GEOPIPE_TEST_FAULT parser.
#include "job_runner.h"

#include "../runtime/test_plan.h"

#include <geopipe/comm/crc32c.h>
#include <geopipe/core/error.h>
#include <geopipe/runtime/checkpoint.h>
#include <geopipe/runtime/trainer.h>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <tuple>
#include <fstream>
#include <stdexcept>
#include <string>

namespace geopipe::reliability {
namespace {

using runtime::FileCheck;
using runtime::Manifest;
using runtime::StageCheckpoint;

class CheckpointIntegrity : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = (fs::path(GEOPIPE_BINARY_DIR) / "tests" /
            ("reliability_ckpt_" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name())))
               .string();
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Two stages of step 6, each a 64x64 matrix with its optimizer moment, and their manifest.
  Manifest write_checkpoint() {
    Manifest m{6, 2, "gpt-test", {}};
    for (int s = 0; s < 2; ++s) {
      at::manual_seed(s);
      StageCheckpoint c{s, 6, 1234, 6, {{"w" + std::to_string(s), at::randn({64, 64})}},
                        {{"exp_avg.w" + std::to_string(s), at::randn({64, 64})}}};
      const runtime::FileDigest d = runtime::save_stage_checkpoint(dir_, c);
      m.files.push_back({fs::relative(runtime::stage_checkpoint_path(dir_, 6, s), dir_).string(), d});
    }
    runtime::write_manifest(dir_, m);
    return m;
  }

  // Loads stage `stage` expecting a refusal; returns the message.
  std::string refused(int stage, FileCheck want) {
    auto m = runtime::read_manifest(dir_);
    EXPECT_TRUE(m.has_value());
    FileCheck check = FileCheck::kOk;
    try {
      runtime::load_stage_checkpoint(dir_, *m, stage, 0, &check);
    } catch (const InputError& e) {
      EXPECT_EQ(check, want) << e.what();
      return e.what();
    }
    ADD_FAILURE() << "stage " << stage << " loaded although damaged";
    return "";
  }

  std::string stage_file(int stage) const { return runtime::stage_checkpoint_path(dir_, 6, stage); }
  std::string manifest() const { return dir_ + "/manifest.json"; }

  std::string dir_;
};

TEST_F(CheckpointIntegrity, ManifestRecordsSizeAndCrc32cOfEveryStageFile) {
  write_checkpoint();
  auto m = runtime::read_manifest(dir_);
  ASSERT_TRUE(m.has_value());
  ASSERT_EQ(m->files.size(), 2u);
  for (int s = 0; s < 2; ++s) {
    const std::string bytes = read_file(stage_file(s));
    EXPECT_EQ(m->files[s].digest.bytes, bytes.size());
    EXPECT_EQ(m->files[s].digest.crc32c, comm::crc32c_portable(bytes.data(), bytes.size()));
    StageCheckpoint c = runtime::load_stage_checkpoint(dir_, *m, s);
    EXPECT_EQ(c.stage, s);
    EXPECT_EQ(c.step, 6);
    ASSERT_EQ(c.model.size(), 1u);
    at::manual_seed(s);
    EXPECT_TRUE(at::equal(c.model[0].tensor, at::randn({64, 64})));
  }
  auto j = nlohmann::json::parse(read_file(manifest()));
  EXPECT_EQ(j.at("format"), 2);
  EXPECT_EQ(j.at("crc32c").size(), 2u);
}

// ZeRO-1: one stage, two optimizer shards; the model is in shard 0's file only.
TEST_F(CheckpointIntegrity, OptimizerShardsAreFilesOfTheirOwnCheckedLikeStageFiles) {
  Manifest m{6, 1, "gpt-test", {}, 2, 2};
  for (int r = 0; r < 2; ++r) {
    StageCheckpoint c{0, 6, 1234, 6, {}, {{"exp_avg.w[" + std::to_string(r * 8) + ":" + std::to_string(r * 8 + 8) + "]",
                                           at::full({8}, static_cast<float>(r))}}, r, 2};
    if (r == 0) c.model = {{"w", at::ones({16})}};
    const runtime::FileDigest d = runtime::save_stage_checkpoint(dir_, c);
    m.files.push_back({fs::relative(runtime::stage_checkpoint_path(dir_, 6, 0, r, 2), dir_).string(), d});
  }
  runtime::write_manifest(dir_, m);
  auto back = runtime::read_manifest(dir_);
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(back->replicas, 2);
  EXPECT_EQ(back->optimizer_shards, 2);
  EXPECT_EQ(back->file(0, 1).path, "step-000006/stage-0.shard-1.pt");
  const StageCheckpoint shard1 = runtime::load_stage_checkpoint(dir_, *back, 0, 1);
  EXPECT_EQ(shard1.shard, 1);
  EXPECT_TRUE(shard1.model.empty());
  ASSERT_EQ(shard1.optimizer.size(), 1u);
  EXPECT_EQ(shard1.optimizer[0].name, "exp_avg.w[8:16]");
  EXPECT_EQ(runtime::load_stage_checkpoint(dir_, *back, 0, 0).model.size(), 1u);
  // A shard file swapped for the other (as a mis-copy would): refused by its checksum.
  fs::copy_file(runtime::stage_checkpoint_path(dir_, 6, 0, 0, 2), runtime::stage_checkpoint_path(dir_, 6, 0, 1, 2),
                fs::copy_options::overwrite_existing);
  FileCheck check = FileCheck::kOk;
  EXPECT_THROW(runtime::load_stage_checkpoint(dir_, *back, 0, 1, &check), InputError);
  EXPECT_NE(check, FileCheck::kOk);
  // A manifest whose shard count is neither 1 nor its replica count.
  auto j = nlohmann::json::parse(read_file(manifest()));
  j["optimizer_shards"] = 3;
  std::ofstream(manifest(), std::ios::trunc) << j.dump();
  try {
    runtime::read_manifest(dir_);
    FAIL() << "accepted 3 shards of 2 replicas";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("optimizer_shards: expected 1 or the replica count 2, got 3"), std::string::npos)
        << e.what();
  }
}

TEST_F(CheckpointIntegrity, TruncatedStageFileIsRefusedNamingItAndTheManifest) {
  write_checkpoint();
  fs::resize_file(stage_file(1), fs::file_size(stage_file(1)) - 1);
  const std::string what = refused(1, FileCheck::kWrongSize);
  EXPECT_NE(what.find(stage_file(1)), std::string::npos) << what;
  EXPECT_NE(what.find(manifest()), std::string::npos) << what;
  EXPECT_NE(what.find("truncated or overwritten"), std::string::npos) << what;
  EXPECT_NO_THROW(runtime::load_stage_checkpoint(dir_, *runtime::read_manifest(dir_), 0));  // the other is sound
}

TEST_F(CheckpointIntegrity, OneFlippedBitInTheMiddleIsRefusedBeforeParsing) {
  write_checkpoint();
  // The middle of the file is tensor data: the unpickler would load it without complaint.
  flip_bit(stage_file(0), fs::file_size(stage_file(0)) / 2, 0);
  const std::string what = refused(0, FileCheck::kWrongChecksum);
  EXPECT_NE(what.find(stage_file(0)), std::string::npos) << what;
  EXPECT_NE(what.find("CRC32C"), std::string::npos) << what;
  EXPECT_NE(what.find(manifest()), std::string::npos) << what;
}

TEST_F(CheckpointIntegrity, MissingStageFileIsRefusedNamingIt) {
  write_checkpoint();
  fs::remove(stage_file(1));
  const std::string what = refused(1, FileCheck::kMissing);
  EXPECT_NE(what.find(stage_file(1)), std::string::npos) << what;
  EXPECT_NE(what.find("missing"), std::string::npos) << what;
}

TEST_F(CheckpointIntegrity, CorruptManifestJsonIsRefusedNamingIt) {
  write_checkpoint();
  std::string text = read_file(manifest());
  text.resize(text.size() / 2);  // cut in the middle of the JSON
  std::ofstream(manifest(), std::ios::trunc) << text;
  try {
    runtime::read_manifest(dir_);
    FAIL() << "a torn manifest was accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find(manifest()), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("malformed"), std::string::npos) << e.what();
  }
}

TEST_F(CheckpointIntegrity, ManifestWithoutChecksumsIsRefused) {
  write_checkpoint();
  auto j = nlohmann::json::parse(read_file(manifest()));
  j.erase("crc32c");
  j.erase("bytes");
  j.erase("format");
  std::ofstream(manifest(), std::ios::trunc) << j.dump();
  try {
    runtime::read_manifest(dir_);
    FAIL() << "an unverifiable manifest was accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find(manifest()), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("no checksums"), std::string::npos) << e.what();
  }
}

TEST_F(CheckpointIntegrity, ManifestNamingAFileOutsideTheFolderIsRefused) {
  write_checkpoint();
  auto j = nlohmann::json::parse(read_file(manifest()));
  j["files"][1] = "../elsewhere/stage-1.pt";
  std::ofstream(manifest(), std::ios::trunc) << j.dump();
  EXPECT_THROW(runtime::read_manifest(dir_), InputError);
}

TEST_F(CheckpointIntegrity, InterruptedAtomicWriteNeverReplacesTheGoodFile) {
  const std::string file = dir_ + "/data.bin";
  runtime::write_file_atomic(file, std::string(1000, 'a'));
  bool midway_ran = false;
  EXPECT_THROW(runtime::write_file_atomic(file, std::string(1000, 'b'),
                                          [&] {
                                            midway_ran = true;
                                            throw std::runtime_error("crash half-way");
                                          }),
               std::runtime_error);
  EXPECT_TRUE(midway_ran);
  EXPECT_EQ(read_file(file), std::string(1000, 'a'));
  EXPECT_EQ(read_file(file + ".tmp"), std::string(500, 'b'));  // the half that was written
}

// One process: a resume from a bit-flipped checkpoint throws before anything is written.
TEST_F(CheckpointIntegrity, ResumeFromACorruptCheckpointThrowsAndWritesNothing) {
  runtime::set_compute_threads(1);
  Plan plan = testing_support::tiny_plan({{0, 2}}, {"us-east"});
  runtime::TrainConfig cfg = testing_support::tiny_config(2);
  cfg.checkpoint_dir = dir_ + "/ckpt";
  cfg.checkpoint_every = 2;
  cfg.json_log = dir_ + "/log.jsonl";
  cfg.test_fault = "";
  runtime::run_training(plan, cfg, nullptr);
  const std::string file = runtime::stage_checkpoint_path(cfg.checkpoint_dir, 2, 0);
  flip_bit(file, fs::file_size(file) / 2, 7);
  const auto before = snapshot(cfg.checkpoint_dir);
  const std::string log_before = read_file(cfg.json_log);
  cfg.resume = true;
  cfg.iters = 4;
  try {
    runtime::run_training(plan, cfg, nullptr);
    FAIL() << "resumed from a corrupted checkpoint";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find(file), std::string::npos) << e.what();
  }
  EXPECT_EQ(snapshot(cfg.checkpoint_dir), before);
  EXPECT_EQ(read_file(cfg.json_log), log_before);
}

// The manifest's tensor index lists what the stages build: every name and shape, in order.
TEST(TensorIndex, StageParameterShapesAreWhatTheStagesBuild) {
  const runtime::GptConfig c{4, 2, 32, 16, 256};
  for (const auto& [b, e, first, last] : std::vector<std::tuple<int, int, bool, bool>>{
           {0, 4, true, true}, {0, 1, true, false}, {1, 3, false, false}, {3, 4, false, true}, {2, 2, false, true}}) {
    const auto shapes = runtime::stage_parameter_shapes(c, b, e, first, last);
    const auto built = runtime::GptStage(c, b, e, first, last, 1).named_parameters();
    ASSERT_EQ(shapes.size(), built.size()) << "layers [" << b << ", " << e << ")";
    for (size_t i = 0; i < built.size(); ++i) {
      EXPECT_EQ(shapes[i].first, built[i].name);
      EXPECT_EQ(shapes[i].second, built[i].tensor.sizes().vec()) << built[i].name;
    }
  }
}

// Three stages, two optimizer shards each: a name's file is its stage's shard-0 file.
TEST(TensorIndex, IndexNamesEachParametersStageFileAndShape) {
  const auto index = runtime::tensor_index({4, 2, 32, 16, 256}, {{0, 1}, {1, 3}, {3, 4}}, 2);
  EXPECT_EQ(index.size(), 2u + 12u * 4u + 3u);
  EXPECT_EQ(index.at("transformer.wte.weight").file, 0);
  EXPECT_EQ(index.at("transformer.wte.weight").shape, (std::vector<int64_t>{256, 32}));
  EXPECT_EQ(index.at("transformer.h.2.mlp.c_fc.weight").file, 2);
  EXPECT_EQ(index.at("transformer.h.2.mlp.c_fc.weight").shape, (std::vector<int64_t>{128, 32}));
  EXPECT_EQ(index.at("lm_head.weight").file, 4);
}

// A run's manifest carries the index; --resume checks it (a missing name, another shape, a file
// not in the manifest: refused naming the field) and still loads a manifest written without one.
TEST_F(CheckpointIntegrity, ResumeFindsTensorsThroughTheManifestIndexAndRefusesABadOne) {
  runtime::set_compute_threads(1);
  Plan plan = testing_support::tiny_plan({{0, 2}}, {"us-east"});
  runtime::TrainConfig cfg = testing_support::tiny_config(2);
  cfg.checkpoint_dir = dir_ + "/ckpt";
  cfg.checkpoint_every = 2;
  cfg.test_fault = "";
  runtime::run_training(plan, cfg, nullptr);
  const std::string mpath = cfg.checkpoint_dir + "/manifest.json";
  const nlohmann::json good = nlohmann::json::parse(read_file(mpath));
  EXPECT_EQ(good.at("tensors").size(), 2u + 12u * 2u + 3u);
  EXPECT_EQ(good.at("tensors").at("lm_head.weight"),
            (nlohmann::json{{"file", "step-000002/stage-0.pt"}, {"shape", {256, 32}}}));
  cfg.resume = true;
  cfg.iters = 3;
  auto refusal = [&](nlohmann::json doc) {
    std::ofstream(mpath, std::ios::trunc) << doc.dump();
    try {
      runtime::run_training(plan, cfg, nullptr);
    } catch (const InputError& e) {
      return std::string(e.what());
    }
    return std::string("(resumed)");
  };
  nlohmann::json missing = good;
  missing["tensors"].erase("transformer.h.1.ln_2.bias");
  EXPECT_NE(refusal(missing).find(mpath + ": tensors: has no entry for transformer.h.1.ln_2.bias, which stage 0 of "
                                          "the plan needs"),
            std::string::npos)
      << refusal(missing);
  nlohmann::json reshaped = good;
  reshaped["tensors"]["lm_head.weight"]["shape"] = {256, 16};
  EXPECT_NE(refusal(reshaped).find(mpath + ": tensors.lm_head.weight.shape: [256, 16] in the checkpoint, [256, 32] in "
                                           "the plan's model"),
            std::string::npos)
      << refusal(reshaped);
  nlohmann::json elsewhere = good;
  elsewhere["tensors"]["lm_head.weight"]["file"] = "step-000002/stage-7.pt";
  EXPECT_NE(refusal(elsewhere).find(mpath + ": tensors.lm_head.weight.file: \"step-000002/stage-7.pt\" is not in files"),
            std::string::npos)
      << refusal(elsewhere);
  nlohmann::json stranger = good;  // an entry the manifest's own layout does not give
  stranger["tensors"]["transformer.h.9.attn.c_attn.weight"] = good["tensors"]["lm_head.weight"];
  EXPECT_NE(refusal(stranger).find(mpath + ": tensors.transformer.h.9.attn.c_attn.weight: is not a parameter of the "
                                           "model the manifest records"),
            std::string::npos)
      << refusal(stranger);
  nlohmann::json before_the_index = good;
  before_the_index.erase("tensors");
  EXPECT_EQ(refusal(before_the_index), "(resumed)");
}

TEST(TestFaultSpec, ParsesEachKind) {
  using K = runtime::TestFault::Kind;
  EXPECT_EQ(runtime::parse_test_fault("").kind, K::kNone);
  auto k = runtime::parse_test_fault("kill:rank=3:step=17");
  EXPECT_EQ(k.kind, K::kKill);
  EXPECT_EQ(k.rank, 3);
  EXPECT_EQ(k.step, 17);
  EXPECT_EQ(runtime::parse_test_fault("kill-in-checkpoint:rank=0:step=1").kind, K::kKillInCheckpoint);
  EXPECT_EQ(runtime::parse_test_fault("corrupt:rank=2:step=5").kind, K::kCorrupt);
  auto c = runtime::parse_test_fault("cut:region=eu-central:step=15");
  EXPECT_EQ(c.kind, K::kCut);
  EXPECT_EQ(c.region, "eu-central");
  EXPECT_EQ(c.step, 15);
}

TEST(TestFaultSpec, MalformedValueIsAnInputErrorNamingTheVariable) {
  for (const char* bad : {"kill", "kill:rank=1", "explode:rank=1:step=2", "kill:rank=x:step=2", "kill:rank=1:step=0",
                          "kill:rank=-1:step=2", "kill:step=2:rank=1", "kill:rank=1:step=2:extra", "kill:rank=1:step=2x",
                          "kill:rank=:step=2", "cut:region=:step=2", "cut:rank=1:step=2", "cut:region=a:step=0"}) {
    try {
      runtime::parse_test_fault(bad);
      ADD_FAILURE() << "accepted " << bad;
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find("GEOPIPE_TEST_FAULT"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(bad), std::string::npos) << e.what();
    }
  }
}

}  // namespace
}  // namespace geopipe::reliability
