// tools/secateur/memory.h — `secateur memory`: the memory model of runtime/model/memory.h for a
// shape or a model at several TP sizes, as a table (and JSON): what a prune, and a recovery after
// it, will need per rank.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace secateur::tools {

struct MemoryOptions {
  std::string shape;                 // as `secateur init --shape`, or a model
  std::vector<int> tp = {1, 2, 4, 8};
  int dp = 1;
  std::string dtype = "bfloat16";
  int64_t samples = 10, seq = 64;
  bool recompute = true;
  std::string criterion = "taylor_element1";   // prune.criterion: what its calibration keeps
  std::string scope = "per_layer";             // prune.scope
  double ratio = 0.2, base_mib = 480;
  // Recovery: methods among lora, full, lora_kd, full_kd (none: the prune path only), and its sizes.
  std::vector<std::string> recover;
  int64_t micro_batch = 4, train_seq = 128, lora_rank = 8;
  std::string out;                   // JSON; "" = the table only
};

int memory_report(const MemoryOptions& opt);

}  // namespace secateur::tools
