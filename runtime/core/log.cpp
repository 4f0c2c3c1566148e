#include "runtime/core/log.h"

#include <spdlog/sinks/stdout_color_sinks.h>

#include <cstdlib>

#include "runtime/core/check.h"

namespace secateur::log {

namespace {
int g_rank = 0, g_world = 1;

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::atoi(v) : fallback;
}
}  // namespace

std::pair<int, int> rank_from_env() {
  for (auto [r, w] : {std::pair{"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"}, std::pair{"PMI_RANK", "PMI_SIZE"},
                      std::pair{"SLURM_PROCID", "SLURM_NTASKS"}}) {
    if (std::getenv(r)) return {env_int(r, 0), env_int(w, 1)};
  }
  return {0, 1};
}

void init(int rank, int world, const std::string& level) {
  g_rank = rank;
  g_world = world;
  auto logger = spdlog::stderr_color_mt("secateur");
  logger->set_pattern(fmt::format("[%H:%M:%S] [rank {}/{}] %^%l%$ %v", rank, world));
  const spdlog::level::level_enum lv = spdlog::level::from_str(level);
  SECATEUR_CHECK(level == "info" || lv != spdlog::level::info, "[log] unknown level '{}'", level);
  logger->set_level(rank == 0 ? lv : std::max(lv, spdlog::level::warn));
  spdlog::set_default_logger(logger);
}

int rank() { return g_rank; }
int world() { return g_world; }

}  // namespace secateur::log
