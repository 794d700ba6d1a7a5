// `geopipe report RUN_DIR [-o FILE] [--step N]`: one self-contained HTML page of a run
// (report/report.h); bad or mismatched files are InputErrors (exit 2) naming the file.
#include "commands.h"

#include <geopipe/core/error.h>
#include <geopipe/core/run_dir.h>
#include <geopipe/report/report.h>

#include <filesystem>
#include <iostream>
#include <memory>
#include <optional>
#include <string>

namespace geopipe::cli {

namespace {

struct ReportOptions {
  std::string run_dir, output;
  std::optional<int64_t> step;
};

int run_report(const ReportOptions& o) {
  const report::RunData run = report::load_run(o.run_dir);
  report::RenderOptions ro;
  ro.timeline_step = o.step;
  const std::string html = report::render_run_html(run, ro);
  const std::string out = o.output.empty() ? (std::filesystem::path(o.run_dir) / run_dir::kReport).string() : o.output;
  report::write_html(out, html);
  const int stages = run.plan.num_stages();
  std::cout << "report: " << out << " (" << run.steps.size() << " step" << (run.steps.size() == 1 ? "" : "s") << ", "
            << stages << " stage" << (stages == 1 ? "" : "s") << "; open it in any browser, it needs no network)\n";
  return kExitOk;
}

}  // namespace

void register_report(CLI::App& app, int& exit_code) {
  auto o = std::make_shared<ReportOptions>();
  auto* cmd = app.add_subcommand("report", "One self-contained HTML page of a run directory (geopipe-train --run-dir)");
  cmd->add_option("RUN_DIR", o->run_dir, "Run directory: plan.json, train.jsonl, trace.json, ...")->required();
  const auto folder_exists = [](const std::string& path) {  // refuse before reading the run
    const auto folder = std::filesystem::path(path).parent_path();
    return folder.empty() || std::filesystem::is_directory(folder) ? std::string()
                                                                   : "folder " + folder.string() + " does not exist";
  };
  cmd->add_option("-o,--output", o->output, "HTML file to write (default RUN_DIR/report.html)")->check(folder_exists);
  cmd->add_option("--step", o->step, "Step whose schedule the timeline shows (default: the last in the trace)")
      ->check(CLI::PositiveNumber);
  cmd->callback([o, &exit_code] { exit_code = run_report(*o); });
}

}  // namespace geopipe::cli
