// pruning/score.h — criteria: statistics -> one importance per group (higher = keep).
// A group's importance aggregates its dependencies (one per coupled slice): each dependency
// is the sum, over the slice's indices, of the per-index statistic of that tensor.
//   random           seeded uniform
//   l1, l2           Σ|W|, ΣW²                         (LLM-Pruner's magnitude baselines)
//   taylor_element1  Σ|W⊙g|                            (LLM-Pruner "Element¹", param_first)
//   taylor_element2  Σ W²⊙F / 2                         (second-order term, param_second)
//   taylor_vector    Σ_c |Σ_j (W⊙g)[c, j]|              (LLM-Pruner "Vector", vectorize)
//   taylor_mixed     Σ |W⊙g − ½ W²⊙F|                   (LLM-Pruner param_mix: both orders per element)
//   activation       Σ_c ‖x_c‖₂ over the group's input columns of linear layers (Minitron-style
//                    activation magnitude: a neuron's output, a head's attention output, a hidden
//                    channel's normalised input to every projection and the head; L2 over all
//                    calibration tokens); output rows and norms carry no activation and do not count
// Two criteria score only the inputs of the output projections (o_proj's columns of a head or
// kv-group, down_proj's column of a neuron), as FLAP does; a unit's score is over its columns j:
//   wanda_sp         Σ_j mean_i|W_ij|·‖x_j‖₂              (FLAP's structured Wanda baseline)
//   flap             mean_j z_j, z = (s − mean s)/std s over the projection's columns (one layer, one
//                    module), s_j = Var_t(x_j)·Σ_i W_ij² (FLAP's WIFV: the input's fluctuation over the
//                    calibration tokens, weighted by its column), squared for attention (FLAP: metric²)
//                    — standardised, so the scope global ranks attention and MLP units of every layer
//                    together as they are (FLAP's AL-AM), and per_layer/uniform is FLAP's UL-UM
// Neither scores hidden channels or layers.
// Three criteria score whole layers only (scope layer), from the residual stream h_l entering layer
// l (h_L: the last layer's output before the final norm, not HF's normed last hidden state):
//   block_influence  ShortGPT: mean over calibration tokens of 1 − cos(h_l, h_{l+1})
//   angular          Gromov et al.: the n consecutive layers l..l+n−1 whose input and output are
//                    closest, mean_t arccos(cos(h_l, h_{l+n}))/π over every token; n as many as fit
//                    the budget (decided in pruning/decision, not scored per layer)
//   sleb             SLEB: remove the layer whose removal raises the calibration NLL least, measure
//                    again, repeat (pruning/depth.h); a layer's score is when it went
// Aggregation over dependencies: sum (LLM-Pruner's default), prod, max, last (not for wanda_sp and flap,
// which have one).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "pruning/compensate.h"
#include "pruning/group.h"
#include "pruning/stats.h"

namespace secateur::pruning {

enum class Criterion {
  random, l1, l2, taylor_element1, taylor_element2, taylor_vector, taylor_mixed, activation, wanda_sp, flap,
  block_influence, angular, sleb
};
enum class Aggregate { sum, prod, max, last };

Criterion parse_criterion(const std::string& name);   // Error naming the allowed values
Aggregate parse_aggregate(const std::string& name);
const char* criterion_name(Criterion c);
// The statistics the criterion reads, and what the compensation reads (pruning/compensate.h): the
// activations' means, and for least squares their Gram matrices.
CalibrationOptions calibration_for(Criterion c, Compensation compensation = Compensation::none);
// Those statistics by name: "first_order", "fisher", "mixed", "activations", "gram", "residuals", "sleb" ("" for the
// magnitude and random criteria, which need no calibration); what a statistics file records and is checked on.
// Whether a prune.scope reads the gradient statistics of the embedding, the head and the final norm
// (CalibrationOptions::model_wide): hidden-channel pruning only.
inline bool scope_reads_model_wide(const std::string& scope) { return scope == "channel"; }
// model_wide false (CalibrationOptions::model_wide) adds "layers_only" where there are gradients.
std::string calibration_needs(Criterion c, Compensation compensation = Compensation::none, bool model_wide = true);
// Scores that are standardised within each layer and module already (flap): the scope global
// ranks them as they are instead of dividing by their (layer, kind) mean.
bool standardised(Criterion c);
bool scores_projection_inputs(Criterion c);   // wanda_sp, flap: neurons and attention units only
bool scores_layers_only(Criterion c);          // block_influence, angular, sleb: whole layers (scope layer)

std::vector<double> score_groups(const std::vector<Group>& groups, const Statistics& stats, Criterion criterion,
                                 Aggregate aggregate, uint64_t seed);

}  // namespace secateur::pruning
