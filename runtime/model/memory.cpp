// runtime/model/memory.cpp — the memory model (see memory.h).
#include "runtime/model/memory.h"

#include <algorithm>
#include <cmath>

#include "runtime/model/shard.h"
#include "runtime/model/spec.h"

namespace secateur::model {

double MemoryEstimate::peak() const { return std::max({load, score, apply, export_}); }

std::vector<MemoryEstimate> estimate_prune_memory(const ModelConfig& full, const MemoryInputs& in) {
  const double b = static_cast<double>(in.dtype_bytes);
  const double tokens = std::ceil(static_cast<double>(in.samples) / in.dp) * static_cast<double>(in.seq);
  std::vector<MemoryEstimate> out;
  for (int rank = 0; rank < in.tp; ++rank) {
    const ShardPlan plan = ShardPlan::make(full, rank, in.tp);
    const ModelConfig local = plan.local_config(full);
    MemoryEstimate e;
    e.rank = rank;
    double largest = 0, embed = 0, head = 0, layers = 0;
    for (const Weight& w : weights(local)) {
      double n = b;
      for (int64_t s : w.shape) n *= static_cast<double>(s);
      e.weights += n;
      if (w.layer >= 0) largest = std::max(largest, n);   // what a cut copies (the embedding and head stay whole)
      if (w.layer >= 0) layers += n;
      if (w.spec->role == Role::embed) embed = n;
      if (w.spec->role == Role::lm_head) head = n;
    }
    const double d = static_cast<double>(full.hidden), L = static_cast<double>(full.n_layers());
    double layer = 0;
    for (int64_t l = 0; l < local.n_layers(); ++l) {
      const double q = static_cast<double>(local.n_heads[l] * local.head_dim);
      const double kv = static_cast<double>(local.n_kv_heads[l] * local.head_dim);
      const double f = static_cast<double>(local.d_ff[l]);
      layer = std::max(layer, tokens * b * (4 * d + 5 * q + 5 * kv + 4 * f));
    }
    const double v_local = static_cast<double>(local.vocab_size);
    e.activations = in.recompute ? tokens * b * d * (L + 1) + layer : L * layer;
    e.head = in.tp == 1 && tokens * v_local * 4 <= 256.0 * (1 << 20) ? tokens * v_local * 10 : 2 * 64.0 * (1 << 20);
    e.load = in.base_bytes + e.weights;
    if (in.gradients) {
      const double wide = in.model_wide ? (full.tied_embeddings ? embed : std::max(embed, head)) : 0;
      e.gradient = wide + in.fisher_buffers * (in.model_wide ? e.weights : layers) * 4 / b;
      e.score = e.load + e.activations + e.head + e.gradient;
    } else {
      e.activations = layer;
      e.head = 64.0 * (1 << 20);
      e.score = e.load + e.activations + e.head;
    }
    e.apply = e.load + largest;
    e.export_ = in.base_bytes + e.weights * (1 - in.ratio) + 64.0 * (1 << 20);
    out.push_back(e);
  }
  return out;
}

}  // namespace secateur::model
