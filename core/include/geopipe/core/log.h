// Logging through spdlog. Every line carries the rank and region once MPI is up
// (set_rank_context); GEOPIPE_LOG_LEVEL=trace|debug|info|warn|error sets the level.
#pragma once

#include <spdlog/spdlog.h>

#include <string>

namespace geopipe::log {

// Reads GEOPIPE_LOG_LEVEL and installs the default pattern. Safe to call more than once.
void init();

// From now on every line is prefixed "[rank R region NAME]".
void set_rank_context(int rank, const std::string& region);

}  // namespace geopipe::log
