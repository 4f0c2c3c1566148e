// pruning/apply.h — the only place that slices weights: removes groups physically and gives
// the smaller model's config (per-layer widths) and tensors. Nothing is masked.
#pragma once
#include <vector>

#include "pruning/group.h"
#include "runtime/model/decoder.h"

namespace secateur::pruning {

struct Pruned {
  model::ModelConfig config;     // the whole smaller model
  model::NamedTensors tensors;   // canonical names; layers renumbered when whole layers go
  // Per tensor, where it lies in the whole smaller tensor: dim -1 = it is the whole tensor; else
  // it is the range of that dim (a TP shard keeps its place: the kept indices before its own).
  std::vector<model::Slice> placement;
};

// Errors (before any slicing) when the removal would break the model: query heads removed
// unevenly across a layer's kv-groups (GQA needs the same number per group), or all hidden
// channels removed. Group indices are those of the whole model; with a plan, `tensors` are this
// rank's shards of `config` (ShardPlan::slice_of) and each shard keeps its kept indices.
// `tensors` is consumed: each one is released once its cut is made, so a caller that hands over
// the only references (std::move) never holds the dense and the pruned weights whole at once.
Pruned apply(const model::ModelConfig& config, model::NamedTensors tensors, const std::vector<Group>& remove,
             const model::ShardPlan* plan = nullptr);

}  // namespace secateur::pruning
