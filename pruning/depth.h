// pruning/depth.h — SLEB's search (Song et al. 2024) for the layers to remove whole: one layer at a
// time, each time the one whose removal raises the calibration NLL least, measured again on the
// model without those already gone (the residual stream passes a removed layer unchanged).
// Layers that the options keep (keep_first, keep_last, keep_layers) are never candidates; SLEB's
// own barriers are the first and the last layer, keep_layers [0, -1]. The search stops before the
// layer that would exceed the budget of prune.ratio (or leave no layer), so the decision (scope
// layer, criterion sleb, which scores a layer by when it went) takes exactly the layers it found.
// Cost: per phase, one forward pass over the calibration windows that keeps the residual stream
// entering each candidate (memory: windows × tokens × hidden × candidates), then per candidate the
// layers after it and the head (about half a forward pass on average). With a DP comm the windows
// are split over DP and the NLL summed. Ties: the lowest layer.
#pragma once
#include <ATen/core/Tensor.h>

#include "pruning/decision.h"
#include "pruning/stats.h"

namespace secateur::pruning {

// samples: [N, T] token ids, the same on every rank. Statistics with sleb_order, sleb_nll, sleb_ratio.
Statistics sleb_search(model::Decoder& model, const at::Tensor& samples, const PruneOptions& opt,
                       parallel::Comm* dp = nullptr);

}  // namespace secateur::pruning
