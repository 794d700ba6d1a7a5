#include "commands.h"

#include <geopipe/core/error.h>
#include <geopipe/core/log.h>

#include <iostream>

int main(int argc, char** argv) {
  geopipe::log::init();
  CLI::App app{"geopipe: pipeline-parallel LLM training across cloud regions"};
  app.require_subcommand(1);
  int exit_code = geopipe::kExitOk;
  geopipe::cli::register_version(app, exit_code);
  geopipe::cli::register_validate(app, exit_code);
  geopipe::cli::register_plan(app, exit_code);
  geopipe::cli::register_simulate(app, exit_code);
  geopipe::cli::register_launch(app, exit_code);
  geopipe::cli::register_report(app, exit_code);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    // A bad flag is bad input: exit 2 like every other input error.
    app.exit(e);
    return geopipe::kExitBadInput;
  } catch (const geopipe::Error& e) {
    std::cerr << "geopipe: error: " << e.what() << "\n";
    return e.exit_code();
  } catch (const std::exception& e) {
    std::cerr << "geopipe: error: " << e.what() << "\n";
    return geopipe::kExitFailure;
  }
  return exit_code;
}
