// GPT stages, AdamW, checkpoints, single-process training, resume, profile (one process, CPU).
#include "test_plan.h"

#include <geopipe/core/error.h>
#include <geopipe/runtime/checkpoint.h>
#include <geopipe/runtime/gpt.h>
#include <geopipe/runtime/optim.h>
#include <geopipe/runtime/trainer.h>
#include <geopipe/scheduler/profile.h>

#include <gtest/gtest.h>
#include <torch/csrc/jit/serialization/pickle.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>

using namespace geopipe;
using namespace geopipe::runtime;
namespace fs = std::filesystem;

namespace {

GptConfig small() { return {4, 2, 32, 16, 256}; }

std::map<std::string, at::Tensor> by_name(const GptStage& s) {
  std::map<std::string, at::Tensor> m;
  for (const auto& p : s.named_parameters()) m[p.name] = p.tensor;
  return m;
}

std::string fresh_dir(const std::string& name) {
  std::string d = testing::TempDir() + "/" + name;
  fs::remove_all(d);
  return d;
}

}  // namespace

TEST(Gpt, ParametersHaveNanoGptNamesAndLinearLayout) {
  GptStage full(small(), 0, 4, true, true, 1);
  auto p = by_name(full);
  EXPECT_EQ(p.size(), 2u + 4 * 12 + 3);
  ASSERT_TRUE(p.count("transformer.wte.weight"));
  EXPECT_EQ(p["transformer.wte.weight"].sizes(), (std::vector<int64_t>{256, 32}));
  EXPECT_EQ(p["transformer.wpe.weight"].sizes(), (std::vector<int64_t>{16, 32}));
  EXPECT_EQ(p["transformer.h.3.attn.c_attn.weight"].sizes(), (std::vector<int64_t>{96, 32}));
  EXPECT_EQ(p["transformer.h.0.mlp.c_fc.weight"].sizes(), (std::vector<int64_t>{128, 32}));
  EXPECT_EQ(p["transformer.h.0.mlp.c_proj.weight"].sizes(), (std::vector<int64_t>{32, 128}));
  EXPECT_EQ(p["lm_head.weight"].sizes(), (std::vector<int64_t>{256, 32}));
  EXPECT_TRUE(p.count("transformer.ln_f.bias"));
  EXPECT_NEAR(p["transformer.h.1.attn.c_attn.weight"].std().item<double>(), 0.02, 0.002);
  EXPECT_NEAR(p["transformer.h.1.attn.c_proj.weight"].std().item<double>(), 0.02 / std::sqrt(8.0), 0.002);
  EXPECT_EQ(p["transformer.h.2.ln_1.weight"].sum().item<double>(), 32.0);
}

TEST(Gpt, AnySplitGivesTheSameParametersAsOneStage) {
  auto full = by_name(GptStage(small(), 0, 4, true, true, 7));
  std::map<std::string, at::Tensor> split;
  for (auto [b, e] : {std::pair{0, 1}, std::pair{1, 3}, std::pair{3, 4}}) {
    auto part = by_name(GptStage(small(), b, e, b == 0, e == 4, 7));
    split.insert(part.begin(), part.end());
  }
  ASSERT_EQ(split.size(), full.size());
  for (auto& [name, t] : full) EXPECT_TRUE(at::equal(t, split.at(name))) << name;
  // Another seed gives other numbers.
  auto other = by_name(GptStage(small(), 0, 4, true, true, 8));
  EXPECT_FALSE(at::equal(other.at("transformer.h.2.mlp.c_fc.weight"), full.at("transformer.h.2.mlp.c_fc.weight")));
}

TEST(Gpt, StagesChainedGiveTheFullModelsLogitsAndGradients) {
  GptStage full(small(), 0, 4, true, true, 3);
  GptStage s0(small(), 0, 2, true, false, 3), s1(small(), 2, 4, false, true, 3);
  at::Tensor tokens = at::randint(256, {2, 16}, at::TensorOptions().dtype(at::kLong));
  at::Tensor targets = at::randint(256, {2, 16}, at::TensorOptions().dtype(at::kLong));
  at::Tensor loss_full = GptStage::loss(full.forward(tokens), targets);
  loss_full.backward();
  at::Tensor h = s0.forward(tokens);
  at::Tensor h_in = h.detach().set_requires_grad(true);
  at::Tensor loss_split = GptStage::loss(s1.forward(h_in), targets);
  loss_split.backward();
  h.backward(h_in.grad());
  EXPECT_TRUE(at::equal(loss_full, loss_split));
  EXPECT_NEAR(loss_full.item<double>(), std::log(256.0), 0.1);  // uniform-ish at initialisation
  auto f = by_name(full), a = by_name(s0);
  EXPECT_TRUE(at::allclose(f["transformer.wte.weight"].grad(), a["transformer.wte.weight"].grad(), 1e-6, 1e-7));
  EXPECT_TRUE(at::allclose(f["transformer.h.0.attn.c_attn.weight"].grad(),
                           a["transformer.h.0.attn.c_attn.weight"].grad(), 1e-6, 1e-7));
}

TEST(Gpt, AttentionIsCausal) {
  GptStage full(small(), 0, 4, true, true, 3);
  at::Tensor tokens = at::randint(256, {1, 16}, at::TensorOptions().dtype(at::kLong));
  at::Tensor changed = tokens.clone();
  changed[0][10] = (tokens[0][10].item<int64_t>() + 1) % 256;
  at::NoGradGuard no_grad;
  at::Tensor a = full.forward(tokens), b = full.forward(changed);
  EXPECT_TRUE(at::equal(a.narrow(1, 0, 10), b.narrow(1, 0, 10)));  // positions before 10 unaffected
  EXPECT_FALSE(at::equal(a.narrow(1, 10, 1), b.narrow(1, 10, 1)));
}

TEST(Gpt, BadShapeIsInputError) {
  ModelSpec m{4, 30, 4, 16, 256, DType::kFloat32};  // 4 heads do not divide 30
  EXPECT_THROW(gpt_config(m), InputError);
  EXPECT_THROW(GptStage(small(), 2, 5, false, true, 1), InputError);
}

TEST(Optim, LearningRateWarmsUpLinearlyThenFollowsCosineToMin) {
  OptimConfig c;
  c.lr = 1.0;
  c.min_lr = 0.1;
  c.warmup_steps = 10;
  c.decay_steps = 110;
  EXPECT_DOUBLE_EQ(learning_rate(c, 0), 0.1);
  EXPECT_DOUBLE_EQ(learning_rate(c, 9), 1.0);
  EXPECT_DOUBLE_EQ(learning_rate(c, 10), 1.0);
  EXPECT_NEAR(learning_rate(c, 60), 0.55, 1e-12);  // half way: mean of lr and min_lr
  EXPECT_DOUBLE_EQ(learning_rate(c, 110), 0.1);
  EXPECT_DOUBLE_EQ(learning_rate(c, 500), 0.1);
}

TEST(Optim, AdamWMatchesTheClosedFormFirstSteps) {
  at::Tensor w = at::full({2, 2}, 1.0, at::TensorOptions().dtype(at::kDouble)).set_requires_grad(true);
  at::Tensor b = at::full({2}, 1.0, at::TensorOptions().dtype(at::kDouble)).set_requires_grad(true);
  OptimConfig c;
  c.weight_decay = 0.1;
  c.eps = 1e-8;
  AdamW opt(std::vector<NamedTensor>{{"w", w}, {"b", b}}, c);
  (w.sum() * 3.0 + b.sum() * 3.0).backward();  // gradient 3 everywhere
  opt.step(0.01);
  // Step 1: m_hat = g, v_hat = g^2, update = lr * g / (|g| + eps) = lr; decay only on the matrix.
  const double g = 3.0, upd = 0.01 * g / (g + 1e-8);
  EXPECT_NEAR(w[0][0].item<double>(), 1.0 * (1 - 0.01 * 0.1) - upd, 1e-12);
  EXPECT_NEAR(b[0].item<double>(), 1.0 - upd, 1e-12);
  opt.zero_grad();
  EXPECT_EQ(w.grad().abs().sum().item<double>(), 0.0);
  EXPECT_EQ(opt.steps_taken(), 1);
}

TEST(Optim, GlobalNormIsOrderIndependentAndClipScaleCapsIt) {
  EXPECT_DOUBLE_EQ(global_norm({{2, 9.0}, {0, 16.0}}), global_norm({{0, 16.0}, {2, 9.0}}));
  EXPECT_DOUBLE_EQ(global_norm({{0, 16.0}, {2, 9.0}}), 5.0);
  EXPECT_NEAR(clip_scale(5.0, 1.0), 0.2, 1e-6);
  EXPECT_EQ(clip_scale(0.5, 1.0), 1.0);
  EXPECT_EQ(clip_scale(50.0, 0.0), 1.0);
}

TEST(Checkpoint, StageFileRoundTripsModelOptimizerAndMeta) {
  std::string dir = fresh_dir("ckpt_roundtrip");
  GptStage s(small(), 1, 3, false, false, 5);
  AdamW opt(s.named_parameters(), OptimConfig{});
  StageCheckpoint ck{1, 42, 5, 42, s.named_parameters(), opt.state()};
  const FileDigest digest = save_stage_checkpoint(dir, ck);
  const std::string path = stage_checkpoint_path(dir, 42, 1);
  EXPECT_TRUE(fs::exists(path));
  EXPECT_FALSE(fs::exists(path + ".tmp"));
  EXPECT_EQ(digest.bytes, fs::file_size(path));
  // A two-stage manifest whose stage 1 is this file (stage 0 is never read).
  Manifest m{42, 2, "gpt-test", {{"step-000042/stage-0.pt", {}}, {"step-000042/stage-1.pt", digest}}};
  StageCheckpoint back = load_stage_checkpoint(dir, m, 1);
  EXPECT_EQ(back.step, 42);
  EXPECT_EQ(back.seed, 5u);
  EXPECT_EQ(back.stage, 1);
  ASSERT_EQ(back.model.size(), ck.model.size());
  GptStage t(small(), 1, 3, false, false, 99);  // other seed: other numbers until copied
  copy_into(back.model, t.named_parameters(), path);
  auto a = by_name(s), b = by_name(t);
  for (auto& [name, x] : a) EXPECT_TRUE(at::equal(x, b.at(name))) << name;
  // A checkpoint of another stage does not fit.
  GptStage wrong(small(), 0, 1, true, false, 5);
  EXPECT_THROW(copy_into(back.model, wrong.named_parameters(), path), Error);
  // The file is PyTorch's zip container (what torch.load reads).
  std::ifstream f(path, std::ios::binary);
  char magic[2] = {};
  f.read(magic, 2);
  EXPECT_EQ(std::string(magic, 2), "PK");
}

TEST(Checkpoint, ManifestNamesTheLatestCompleteCheckpoint) {
  std::string dir = fresh_dir("ckpt_manifest");
  EXPECT_FALSE(read_manifest(dir).has_value());
  write_manifest(dir, {10, 2, "gpt-test", {{"step-000010/stage-0.pt", {100, 0xdeadbeef}}, {"step-000010/stage-1.pt", {7, 1}}}});
  auto m = read_manifest(dir);
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->step, 10);
  ASSERT_EQ(m->files.size(), 2u);
  EXPECT_EQ(m->files[1].path, "step-000010/stage-1.pt");
  EXPECT_EQ(m->files[0].digest, (FileDigest{100, 0xdeadbeef}));
  { std::ofstream(dir + "/manifest.json") << "{\"step\": "; }
  EXPECT_THROW(read_manifest(dir), InputError);
}

TEST(Training, SingleStageReferenceLowersTheLoss) {
  Plan plan = testing_support::tiny_plan({{0, 2}}, {"us-east"});
  TrainConfig cfg = testing_support::tiny_config(30);
  cfg.eval_every = 30;
  TrainResult r = run_training(plan, cfg, nullptr);
  ASSERT_EQ(r.steps.size(), 30u);
  EXPECT_NEAR(r.steps.front().loss, std::log(256.0), 0.15);
  EXPECT_LT(r.steps.back().loss, r.steps.front().loss - 1.0) << "30 steps of a byte-level GPT must learn letters";
  ASSERT_EQ(r.val_losses.size(), 1u);
  EXPECT_LT(r.val_losses[0].second, 4.8);
  EXPECT_NE(r.summary.find("summary: 30 steps"), std::string::npos);
}

TEST(Training, SameSeedIsBitIdenticalAndGpipeEquals1F1BOnOneStage) {
  Plan a = testing_support::tiny_plan({{0, 2}}, {"us-east"}, "1f1b");
  Plan b = testing_support::tiny_plan({{0, 2}}, {"us-east"}, "gpipe");
  TrainConfig cfg = testing_support::tiny_config(3);
  auto r1 = run_training(a, cfg, nullptr), r2 = run_training(a, cfg, nullptr), r3 = run_training(b, cfg, nullptr);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(r1.steps[i].loss, r2.steps[i].loss);
    EXPECT_EQ(r1.steps[i].grad_norm, r2.steps[i].grad_norm);
  }
  // GPipe runs all forwards first: the same sums, so the same numbers within float rounding.
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(r3.steps[i].loss, r1.steps[i].loss, 1e-5 * r1.steps[i].loss);
}

TEST(Training, Bf16AutocastTrainsCloseToFp32) {
  Plan plan = testing_support::tiny_plan({{0, 2}}, {"us-east"});
  TrainConfig cfg = testing_support::tiny_config(5);
  TrainResult fp32 = run_training(plan, cfg, nullptr);
  cfg.dtype = "bf16";
  TrainResult bf16 = run_training(plan, cfg, nullptr);
  for (int i = 0; i < 5; ++i) EXPECT_NEAR(bf16.steps[i].loss, fp32.steps[i].loss, 0.03 * fp32.steps[i].loss);
  EXPECT_NE(bf16.steps[4].loss, fp32.steps[4].loss) << "bf16 autocast had no effect";
  cfg.dtype = "fp16";
  EXPECT_THROW(run_training(plan, cfg, nullptr), InputError);
}

TEST(Training, ResumeReproducesTheUninterruptedLosses) {
  Plan plan = testing_support::tiny_plan({{0, 2}}, {"us-east"});
  TrainConfig cfg = testing_support::tiny_config(6);
  TrainResult straight = run_training(plan, cfg, nullptr);

  // The first 3 steps of the same 6-step run (same LR schedule), checkpointed, then stopped.
  TrainConfig part = cfg;
  part.checkpoint_dir = fresh_dir("ckpt_resume");
  part.checkpoint_every = 3;
  part.iters = 3;
  part.optim.decay_steps = 6;
  run_training(plan, part, nullptr);
  auto m = read_manifest(part.checkpoint_dir);
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->step, 3);

  TrainConfig resume = cfg;
  resume.checkpoint_dir = part.checkpoint_dir;
  resume.resume = true;
  TrainResult rest = run_training(plan, resume, nullptr);
  EXPECT_EQ(rest.first_step, 3);
  ASSERT_EQ(rest.steps.size(), 3u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(rest.steps[i].step, 3 + i);
    EXPECT_EQ(rest.steps[i].loss, straight.steps[3 + i].loss) << "step " << 3 + i << " differs after resume";
  }
  // Resuming with another seed is refused.
  TrainConfig other = resume;
  other.seed = 1;
  EXPECT_THROW(run_training(plan, other, nullptr), InputError);
}

// Asynchronous checkpoints: the step that takes one is blocked only for the host copy; its files
// are written while the next step runs, which names them in the manifest at its end (the run's
// last checkpoint at once). Both costs are reported per step and in the summary.
TEST(Training, CheckpointsAreWrittenInTheBackgroundAndNamedAStepLater) {
  const Plan plan = testing_support::tiny_plan({{0, 4}}, {"us-east"});
  TrainConfig cfg = testing_support::tiny_config(5);
  cfg.checkpoint_dir = fresh_dir("ckpt_async");
  cfg.checkpoint_every = 2;
  const TrainResult r = run_training(plan, cfg, nullptr);
  ASSERT_EQ(r.steps.size(), 5u);
  // Step 2 copies (blocked, nothing written yet), step 3 names it (its write time reported), step
  // 4 copies, step 5 names step 4's, then copies and names its own (the run's last).
  const std::vector<bool> blocked = {false, true, true, true, true}, written = {false, false, true, false, true};
  for (size_t i = 0; i < 5; ++i) {
    EXPECT_EQ(r.steps[i].checkpoint_blocked_s > 0, blocked[i]) << "step " << i + 1;
    EXPECT_EQ(r.steps[i].checkpoint_write_s > 0, written[i]) << "step " << i + 1;
  }
  const auto m = read_manifest(cfg.checkpoint_dir);
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->step, 5);
  for (int step : {2, 4, 5}) EXPECT_TRUE(fs::exists(stage_checkpoint_path(cfg.checkpoint_dir, step, 0))) << step;
  EXPECT_NE(r.summary.find("checkpoints: 3, the loop blocked "), std::string::npos) << r.summary;
  EXPECT_NE(r.summary.find("files written in the background in "), std::string::npos) << r.summary;
  // The last checkpoint (named at once) resumes at its step.
  TrainConfig resume = cfg;
  resume.resume = true;
  resume.iters = 5;
  EXPECT_EQ(run_training(plan, resume, nullptr).first_step, 5);
}

// A checkpoint the writer thread cannot write stops the run when it was to be named, saying
// which rank and why; no manifest names it.
TEST(Training, ACheckpointThatCannotBeWrittenStopsTheRunNamingTheRank) {
  const Plan plan = testing_support::tiny_plan({{0, 4}}, {"us-east"});
  TrainConfig cfg = testing_support::tiny_config(4);
  cfg.checkpoint_dir = fresh_dir("ckpt_unwritable");
  cfg.checkpoint_every = 2;
  fs::create_directories(cfg.checkpoint_dir);
  std::ofstream(cfg.checkpoint_dir + "/step-000002") << "a file where the step's folder goes";
  try {
    run_training(plan, cfg, nullptr);
    FAIL() << "the run went on without its checkpoint";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("checkpoint of step 2: rank 0 could not write its files: "), std::string::npos)
        << e.what();
    EXPECT_NE(std::string(e.what()).find("no manifest names it ("), std::string::npos)
        << e.what();
  }
  EXPECT_FALSE(read_manifest(cfg.checkpoint_dir).has_value());
}

// Resharding keeps the model: a checkpoint of another model shape is refused before anything
// loads, naming the manifest field and the first tensor that differs.
TEST(Training, ResumeOfAnotherModelIsRefusedNamingTheFirstMismatchingTensor) {
  TrainConfig cfg = testing_support::tiny_config(1);
  cfg.checkpoint_dir = fresh_dir("ckpt_other_model");
  cfg.checkpoint_every = 1;
  const Plan one = testing_support::tiny_plan({{0, 4}}, {"us-east"});
  run_training(one, cfg, nullptr);
  TrainConfig resume = cfg;
  resume.resume = true;
  auto refusal = [&](const std::string& field, int value) {
    nlohmann::json doc = to_json(one);
    doc["job"]["model"][field] = value;
    if (field == "layers") doc["stages"][0]["layers"] = {0, value};
    try {
      run_training(parse_plan(doc, "other.json"), resume, nullptr);
    } catch (const InputError& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  EXPECT_NE(refusal("layers", 3).find("model.n_layer: the checkpoint's model has n_layer 4, the plan's 3: "
                                      "transformer.h.3.* is in the checkpoint, not in the plan's model"),
            std::string::npos);
  EXPECT_NE(refusal("layers", 6).find("the plan's transformer.h.4.* is not in the checkpoint"), std::string::npos);
  EXPECT_NE(refusal("d_model", 64).find("model.n_embd: the checkpoint's model has n_embd 32, the plan's 64: "
                                        "transformer.wte.weight is [256, 32] in the checkpoint, [256, 64] in the "
                                        "plan's model"),
            std::string::npos);
  EXPECT_NE(refusal("heads", 4).find("model.n_head: the checkpoint's model has n_head 2, the plan's 4"),
            std::string::npos);
  EXPECT_EQ(run_training(one, resume, nullptr).first_step, 1);  // its own model loads
}

TEST(Training, ExportGathersOneNanoGptCheckpointWithEveryParameter) {
  Plan plan = testing_support::tiny_plan({{0, 2}}, {"us-east"});
  TrainConfig cfg = testing_support::tiny_config(1);
  cfg.checkpoint_dir = fresh_dir("ckpt_export");
  cfg.checkpoint_every = 1;
  run_training(plan, cfg, nullptr);
  std::string out = testing::TempDir() + "/export.pt";
  EXPECT_EQ(export_checkpoint(cfg.checkpoint_dir, plan.job.model, out), 1);
  std::ifstream f(out, std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  c10::IValue v = torch::jit::pickle_load(bytes);
  auto root = v.toGenericDict();
  EXPECT_EQ(root.at("model").toGenericDict().size(), 2u + 2 * 12 + 3);
  EXPECT_EQ(root.at("model_args").toGenericDict().at("n_head").toInt(), 2);
  EXPECT_EQ(root.at("iter_num").toInt(), 1);
  // A model shape the checkpoint does not have is refused.
  ModelSpec wider = plan.job.model;
  wider.d_model = 64;
  EXPECT_THROW(export_checkpoint(cfg.checkpoint_dir, wider, out), Error);
}

TEST(Training, ScheduleFileMustMatchThePlan) {
  Plan plan = testing_support::tiny_plan({{0, 2}}, {"us-east"});
  std::string path = testing::TempDir() + "/two_stage_schedule.txt";
  std::ofstream(path) << format_schedule(gpipe_schedule(2, 4));
  TrainConfig cfg = testing_support::tiny_config(1);
  cfg.schedule_file = path;
  EXPECT_THROW(run_training(plan, cfg, nullptr), InputError);
  std::ofstream(path) << "0F0 0F1 0F2 0F3 0B3 0B2 0B1 0B0 0OPT\n";  // reversed backwards: valid
  EXPECT_NO_THROW(run_training(plan, cfg, nullptr));
}

TEST(Training, ScheduleFileInTorchsCsvRunsSplitBackwardGivesTheSameLossesAndOtherShapesAreRefused) {
  Plan plan = testing_support::tiny_plan({{0, 2}}, {"us-east"});
  std::string path = testing::TempDir() + "/one_rank_schedule.csv";
  TrainConfig cfg = testing_support::tiny_config(3);
  cfg.schedule_file = path;
  std::ofstream(path, std::ios::binary) << "0F0,0F1,,0F2,0F3,0B3,0B2,0B1,0B0\r\n";  // no OPT: appended
  const TrainResult full = run_training(plan, cfg, nullptr);
  // The same steps with the backward split into I and W (zero bubble's order on one rank).
  std::ofstream(path, std::ios::binary) << format_schedule_csv(zb_h1_schedule(1, 4));
  const TrainResult split = run_training(plan, cfg, nullptr);
  ASSERT_EQ(split.steps.size(), full.steps.size());
  for (size_t i = 0; i < full.steps.size(); ++i)
    EXPECT_NEAR(split.steps[i].loss, full.steps[i].loss, 1e-6 * full.steps[i].loss) << "step " << i;
  // Two stages on one rank do not fit a one-stage plan.
  std::ofstream(path, std::ios::binary) << format_schedule_csv(zbv_schedule(1, 4));
  try {
    run_training(plan, cfg, nullptr);
    ADD_FAILURE() << "a 2-stage schedule ran a 1-stage plan";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("has 2 stages on 1 ranks, the plan 1 on 1"), std::string::npos) << e.what();
  }
}

TEST(Training, ProfileModeWritesASchedulerProfile) {
  Plan plan = testing_support::tiny_plan({{0, 2}}, {"us-east"});
  std::string out = testing::TempDir() + "/profile.json";
  write_profile(plan, "cpu", out, 2);
  scheduler::Profile p = scheduler::load_profile(out);
  EXPECT_EQ(p.device, "cpu");
  EXPECT_EQ(p.micro_batch, 2);
  EXPECT_GT(p.layer.forward_s, 0);
  EXPECT_GT(p.layer.backward_s, 0);
  EXPECT_GT(p.head.forward_s, 0);
  EXPECT_NO_THROW(scheduler::check_profile_matches(p, plan.job));
}

TEST(Training, BadFlagsAreInputErrors) {
  Plan plan = testing_support::tiny_plan({{0, 2}}, {"us-east"});
  TrainConfig cfg = testing_support::tiny_config(1);
  cfg.codec = "zip";
  EXPECT_THROW(run_training(plan, cfg, nullptr), InputError);
  cfg = testing_support::tiny_config(1);
  cfg.data_file = "/nonexistent.txt";
  EXPECT_THROW(run_training(plan, cfg, nullptr), InputError);
  cfg = testing_support::tiny_config(1);
  cfg.resume = true;  // without a checkpoint folder
  EXPECT_THROW(run_training(plan, cfg, nullptr), InputError);
  Plan two = testing_support::tiny_plan({{0, 1}, {1, 2}}, {"us-east", "us-west"});
  EXPECT_THROW(run_training(two, testing_support::tiny_config(1), nullptr), Error);  // needs MPI
}
