// Checkpoints as Python PyTorch sees them: trains a tiny GPT with the project's trainer, writes
// per-stage checkpoints and nanoGPT-layout exports, then runs torch_load_check.py, which
// torch.load()s every file and rebuilds the model as a plain-PyTorch nanoGPT forward pass whose
// loss must equal the C++ model's on the same batch. Skips when no python3 can import torch.
#include "test_plan.h"

#include <geopipe/runtime/checkpoint.h>
#include <geopipe/runtime/gpt.h>
#include <geopipe/runtime/trainer.h>

#include "../support/run_command.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

using namespace geopipe;
using namespace geopipe::runtime;
namespace fs = std::filesystem;

namespace {

using CommandOutput = geopipe::test_support::CommandResult;

CommandOutput run(const std::string& command) { return geopipe::test_support::run_command(command); }

// $GEOPIPE_PYTHON, else the first of python3 on PATH and the system's python3 that imports torch.
std::string python_with_torch() {
  std::vector<std::string> candidates;
  if (const char* env = std::getenv("GEOPIPE_PYTHON")) candidates.emplace_back(env);
  candidates.insert(candidates.end(), {"python3", "/usr/bin/python3"});
  for (const auto& py : candidates)
    if (run(py + " -c 'import torch'").exit_code == 0) return py;
  return "";
}

std::string fresh_dir(const std::string& name) {
  std::string d = testing::TempDir() + "/" + name;
  fs::remove_all(d);
  return d;
}

}  // namespace

TEST(TorchLoad, PythonLoadsCheckpointsAndExportAndNanoGptForwardGivesTheSameLoss) {
  const std::string python = python_with_torch();
  if (python.empty()) GTEST_SKIP() << "no python3 with torch (Debian: python3-torch)";

  // Train a 2-layer GPT in one stage long enough that its weights are far from initialisation
  // (so a forward pass that differs from ours in any detail gives another loss).
  Plan plan = testing_support::tiny_plan({{0, 2}}, {"us-east"});
  TrainConfig cfg = testing_support::tiny_config(12);
  cfg.optim.lr = 3e-2;
  cfg.checkpoint_dir = fresh_dir("torch_load_1stage");
  cfg.checkpoint_every = 12;
  run_training(plan, cfg, nullptr);
  const std::string export1 = testing::TempDir() + "/torch_load_export1.pt";
  ASSERT_EQ(export_checkpoint(cfg.checkpoint_dir, plan.job.model, export1), 12);

  // The trained parameters, read back with our own loader.
  const GptConfig gc = gpt_config(plan.job.model);
  auto manifest = read_manifest(cfg.checkpoint_dir);
  ASSERT_TRUE(manifest.has_value());
  StageCheckpoint trained = load_stage_checkpoint(cfg.checkpoint_dir, *manifest, 0);
  GptStage full(gc, 0, gc.n_layer, true, true, 99);
  copy_into(trained.model, full.named_parameters(), "1-stage checkpoint");

  // The same parameters as a 2-stage checkpoint ([0,1) with the embeddings, [1,2) with the head)
  // and its export: the gather across stage files.
  const std::string split_dir = fresh_dir("torch_load_2stage");
  Manifest m2{trained.step, 2, plan.job.name, {}};
  for (auto [b, e] : {std::pair{0, 1}, std::pair{1, 2}}) {
    GptStage part(gc, b, e, b == 0, e == gc.n_layer, 99);
    copy_into(trained.model, part.named_parameters(), "1-stage checkpoint");
    StageCheckpoint ck{b, trained.step, trained.seed, trained.data_position, part.named_parameters(), {}};
    const FileDigest digest = save_stage_checkpoint(split_dir, ck);
    m2.files.push_back({fs::relative(stage_checkpoint_path(split_dir, trained.step, b), split_dir).string(), digest});
  }
  write_manifest(split_dir, m2);
  const std::string export2 = testing::TempDir() + "/torch_load_export2.pt";
  ASSERT_EQ(export_checkpoint(split_dir, plan.job.model, export2), 12);

  // A fixed batch and the C++ model's loss on it.
  at::Tensor tokens = (at::arange(2 * 16, at::TensorOptions().dtype(at::kLong)) * 37 + 11).remainder(256).view({2, 16});
  at::Tensor targets = tokens.roll(-1, 1);
  double loss = 0;
  {
    at::NoGradGuard no_grad;
    loss = GptStage::loss(full.forward(tokens), targets).item<double>();
  }
  auto rows = [](const at::Tensor& t) {
    nlohmann::json j = nlohmann::json::array();
    for (int64_t b = 0; b < t.size(0); ++b) {
      std::vector<int64_t> row(t[b].data_ptr<int64_t>(), t[b].data_ptr<int64_t>() + t.size(1));
      j.push_back(row);
    }
    return j;
  };
  nlohmann::json ref = {
      {"config", {{"n_layer", gc.n_layer}, {"n_head", gc.n_head}, {"n_embd", gc.n_embd},
                  {"block_size", gc.block_size}, {"vocab_size", gc.vocab_size}}},
      {"tokens", rows(tokens.contiguous())},
      {"targets", rows(targets.contiguous())},
      {"loss", loss},
      {"cases", {{{"checkpoint_dir", cfg.checkpoint_dir}, {"num_stages", 1}, {"export", export1}},
                 {{"checkpoint_dir", split_dir}, {"num_stages", 2}, {"export", export2}}}}};
  const std::string ref_file = testing::TempDir() + "/torch_load_reference.json";
  std::ofstream(ref_file) << ref.dump(1);

  CommandOutput r = run(python + " " + GEOPIPE_SOURCE_DIR + "/tests/runtime/torch_load_check.py " + ref_file);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  std::printf("%s", r.output.c_str());
}
