// runtime/eval/generate.h — autoregressive generation with the KV cache: greedy or top-p.
#pragma once
#include <cstdint>
#include <vector>

#include "runtime/model/decoder.h"

namespace secateur::eval {

struct GenerateOptions {
  int64_t max_new_tokens = 32;
  bool greedy = true;
  double top_p = 0.9;
  double temperature = 1.0;
  uint64_t seed = 0;
  int64_t stop_id = -1;          // stop after emitting this id (eos); -1 = never
};

struct GenerateResult {
  std::vector<int32_t> ids;      // the new tokens only
  double prefill_seconds = 0.0;
  double decode_seconds = 0.0;
  double decode_tokens_per_second = 0.0;
};

GenerateResult generate(const model::Decoder& model, const std::vector<int32_t>& prompt, const GenerateOptions& opt);

}  // namespace secateur::eval
