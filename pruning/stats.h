// pruning/stats.h — what the criteria need, collected over calibration samples.
// For every weight W (per index of each dim, the other dim summed; products in the model's dtype,
// sums accumulated in float64):
//   l1 = Σ|W|, l2 = ΣW²                                   (magnitude)
//   abs_wg = Σ|W⊙g|, wg = ΣW⊙g, g = ∇W of the mean CE      (Taylor first order: element-wise, vector-wise)
//   w2f = Σ W²⊙F, F = (1/N) Σ_n g_n², g_n per sample        (Taylor second order, empirical Fisher)
// Gradients are consumed by a post-accumulate hook as each weight's gradient is ready and then
// dropped, so a full set of gradients is never held. With a DP comm the samples are split over
// the DP ranks: g is summed over DP inside the hook, the Fisher sums after the last sample.
#pragma once
#include <ATen/core/Tensor.h>

#include <array>
#include <map>
#include <string>

#include "runtime/model/decoder.h"

namespace secateur::parallel {
class Comm;
}

namespace secateur::pruning {

struct WeightStats {
  std::array<at::Tensor, 2> l1, l2, abs_wg, wg, w2f;   // [dim]: per-index vectors (1-D weights: dim 0 only)
};

struct Statistics {
  std::map<std::string, WeightStats> weights;   // canonical name -> stats of this rank's shard
  int64_t samples = 0;                          // calibration samples over all DP ranks
  double seconds = 0.0;
};

struct CalibrationOptions {
  bool first_order = true;   // one backward over this rank's samples (LLM-Pruner: the loss of the whole batch)
  bool fisher = false;       // one backward per sample
};

// samples: [N, T] token ids, the same on every rank.
Statistics collect_statistics(model::Decoder& model, const at::Tensor& samples, const CalibrationOptions& opt,
                              parallel::Comm* dp = nullptr);

}  // namespace secateur::pruning
