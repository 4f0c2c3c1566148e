// runtime/model/shard.h — a model's TP shard: parallel's shard plan (parallel/tensor_parallel/
// shard.h) made from a ModelConfig, and the slice of each canonical tensor a rank holds, which
// the spec's split and axis names decide.
#pragma once
#include <string>

#include "parallel/tensor_parallel/shard.h"
#include "runtime/model/config.h"

namespace secateur::model {

using parallel::Range;
using parallel::Slice;
using parallel::split_range;

struct ShardPlan : parallel::ShardPlan {
  static ShardPlan make(const ModelConfig& full, int rank, int size);
  // The full config with this rank's widths (heads, kv-heads, d_ff per layer; vocab_size = shard rows).
  ModelConfig local_config(const ModelConfig& full) const;
  // Which slice of a canonical tensor this rank holds (whole when replicated or unsharded).
  Slice slice_of(const std::string& canonical_name, const ModelConfig& full) const;
};

}  // namespace secateur::model
