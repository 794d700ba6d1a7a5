// The `geopipe` command: one binary, one file per subcommand. Each register_* adds its
// subcommand to the app; the callback runs the command and stores its exit code.
#pragma once

#include <CLI/CLI.hpp>

namespace geopipe::cli {

void register_version(CLI::App& app, int& exit_code);
void register_validate(CLI::App& app, int& exit_code);
void register_plan(CLI::App& app, int& exit_code);
void register_simulate(CLI::App& app, int& exit_code);
void register_launch(CLI::App& app, int& exit_code);
void register_report(CLI::App& app, int& exit_code);

}  // namespace geopipe::cli
