// A run directory written the way geopipe-train --run-dir writes one, with made-up numbers a
// test can reason about: the 4-stage local4 plan, 6 steps, validation at steps 3 and 6, a trace
// where every rank runs F0 F1 SEND/RECV B1 B0 OPT per step with known durations.
#pragma once

#include <geopipe/core/config.h>
#include <geopipe/core/plan.h>
#include <geopipe/core/run_dir.h>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <string>

namespace geopipe::test_support {

inline std::string source_path(const std::string& rel) { return std::string(GEOPIPE_SOURCE_DIR) + "/" + rel; }

struct FakeRun {
  int steps = 6;
  bool restart_after_3 = false;    // steps 4.. logged by a resumed run (elapsed time starts again)
  bool codec_change_at_5 = false;  // the log names link 0->1's codec, int8-block from step 5
  bool restart_line = false;       // with restart_after_3: the supervisor's restart line before step 4
};

// The line `geopipe launch --max-restarts --replan` appends before relaunching (launch/supervise.h).
inline std::string fake_restart_line() {
  return nlohmann::json{{"restart", 1},
                        {"cause", "rank 2 timed out waiting for rank 3, which waited for rank 2 (waits in a ring "
                                  "across regions: cut link(s) ap-southeast <-> eu-central); links cut: region "
                                  "ap-southeast is partitioned from the others"},
                        {"plan", "plan.restart-1.json"},
                        {"lost_regions", {"ap-southeast"}},
                        {"resume_step", 3},
                        {"steps_redone", 2},
                        {"seconds_lost", 6.25}}
             .dump() +
         "\n";
}

inline void write_text(const std::filesystem::path& p, const std::string& text) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << text;
}

// Per step and rank, microseconds: F 1000, F 1000, SEND 100, RECV wait 400, B 2000, B 2000,
// OPT 500, with 1000 idle before the step: each step is a window of 7000 us of which
// 6500 compute, 500 communication, no idle inside the window.
inline nlohmann::json fake_trace(const Plan& plan, int steps, int first_step) {
  nlohmann::json events = nlohmann::json::array();
  for (int rank = 0; rank < plan.world_size(); ++rank) {
    events.push_back({{"name", "process_name"}, {"ph", "M"}, {"pid", rank}, {"tid", 0},
                      {"args", {{"name", "rank " + std::to_string(rank) + " stage " + std::to_string(rank)}}}});
    double t = 1.7e15 + 50.0 * rank;
    for (int s = 0; s < steps; ++s) {
      t += 1000;  // between steps: evaluation, checkpoints, logging
      for (const auto& [name, dur] : std::vector<std::pair<std::string, double>>{
               {"F0", 1000}, {"F1", 1000}, {"SEND_F1", 100}, {"RECV_B1 wait", 400}, {"B1", 2000}, {"B0", 2000}, {"OPT", 500}}) {
        events.push_back({{"name", name}, {"ph", "X"}, {"pid", rank}, {"tid", 0}, {"ts", t}, {"dur", dur}});
        t += dur;
      }
    }
    events.push_back({{"name", "F0"}, {"ph", "X"}, {"pid", rank}, {"tid", 0}, {"ts", t + 10}, {"dur", 5}});  // unfinished step
  }
  return {{"traceEvents", events},
          {"displayTimeUnit", "ms"},
          {"otherData", {{"plan_hash", plan.hash()}, {"first_step", first_step}}}};
}

inline std::string fake_log(const FakeRun& f) {
  std::string out;
  double elapsed = 0;
  for (int s = 1; s <= f.steps; ++s) {
    if (f.restart_after_3 && s == 4) elapsed = 0;
    if (f.restart_after_3 && f.restart_line && s == 4) out += fake_restart_line();
    elapsed += 0.5;
    nlohmann::json j = {{"step", s}, {"loss", 5.5 - 0.25 * s}, {"lr", 1e-3}, {"grad_norm", 1.5},
                        {"tokens_per_s", 8000 + 10 * s}, {"step_s", 0.5}, {"elapsed_s", elapsed}};
    if (s % 3 == 0) j["val_loss"] = 5.6 - 0.25 * s;
    nlohmann::json links = nlohmann::json::object();
    for (int b = 0; b < 3; ++b) {
      const std::string fwd = std::to_string(b) + "->" + std::to_string(b + 1);
      const std::string bwd = std::to_string(b + 1) + "->" + std::to_string(b);
      links[fwd] = {{"mb_per_s", 10.0 + s}, {"wait_s", 0.01}, {"busy_s", 0.1}, {"bytes", 1e6}};
      links[bwd] = {{"mb_per_s", 20.0 + s}, {"wait_s", 0.02}, {"busy_s", 0.05}, {"bytes", 1e6}};
    }
    if (f.codec_change_at_5) links["0->1"]["codec"] = s >= 5 ? "int8-block" : "none";
    j["links"] = links;
    out += j.dump() + "\n";
  }
  return out;
}

// Writes DIR as geopipe-train --run-dir does; returns the plan.
inline Plan write_fake_run(const std::filesystem::path& dir, const FakeRun& f = {}) {
  namespace fs = std::filesystem;
  fs::create_directories(dir);
  fs::copy_file(source_path("examples/topologies/local4.json"), dir / run_dir::kTopology,
                fs::copy_options::overwrite_existing);
  // The hand-written plan, stamped with local4's hash as `geopipe plan` would stamp it.
  Plan plan = load_plan(source_path("tests/data/good/plan_local4_manual.json"));
  plan.provenance.topology_hash = load_topology((dir / run_dir::kTopology).string()).hash();
  save_plan(plan, (dir / run_dir::kPlan).string());
  write_text(dir / run_dir::kStepLog, fake_log(f));
  write_text(dir / run_dir::kTrace, fake_trace(plan, f.restart_after_3 ? f.steps - 3 : f.steps,
                                               f.restart_after_3 ? 3 : 0).dump());
  write_text(dir / run_dir::kRunInfo,
             nlohmann::json{{"command", {"geopipe-train", "--plan", "plan.json", "--run-dir", "run"}},
                            {"start_time", "2026-01-01T00:00:00Z"}, {"plan_hash", plan.hash()}, {"world_size", 4},
                            {"link_codecs", {{"0->1", "none"}, {"1->0", "none"}}}}
                 .dump());
  write_text(dir / run_dir::kSummary, "summary: 6 steps, final loss 4.0000 <ok & done>\n");
  return plan;
}

}  // namespace geopipe::test_support
