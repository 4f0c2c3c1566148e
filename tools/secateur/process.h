// tools/secateur/process.h — child processes of the `secateur` executable (sweep points, benchmarks).
#pragma once
#include <sys/types.h>

#include <string>
#include <vector>

namespace secateur::tools {

// This executable's path (children run it again).
std::string self_exe();

// Starts args[0] with args, its stdout written to `out` and its stderr to `err` (the same file when
// they are equal); the caller waits for the pid. Error when fork fails.
pid_t spawn_process(const std::vector<std::string>& args, const std::string& out, const std::string& err);

}  // namespace secateur::tools
