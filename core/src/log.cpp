#include <geopipe/core/log.h>

#include <spdlog/sinks/stdout_color_sinks.h>

#include <cstdlib>
#include <mutex>

namespace geopipe::log {

namespace {
std::once_flag g_init_once;

spdlog::level::level_enum level_from_env() {
  const char* env = std::getenv("GEOPIPE_LOG_LEVEL");
  if (!env || !*env) return spdlog::level::info;
  auto level = spdlog::level::from_str(env);
  // from_str maps unknown names to "off"; an unknown level must not silence the job.
  if (level == spdlog::level::off && std::string(env) != "off") return spdlog::level::info;
  return level;
}
}  // namespace

void init() {
  std::call_once(g_init_once, [] {
    // Logs go to stderr so that stdout stays clean for tables and JSON.
    auto logger = spdlog::stderr_color_mt("geopipe");
    spdlog::set_default_logger(logger);
    spdlog::set_pattern("[%H:%M:%S.%e] [%^%l%$] %v");
  });
  spdlog::set_level(level_from_env());
}

void set_rank_context(int rank, const std::string& region) {
  init();
  // The prefix is part of the pattern so every line, from every library, carries it.
  std::string prefix = "[rank " + std::to_string(rank) + (region.empty() ? "" : " " + region) + "]";
  spdlog::set_pattern("[%H:%M:%S.%e] [%^%l%$] " + prefix + " %v");
}

}  // namespace geopipe::log
