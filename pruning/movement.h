// pruning/movement.h — training-time pruning of MLP neurons: GUM (Santacroce et al., arXiv
// 2302.03773), movement pruning (Sanh et al. 2020) and the gradual random and magnitude baselines,
// all on one cubic schedule while the model trains (runtime/train). Spec:
// reference/algorithms.md §1; what we decided where the authors' code has quirks is marked below.
//
// A neuron of layer l is gate row i, up row i and down column i (GPT-2: fc row and bias, proj
// column). Its mask m_li ∈ {0, 1} multiplies the neuron's weights (Decoder::set_mlp_mask); at the
// end the neurons with m = 0 are removed physically through pruning::apply.
//   random          frozen scores U(0, 1), Top-v
//   magnitude       score = ‖(gate row, up row, down column)‖₂ of the current weights, Top-v (one
//                   score per neuron; the authors' code ranks fc and proj apart)
//   movement        learned scores S (init 0), Top-v, straight-through: ∂L/∂S_i = Σ G ⊙ W over the
//                   neuron's weights; S trained by AdamW at mask_lr without weight decay
//   movement_soft   m = 1[σ(S) > τ], τ from 0 to soft_threshold on the cubic schedule, plus the
//                   ℓ1 penalty λ · mean σ(S); the number kept is learned, not set
//   gum             movement with the ℓ1 penalty λ · mean_l mean_i σ(S_li)·(1 + mult_li), where
//                   mult_i = λ_u · Σ_j |cos_ij| / (d_ff · v) from running cosine similarities of
//                   the neurons' activations: redundant neurons are pushed down harder. The
//                   ranking score stays S. (λ is constant: the authors' λ·v/v_f quirk is not kept.)
// Top-v keeps exactly floor(v · N) neurons, N over all layers (global; a layer may lose all) or
// floor(v · d_ff) in each layer (local); ties go to the lower (layer, index).
//
// Schedule (the authors' cubic with warm-up and cool-down): W = warmup · steps; the kept fraction
// v is 1 until step W, then v_f + (1 − v_f)(1 − (t − W)/(T − 4W))³, and v_f from step T − 3W on.
// Held-out evaluations use the final masks (v = v_f), as the authors' evaluate() does (before the
// first step the learned scores all tie, so that evaluation sees the unmasked model).
//
// Cosine statistics (gum): per layer and step, C = hᵀh and n = ‖h_i‖² over every token of the
// global batch (h: the masked MLP activations, the down projection's input), summed over DP,
// then C_run = (1−β)C_run + β·C (β·C on the first step). Under TP each rank owns the rows of its
// neurons: its activations times the TP-gathered activations of all neurons. Memory per layer and
// rank: rows × d_ff floats; with `partners` = K > 0 only K seeded partner columns are kept
// (rows × K) and Σ_j |cos_ij| is estimated as (d_ff / K) times the sum over partners.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "pruning/group.h"
#include "runtime/model/decoder.h"

namespace secateur::parallel {
class Comm;
}

namespace secateur::pruning {

enum class GradualMethod { random, magnitude, movement, movement_soft, gum };
const char* gradual_name(GradualMethod m);
GradualMethod parse_gradual(const std::string& name);   // Error naming the allowed methods

struct GradualOptions {
  GradualMethod method = GradualMethod::gum;
  double keep = 0.5;               // v_f: the fraction of MLP neurons kept at the end
  bool global = true;              // Top-v across layers, or in every layer
  double warmup = 0.1;             // W = warmup · steps (see the schedule above)
  double mask_lr = 1e-2;           // the scores' AdamW learning rate (no weight decay)
  double lambda = 0.0;             // ℓ1 weight on σ(S) (> 0 for movement_soft and gum)
  double lambda_u = 1.0;           // gum: uniqueness strength λ_u
  double beta = 0.999;             // gum: weight of the current step in the running statistics
  double soft_threshold = 0.1;     // movement_soft: the final τ
  int64_t partners = 0;            // gum: 0 = the full Gram matrix; K = K sampled partner neurons
  uint64_t seed = 0;
  void validate() const;           // Error naming the bad key (gum.*)
};

// The kept fraction (or, for movement_soft, the threshold) at `step` (0-based) of `total`.
double cubic_schedule(int64_t step, int64_t total, int64_t warmup_steps, double initial, double final_value);

// Top-v masks (float, 0/1) for per-layer scores [d_ff_l].
std::vector<at::Tensor> top_v_masks(const std::vector<at::Tensor>& scores, double v, bool global);

// Running cosine statistics of one layer's neurons; rows = this rank's neurons.
class CosineStats {
 public:
  CosineStats(int64_t d_ff, model::Range rows, std::vector<int64_t> partners = {});
  // One micro-batch: h_rows [N, rows] (this rank's neurons), h_all [N, d_ff] (every neuron).
  void add(const at::Tensor& h_rows, const at::Tensor& h_all);
  // The step's sums (added over `dp` when given) folded into the running estimate.
  void commit(double beta, parallel::Comm* dp);
  // cos of this rank's rows against all neurons (or the partners), the self-pairs zero.
  at::Tensor cosine() const;
  // Σ_j |cos_ij| per row (scaled by d_ff / K with partners).
  at::Tensor abs_cos_sum() const;
  int64_t bytes() const;
  bool empty() const { return !c_run_.defined(); }
  const at::Tensor& gram_rows() const { return c_run_; }   // [rows, cols] running Σ hᵀh
  const at::Tensor& norms() const { return n_run_; }       // [d_ff] running ‖h_i‖²
  // Sets the running sums (a checkpoint's), checking their shapes against this layer's.
  void set_running(const at::Tensor& gram, const at::Tensor& norms, const std::string& where);

 private:
  int64_t d_ff_;
  model::Range rows_;
  std::vector<int64_t> partners_;
  at::Tensor partner_index_;       // [K] int64, undefined = all neurons
  at::Tensor c_cur_, n_cur_, c_run_, n_run_;   // [rows, cols], [d_ff]
};

// Drives one training-time pruning run: install(), then the trainer's hooks.
class GradualPruner {
 public:
  GradualPruner(model::Decoder& model, GradualOptions opt, int64_t total_steps, parallel::Comm* dp);

  // The learned scores (movement, movement_soft, gum): replicated over TP, each rank's gradient a
  // partial sum; empty for random and magnitude.
  std::vector<at::Tensor*> scores();
  void before_step(int64_t step);      // this step's masks (and statistics collection for gum)
  void after_gradients(int64_t step);  // the ℓ1 term's gradient, then the statistics folded in
  void before_eval();                  // the final masks, no collection
  // The final masks, applied; the neurons they remove.
  std::vector<Group> final_removal();
  // Per layer: kept neurons, and for gum the mean redundancy r_i; plus the schedule's state.
  nlohmann::json summary() const;
  double kept_fraction(int64_t step) const;
  // gum: per layer [d_ff], λ_u · Σ_j |cos_ij| / (d_ff · v) as of the last step (zeros before).
  const std::vector<at::Tensor>& multipliers() const { return mult_; }
  // What a resumed run needs beyond the trainables (the learned scores are among those): gum's
  // running statistics and multipliers, and whether a step has run. restore() takes state() back.
  model::NamedTensors state() const;
  void restore(const model::NamedTensors& state);

 private:
  std::vector<at::Tensor> current_scores() const;    // per layer [d_ff], float32, no grad
  std::vector<at::Tensor> masks_for(int64_t step, bool final) const;
  void set_masks(const std::vector<at::Tensor>& hard);

  model::Decoder& model_;
  GradualOptions opt_;
  int64_t total_, warmup_steps_;
  parallel::Comm* dp_;
  std::vector<at::Tensor> scores_;     // learned or frozen, per layer [d_ff]
  std::vector<CosineStats> stats_;
  std::vector<at::Tensor> mult_;       // gum: per layer [d_ff], λ_u · r_i (zero until the first commit)
  std::vector<at::Tensor> last_masks_;
  bool collecting_ = false, stepped_ = false;
};

}  // namespace secateur::pruning
