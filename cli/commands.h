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

// --max-slowdown X, shared by `plan` and `simulate`: the allocator may take a placement up to X
// slower than the fastest feasible one when it is cheaper. A negative or non-numeric X is a
// parse error (exit 2) naming the flag.
inline constexpr double kMaxSlowdownLimit = 100;  // finite: the simulator's waits end (a 101x slowdown is no bound)
inline CLI::Option* add_max_slowdown_option(CLI::App* cmd, double& value) {
  return cmd
      ->add_option("--max-slowdown", value,
                   "Accept a placement at most X slower than the fastest feasible one when it is cheaper "
                   "(iteration time within (1 + X) of the fastest; simulate: BACE may also wait for a cheaper "
                   "placement while its completion stays within (1 + X) of starting now)")
      ->capture_default_str()
      ->check(CLI::Validator(
          [](const std::string& v) {
            double x = 0;
            return CLI::detail::lexical_cast(v, x) && x >= 0 && x <= kMaxSlowdownLimit
                       ? std::string()
                       : "expected 0 <= X <= 100, a fraction (0.25: up to 25 % slower), got " + v;
          },
          "0 <= X <= 100"));
}

}  // namespace geopipe::cli
