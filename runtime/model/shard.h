// runtime/model/shard.h — how a model is split over the TP ranks (Megatron style).
// Attention by whole GQA kv-groups (a group and its query heads stay on one rank), MLP by
// neurons, embedding and LM head by vocabulary rows; contiguous ranges, as even as possible.
// Shards may be uneven or empty: SmolLM2's 3 kv-groups over TP=2 give 2 + 1, over TP=4 one
// rank holds no attention at all, and pruning makes layers differ further.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "parallel/split.h"
#include "runtime/model/config.h"

namespace secateur::model {

using parallel::Range;
using parallel::split_range;

struct ShardPlan {
  int rank = 0, size = 1;
  struct Layer {
    Range kv_heads, heads, neurons;   // heads = kv_heads scaled by the group size
  };
  std::vector<Layer> layers;
  Range vocab;

  static ShardPlan make(const ModelConfig& full, int rank, int size);
  bool sharded() const { return size > 1; }
  // The full config with this rank's widths (heads, kv-heads, d_ff per layer; vocab_size = shard rows).
  ModelConfig local_config(const ModelConfig& full) const;

  // Which slice of a canonical tensor this rank holds: dim -1 = replicated (whole tensor).
  struct TensorSlice {
    int dim = -1;
    Range range;
  };
  TensorSlice slice_of(const std::string& canonical_name, const ModelConfig& full) const;
};

}  // namespace secateur::model
