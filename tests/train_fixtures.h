// tests/train_fixtures.h — what the training tests train on: a small LLaMA and a learnable stream.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

#include "runtime/model/config.h"

namespace secateur::tests {

// 3 layers, d 48, 8 query / 4 kv heads of 6, vocabulary 103, untied; per-layer MLP widths.
inline model::ModelConfig tiny_llama(std::vector<int64_t> d_ff = {30, 7, 13}) {
  auto c = model::ModelConfig::make(model::Family::llama, 103, 48, 3, 8, 4, 30);
  c.head_dim = 6;
  c.tied_embeddings = false;
  c.d_ff = std::move(d_ff);
  return c;
}

// A fixed random cycle of 40 tokens, repeated to n tokens: a model can learn it.
inline std::vector<int32_t> token_stream(int n = 3000) {
  at::manual_seed(17);
  const at::Tensor cycle = at::randint(103, {40}, at::kInt);
  std::vector<int32_t> out;
  for (int i = 0; i < n; ++i) out.push_back(cycle[i % 40].item<int32_t>());
  return out;
}

}  // namespace secateur::tests
