// tools/secateur/bench_forward.h — `secateur bench forward`: prefill and decode speed, peak RSS.
#pragma once
#include <cstdint>
#include <string>

namespace secateur::tools {

struct BenchForwardOptions {
  std::string model;
  int64_t batch = 1, seq = 512, iters = 3, threads = 0;
  std::string dtype = "float32";
  std::string device = "cpu";      // cpu | cuda
  bool backward = false;           // forward + backward of the summed NLL (the floor of gradient scoring)
  int64_t decode = 0;              // greedy KV-cached steps after a prefill of seq (0: none)
  std::string out;                 // JSON; "" = stdout only
};

int bench_forward(const BenchForwardOptions& opt);

}  // namespace secateur::tools
