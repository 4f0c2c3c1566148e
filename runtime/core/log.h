// runtime/core/log.h — spdlog set up once per process with a "[rank r/N]" prefix.
// Rank 0 logs from the configured level; other ranks log warnings and errors only.
#pragma once
#include <spdlog/spdlog.h>

#include <string>

namespace secateur::log {

void init(int rank, int world, const std::string& level = "info");
int rank();
int world();

// Rank and world size from the launcher's environment (OpenMPI, Slurm, PMI), before any MPI
// call; a process started without a launcher is rank 0 of 1.
std::pair<int, int> rank_from_env();

}  // namespace secateur::log
