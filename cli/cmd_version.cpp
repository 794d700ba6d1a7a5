#include "commands.h"

#include <geopipe/kernels/blas.h>
#include <geopipe/kernels/device.h>

#include <iostream>

namespace geopipe::cli {

void register_version(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("version", "Print the version and what this build supports");
  cmd->callback([&exit_code] {
    const kernels::BlasInfo info = kernels::blas_info();
    std::cout << "geopipe " << GEOPIPE_VERSION << "\n"
              << "cuda kernels: " << (kernels::built_with_cuda() ? "built" : "not built") << "\n"
              << "gpu: " << kernels::cuda_describe() << "\n"
              // What LibTorch's CPU matrix products run on (libblas.so.3 as this machine resolves it).
              << "blas: " << kernels::describe(info) << "\n";
    if (!info.config.empty()) std::cout << "blas config: " << info.config << "\n";
    exit_code = 0;
  });
}

}  // namespace geopipe::cli
