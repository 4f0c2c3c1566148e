// runtime/eval/speed.h — is the pruned model actually faster? Prefill and decode speed of a
// model, measured the way generation runs (runtime/eval/generate.h: the prompt in one pass that
// fills the KV cache, then one token per step), plus the arithmetic it costs per token.
//   prefill: `batch` prompts of `prompt_tokens` seeded-random ids; decode: `decode_tokens` greedy
//   steps after it (one token per prompt each). One warm-up, then the median of `iters` runs.
//   MACs per token: every weight matrix once (q, k, v, o, the MLP, the LM head) plus attention's
//   two products (QKᵀ and AV) against a context of `context` positions.
#pragma once
#include <chrono>
#include <cstdint>
#include <vector>

#include "runtime/model/decoder.h"

namespace secateur::eval {

struct SpeedOptions {
  int64_t prompt_tokens = 256;
  int64_t decode_tokens = 32;
  int64_t iters = 3;
  uint64_t seed = 0;
  int64_t batch = 1;
};

struct SpeedResult {
  double prefill_tokens_per_second = 0, prefill_ms = 0;        // the whole prompt (every row)
  double decode_tokens_per_second = 0, decode_ms_per_token = 0; // per row: steps/s, ms per step
  int64_t params = 0;
  double macs_per_token = 0;
};

// The median of repeated measurements (the upper one of an even count), as every benchmark reports them.
double median(std::vector<double> v);
double seconds_since(std::chrono::steady_clock::time_point t);
// Waits until the device has finished the work queued on it (nothing to wait for on the CPU), so a
// timer read after it counts that work.
void synchronize(const at::Device& device);

double macs_per_token(const model::ModelConfig& config, double context);
SpeedResult measure_speed(const model::Decoder& model, const SpeedOptions& opt);

}  // namespace secateur::eval
