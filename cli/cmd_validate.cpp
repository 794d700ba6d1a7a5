#include "commands.h"

#include <geopipe/core/config.h>
#include <geopipe/core/error.h>
#include <geopipe/core/plan.h>

#include <nlohmann/json.hpp>

#include <iostream>
#include <memory>
#include <string>
#include <vector>

namespace geopipe::cli {

namespace {

// Guesses what a document is from its top-level keys.
std::string detect_kind(const nlohmann::json& doc) {
  if (!doc.is_object()) return "";
  if (doc.contains("regions") || (doc.contains("links") && doc.contains("intra_region"))) return "topology";
  if (doc.contains("stages") && doc.contains("version")) return "plan";
  if (doc.contains("jobs")) return "workload";
  if (doc.contains("model")) return "job";
  return "";
}

struct ValidateOptions {
  std::vector<std::string> files;
  std::string kind = "auto";
  std::string topology;  // with plans: also check the plan against this topology
};

// Returns the number of invalid files; prints every problem of each.
int validate_files(const ValidateOptions& o) {
  int bad = 0;
  for (const auto& file : o.files) {
    try {
      nlohmann::json doc = read_json_file(file);
      std::string kind = o.kind == "auto" ? detect_kind(doc) : o.kind;
      if (kind.empty())
        throw InputError(file, "", "cannot tell what this file is (a topology has \"regions\", a job \"model\", "
                                   "a workload \"jobs\", a plan \"version\" and \"stages\"); use --kind");
      std::string summary;
      if (kind == "topology") {
        Topology t = parse_topology(doc, file);
        summary = "topology \"" + t.name + "\": " + std::to_string(t.num_regions()) + " regions, " +
                  std::to_string(t.total_gpus()) + " GPUs, " + std::to_string(t.links.size()) + " links, hash " + t.hash();
      } else if (kind == "job") {
        JobSpec j = parse_job(doc, file);
        summary = "job \"" + j.name + "\": " + std::to_string(j.model.layers) + " layers, d_model " +
                  std::to_string(j.model.d_model) + ", stages " + std::to_string(j.min_stages) + ".." +
                  std::to_string(j.max_stages);
      } else if (kind == "workload") {
        Workload w = parse_workload(doc, file);
        summary = "workload \"" + w.name + "\": " + std::to_string(w.jobs.size()) + " jobs";
      } else if (kind == "plan") {
        Plan p = parse_plan(doc, file);
        if (!o.topology.empty()) check_plan_against(p, load_topology(o.topology), file);
        summary = "plan for job \"" + p.job.name + "\": " + std::to_string(p.num_stages()) + " stages, " +
                  std::to_string(p.world_size()) + " ranks, schedule " + p.schedule.kind;
      } else {
        throw InputError("--kind", "", "expected auto, topology, job, workload or plan, got \"" + kind + "\"");
      }
      std::cout << file << ": ok (" << summary << ")\n";
    } catch (const InputError& e) {
      ++bad;
      for (const auto& d : e.diagnostics()) std::cerr << d.str() << "\n";
    }
  }
  return bad;
}

}  // namespace

void register_validate(CLI::App& app, int& exit_code) {
  auto o = std::make_shared<ValidateOptions>();
  auto* cmd = app.add_subcommand("validate",
                                 "Check topology, job, workload and plan files; report every problem found");
  cmd->add_option("files", o->files, "JSON files to check")->required()->check(CLI::ExistingFile);
  cmd->add_option("--kind", o->kind, "What the files are (default: detected from their fields)")
      ->check(CLI::IsMember({"auto", "topology", "job", "workload", "plan"}));
  cmd->add_option("--topology", o->topology, "With plans: also check each plan matches this topology")
      ->check(CLI::ExistingFile);
  cmd->callback([o, &exit_code] { exit_code = validate_files(*o) == 0 ? kExitOk : kExitBadInput; });
}

}  // namespace geopipe::cli
