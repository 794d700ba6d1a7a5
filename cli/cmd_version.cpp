#include "commands.h"

#include <geopipe/kernels/device.h>

#include <iostream>

namespace geopipe::cli {

void register_version(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("version", "Print the version and what this build supports");
  cmd->callback([&exit_code] {
    std::cout << "geopipe " << GEOPIPE_VERSION << "\n"
              << "cuda kernels: " << (kernels::built_with_cuda() ? "built" : "not built") << "\n"
              << "gpu: " << kernels::cuda_describe() << "\n";
    exit_code = 0;
  });
}

}  // namespace geopipe::cli
