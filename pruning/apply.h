// pruning/apply.h — the only place that slices weights: removes groups physically and gives
// the smaller model's config (per-layer widths) and tensors. Nothing is masked.
#pragma once
#include <vector>

#include "pruning/group.h"
#include "runtime/model/decoder.h"

namespace secateur::pruning {

struct Pruned {
  model::ModelConfig config;
  model::NamedTensors tensors;   // canonical names; layers renumbered when whole layers go
};

// Errors (before any slicing) when the removal would break the model: query heads removed
// unevenly across a layer's kv-groups (GQA needs the same number per group), or all hidden
// channels removed.
Pruned apply(const model::ModelConfig& config, const model::NamedTensors& tensors, const std::vector<Group>& remove);

}  // namespace secateur::pruning
