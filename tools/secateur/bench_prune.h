// tools/secateur/bench_prune.h — `secateur bench prune`: the whole `secateur prune` process of each
// criterion against its floor, in one run. The floor process loads the same model and runs one
// forward+backward over as many tokens as the calibration uses (`bench forward --backward`, whose
// timed step is taken off). Wall time and peak RSS of whole child processes (wait4), the median
// of --rounds alternating rounds, each criterion's ratio to the floor.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace secateur::tools {

struct BenchPruneOptions {
  std::string model = "data/models/SmolLM2-135M-Instruct.Q4_1.gguf";
  std::vector<std::string> criteria = {"taylor_element1", "taylor_vector", "taylor_element2", "taylor_mixed",
                                       "activation", "l2"};
  std::vector<std::string> overrides;   // more key=value for every `secateur prune` (e.g. prune.ratio=0.5)
  int64_t rounds = 3, threads = 2;
  std::string out;                      // JSON; "" = stdout only
};

int bench_prune(const BenchPruneOptions& opt);

}  // namespace secateur::tools
