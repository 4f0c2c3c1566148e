// tools/secateur/bench_train.h — `secateur bench train`: recovery-training throughput and model
// FLOPs utilisation (MFU) for LoRA, LoRA + distillation and full fine-tuning, on the grid.
//
// Each method trains a fresh copy of the model for 1 + steps steps of `batch` sequences of `seq`
// tokens (random ids: throughput does not depend on them); the first step warms up, the median of
// the others is reported. Model FLOPs per token, counting matrix products only (2 per MAC):
//   F  = 2 · macs_per_token(config, (seq + 1) / 2)     one forward (eval/speed.h; causal attention
//                                                      sees (seq + 1) / 2 positions on average)
//   full fine-tuning: 3F     (forward, input gradients, weight gradients)
//   LoRA:             2F + 6 · Σ r · (in + out)        (frozen weights need input gradients only;
//                                                       the adapters' forward and both gradients)
//   + distillation:   + F_teacher                      (the teacher's forward, no gradients)
// MFU = model FLOPs per second / the peak: a dense matrix product (square, `peak_n`) of the same
// dtype on the same device and threads, measured in the same run before and after the methods
// (the higher counts). The peak and every rate are per rank; the world's tokens/s is reported too.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace secateur::parallel {
class Grid;
}

namespace secateur::tools {

struct BenchTrainOptions {
  std::string model;               // a .gguf or HF directory, or random:<model::named_shape>
  std::vector<std::string> methods = {"lora", "lora_kd", "full"};
  int64_t steps = 3, batch = 8, micro_batch = 4, seq = 128, threads = 0, peak_n = 2048;
  std::string dtype = "float32", device = "cpu";
  int tp = 0;                      // the tp the grid was built with (checked when > 0)
  std::string out;                 // JSON; "" = stdout only
};

int bench_train(parallel::Grid& grid, const BenchTrainOptions& opt);

}  // namespace secateur::tools
