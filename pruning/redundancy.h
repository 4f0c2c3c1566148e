// pruning/redundancy.h — how redundant a model's MLP neurons are (GUM's analysis,
// reference/algorithms.md §1.9), measured on calibration text, per layer:
//   sensitivity      |Σ w · ∂L/∂w| over the neuron's weights (gate row, up row, down column), the
//                    first-order loss change of removing it, per batch, averaged over batches
//                    (L the mean next-token loss of the batch)
//   uniqueness       1 − the fraction of neurons with a later partner j > i at cos_ij ≥ t, cos from
//                    C = Σ hᵀh and n = Σ ‖h_i‖² over every token (h: the down projection's input);
//                    t = 0.8 (GUM's), also 0.9 and 0.99
//   reconstructability  R²_i of h_i regressed on every other neuron of the layer (un-centred, with
//                    a ridge ρ on the Gram matrix normalised to a unit diagonal, K = cos + I):
//                    R²_i = 1 − (1/P_ii − ρ) with P = (K + ρI)⁻¹, the ridge penalty counted as
//                    residual (a lower bound on the least-squares R²); the fraction above 0.9 and
//                    0.99, and how many of the similar neurons (cos ≥ 0.8) are also
//                    reconstructable (R² > 0.9). Dead neurons (h ≡ 0): cos 0, R² 0.
// DP ranks split the batches (sums over DP); under TP each rank computes its neurons' rows and the
// Gram matrix is gathered for the regression.
#pragma once
#include <ATen/core/Tensor.h>

#include <nlohmann/json.hpp>

#include "runtime/model/decoder.h"

namespace secateur::parallel {
class Comm;
}

namespace secateur::pruning {

struct RedundancyOptions {
  int64_t micro_batch = 4;     // windows per forward/backward (one batch of the sensitivity mean)
  double ridge = 1e-3;         // ρ on the unit-diagonal Gram matrix
};

// Per neuron, R² of its column of H regressed on the others (see above), from C = HᵀH [d, d].
at::Tensor reconstructability(const at::Tensor& gram, double ridge);

// samples: [n, T] token windows (the same on every rank). JSON: per layer and overall.
nlohmann::json redundancy_report(model::Decoder& model, const at::Tensor& samples, const RedundancyOptions& opt,
                                 parallel::Comm* dp);

}  // namespace secateur::pruning
