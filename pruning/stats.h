// pruning/stats.h — what the criteria need, collected over calibration samples.
// For every weight W (per index of each dim, the other dim summed; products in the model's dtype,
// sums accumulated in float64):
//   l1 = Σ|W|, l2 = ΣW²                                   (magnitude)
//   abs_wg = Σ|W⊙g|, wg = ΣW⊙g, g = ∇W of the mean CE      (Taylor first order: element-wise, vector-wise)
//   w2f = Σ W²⊙F, F = (1/N) Σ_n g_n², g_n per sample        (Taylor second order, empirical Fisher)
//   mix = Σ|W⊙g − ½ W²⊙F|                                  (LLM-Pruner's param_mix: both orders)
//   act = Σ_t x_t², act_sum = Σ_t x_t per input column of a   (activation energy and mean over the
//         linear layer                                          calibration tokens: activation, Wanda-sp,
//                                                               FLAP's fluctuation and bias compensation)
// Gradients are consumed by a post-accumulate hook as each weight's gradient is ready and then
// dropped, so a full set of gradients is never held; the sums are taken block by block, without a
// float64 (or any other weight-sized) temporary. The Fisher criteria fold each sample's g² into F
// (one weight-sized buffer, float32 at least) and take Σ W²⊙F once the pass ends; mix also keeps
// Σ_n g_n (a second buffer) and takes g as the mean of the per-sample gradients, so both of its
// orders come from the one per-sample pass. With a DP comm the samples are
// split over the DP ranks: g is summed over DP inside the hook, the other sums at the end.
// On a TP-sharded model every rank computes its shard's statistics, then they are made whole:
// the sharded dim's vectors are gathered over TP, the other dim's partial sums are summed, so
// every rank ends with the statistics of the whole model (as at TP = 1).
#pragma once
#include <ATen/core/Tensor.h>

#include <array>
#include <map>
#include <string>
#include <vector>

#include "runtime/model/decoder.h"

namespace secateur::parallel {
class Comm;
}

namespace secateur::pruning {

struct WeightStats {
  std::array<at::Tensor, 2> l1, l2, abs_wg, wg, w2f, mix;   // [dim]: per-index vectors (1-D weights: dim 0 only)
  std::array<at::Tensor, 2> act, act_sum;                   // [1] only, for linear layers' input columns
};

struct Statistics {
  std::map<std::string, WeightStats> weights;   // canonical name -> stats of the whole weight
  int64_t samples = 0;                          // calibration samples over all DP ranks
  int64_t tokens = 0;                           // their tokens, which act and act_sum sum over (0: no activations)
  // Σ_t x_t x_tᵀ of the input of every output projection (o, down) over those tokens, float64 [in, in],
  // the whole model's columns (CalibrationOptions::gram): what least-squares compensation solves with.
  std::map<std::string, at::Tensor> gram;
  // Whole layers (CalibrationOptions::residuals), over the same tokens: for the boundaries i < j of
  // the residual stream (h_l entering layer l; h_L the last layer's output, before the final norm),
  // Σ_t (1 − cos(h_i, h_j)) and Σ_t arccos(cos(h_i, h_j))/π, float64 [L+1, L+1], upper triangle.
  at::Tensor residual_cosine, residual_angle;
  // SLEB's search (pruning/depth.h): the layers in the order it removed them, the calibration NLL
  // per token after each removal, and the prune.ratio whose budget it searched for.
  std::vector<int64_t> sleb_order;
  std::vector<double> sleb_nll;
  double sleb_ratio = 0.0;
  double seconds = 0.0;
};

struct CalibrationOptions {
  bool first_order = true;   // one backward over this rank's samples (LLM-Pruner: the loss of the whole batch)
  bool fisher = false;       // one backward per sample
  bool mixed = false;        // mix: implies fisher (its first order comes from the same pass)
  bool activations = false;  // act, act_sum: one forward without gradients
  bool gram = false;         // gram too (implies activations); a TP rank gathers the inputs over TP
  bool residuals = false;    // residual_cosine, residual_angle, in the same forward pass
  bool model_wide = true;    // gradient statistics of the embedding, the head and the final norm too (only
                             // hidden-channel pruning reads them; without, their sums stay zero and neither
                             // gradient is formed: a [V, d] buffer or two less)
  bool recompute = false;    // backward passes keep only the residual stream between layers and run each
                             // layer's forward again (Decoder::backward_checkpointed): the same sums, less memory
};

// Statistics as a safetensors file (secateur score; prune.scores reuses it): every vector in
// float64 as "<weight>/<statistic>/<dim>" (a Gram matrix as "<weight>/gram"; the residual stream's
// as "residual/cosine" and "residual/angle", SLEB's as "sleb/order" and "sleb/nll"), with `metadata` (what
// they were computed on) and the sample and token counts. Written atomically. load_statistics: Error naming the file when it is not one.
void save_statistics(const std::string& path, const Statistics& stats, std::map<std::string, std::string> metadata);
Statistics load_statistics(const std::string& path, std::map<std::string, std::string>* metadata);

// samples: [N, T] token ids, the same on every rank.
Statistics collect_statistics(model::Decoder& model, const at::Tensor& samples, const CalibrationOptions& opt,
                              parallel::Comm* dp = nullptr);

}  // namespace secateur::pruning
