// Small plans for the runtime tests: a GPT small enough to train in seconds on 2 cores.
#pragma once

#include "tiny_plan.h"

#include <geopipe/core/plan.h>
#include <geopipe/runtime/trainer.h>

#include <nlohmann/json.hpp>

#include <string>
#include <utility>
#include <vector>

namespace geopipe::testing_support {

inline runtime::TrainConfig tiny_config(int64_t iters) {
  runtime::TrainConfig c;
  c.plan_file = "test-plan.json";
  c.iters = iters;
  c.seed = 1234;
  c.data_file = std::string(GEOPIPE_SOURCE_DIR) + "/examples/gpt/data/kjv-pentateuch.txt";
  c.progress = false;
  c.optim.lr = 3e-3;
  c.optim.warmup_steps = 2;
  c.comm_timeout_s = 60;
  return c;
}

}  // namespace geopipe::testing_support
