// runtime/model/shapes.cpp — the shape table (see shapes.h).
#include "runtime/model/shapes.h"

#include <fmt/ranges.h>

#include <vector>

#include "runtime/core/check.h"

namespace secateur::model {

namespace {

struct Shape {
  const char* name;
  const char* arch;
  int64_t vocab, hidden, layers, heads, kv_heads, d_ff, max_positions;
  double rope_theta, norm_eps;
  bool tied;
};

// From each model's config.json.
const std::vector<Shape>& shapes() {
  static const std::vector<Shape> s = {
      {"llama-3.2-1b", "llama", 128256, 2048, 16, 32, 8, 8192, 131072, 500000.0, 1e-5, true},
      {"llama-2-7b", "llama", 32000, 4096, 32, 32, 32, 11008, 4096, 10000.0, 1e-5, false},
      {"llama-2-13b", "llama", 32000, 5120, 40, 40, 40, 13824, 4096, 10000.0, 1e-5, false},
      {"llama-3-8b", "llama", 128256, 4096, 32, 32, 8, 14336, 8192, 500000.0, 1e-5, false},
      {"llama-2-70b", "llama", 32000, 8192, 80, 64, 8, 28672, 4096, 10000.0, 1e-5, false},
      {"qwen2.5-0.5b", "qwen2", 151936, 896, 24, 14, 2, 4864, 32768, 1000000.0, 1e-6, true},
      {"qwen2.5-1.5b", "qwen2", 151936, 1536, 28, 12, 2, 8960, 32768, 1000000.0, 1e-6, true},
  };
  return s;
}

}  // namespace

ModelConfig named_shape(const std::string& name) {
  for (const Shape& s : shapes()) {
    if (name != s.name) continue;
    ModelConfig c = ModelConfig::make(Family::llama, s.vocab, s.hidden, s.layers, s.heads, s.kv_heads, s.d_ff);
    c.arch = s.arch;
    c.max_positions = s.max_positions;
    c.rope_theta = s.rope_theta;
    c.norm_eps = s.norm_eps;
    c.tied_embeddings = s.tied;
    return c;
  }
  SECATEUR_FAIL("[model/shapes] unknown shape '{}' (known: {})", name, shape_names());
}

std::string shape_names() {
  std::vector<std::string> names;
  for (const Shape& s : shapes()) names.emplace_back(s.name);
  return fmt::format("{}", fmt::join(names, ", "));
}

}  // namespace secateur::model
