// pruning/sparse.h — unstructured pruning while the model trains (runtime/train): RPP, reweighted
// proximal pruning (Guo et al., arXiv 1909.12486; reference/algorithms.md §3), and iterative
// magnitude pruning (IMP, the paper's NIP baseline), on the same step budget.
//
// Tensors: the weight matrices of every block named in `targets` (q, k, v, o, gate, up, down —
// GPT-2's fused q/k/v counts as q, k, v); embeddings, the LM head, norms and biases are never
// pruned. Every rank treats its own TP shard; DP replicas stay identical.
//   rpp   after each AdamW step on the loss alone, the weighted soft-threshold (the proximal
//         operator of η·γ·Σ α_i |w_i|): w ← sign(w)·max(|w| − η·γ·α, 0), η the step's learning
//         rate, α = 1/(|z| + ε) from the weights z just updated by AdamW at the first step and every
//         `reweight_every` steps after. At step round(prune_at · steps) a hard prune to the target
//         sparsity fixes the pattern; the remaining steps fine-tune under the mask.
//   imp   `rounds` magnitude prunes spread evenly over the first prune_at of the steps, each to
//         sparsity 1 − (1 − target)^(r / rounds) (the same fraction of the survivors each round),
//         training under the mask between rounds and after the last.
//   wanda one shot, no training (Sun et al. 2023): S_ij = |W_ij|·‖x_j‖₂ over the calibration
//         tokens (Statistics::act), and in every output row the lowest `sparsity` of S go
//         (pattern 2:4: the 2 lowest of every 4 consecutive inputs of a row, sparsity 0.5);
//         `scope` does not apply (a row is Wanda's comparison group). A TP rank that holds
//         columns of a row (o, down) gathers the row's scores over TP.
// Hard prune: the smallest |w| go, over all pruned tensors at once (scope global), in each layer's
// (per_layer) or in each tensor (per_tensor); the threshold is found by bisection on counts summed
// over TP, so every shard prunes with the same threshold. With `threshold` ≥ 0 the (last) prune
// removes |w| ≤ threshold instead (0: exactly the weights RPP's proximal steps zeroed). Masked training: gradients are masked before clipping and
// the masked weights re-zeroed after every update, so they stay exactly zero.
#pragma once
#include <ATen/core/Tensor.h>

#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "runtime/model/decoder.h"

namespace secateur::pruning {

struct Statistics;

enum class SparseMethod { rpp, imp, wanda };

struct SparseOptions {
  SparseMethod method = SparseMethod::rpp;
  double sparsity = 0.5;           // target fraction of zeros in the pruned tensors
  std::string scope = "global";    // global | per_layer | per_tensor: where the target holds
  double threshold = -1;           // >= 0: the (last) hard prune removes |w| <= threshold instead
  std::vector<std::string> targets = model::proj_names();
  double gamma = 0.1;              // rpp: weight of the reweighted ℓ1
  double epsilon = 1e-3;           // rpp: α = 1/(|w| + ε)
  int64_t reweight_every = 10;     // rpp: steps between refreshes of α
  double prune_at = 0.5;           // fraction of the steps before the (last) hard prune
  int64_t rounds = 4;              // imp: number of prune rounds
  std::string pattern = "unstructured";   // wanda: unstructured | 2:4
  void validate() const;           // Error naming the bad key (sparse.*)
};

// The weighted soft-threshold: sign(w)·max(|w| − t, 0), t broadcastable to w.
at::Tensor soft_threshold(const at::Tensor& w, const at::Tensor& t);

class SparsePruner {
 public:
  // metric receives a line per sparsity measurement (every reweight_every steps and at each prune).
  SparsePruner(model::Decoder& model, SparseOptions opt, int64_t total_steps,
               std::function<void(const nlohmann::json&)> metric = nullptr);

  void after_gradients(int64_t step);          // masks the gradients once a mask exists
  void after_update(int64_t step, double lr);  // prox / prune rounds / re-zeroing
  // wanda: the one-shot prune from the activations of calibration (collect_statistics with activations).
  void prune_wanda(const Statistics& stats);

  // The pruned tensors (this rank's shards) under their canonical names, and their masks.
  const std::vector<std::pair<std::string, at::Tensor*>>& tensors() const { return tensors_; }
  const std::vector<at::Tensor>& masks() const { return masks_; }
  // Fraction of zeros overall and per layer (whole tensors, summed over TP); per_tensor adds each.
  nlohmann::json sparsity(bool per_tensor) const;
  // What a resumed run needs beyond the weights and the optimiser: RPP's reweighting α and the
  // masks, under "alpha.<name>" / "mask.<name>" (absent until they exist). restore() takes it back.
  model::NamedTensors state() const;
  void restore(const model::NamedTensors& state);

 private:
  void hard_prune(double target, int64_t step);

  model::Decoder& model_;
  SparseOptions opt_;
  int64_t total_, prune_step_;
  std::function<void(const nlohmann::json&)> metric_;
  std::vector<std::pair<std::string, at::Tensor*>> tensors_;
  std::vector<int64_t> layer_of_;
  std::vector<at::Tensor> alpha_, masks_;      // masks_ empty until the first hard prune
  std::vector<int64_t> round_steps_;           // imp
};

}  // namespace secateur::pruning
