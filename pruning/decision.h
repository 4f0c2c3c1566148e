// pruning/decision.h — from group scores to one decision: which groups go.
// The ratio is the fraction of ALL parameters of the model to remove (embeddings included in the
// total); the achieved fraction is reported. Scopes:
//   per_layer  the same fraction of MLP neurons and of attention units in every prunable layer
//              (LLM-Pruner's local mode), the kept layers untouched; when the attention units
//              are too coarse to follow the fraction, the MLPs take up the rest of the budget evenly;
//   uniform    per_layer with no kept layers: every layer ends with the same widths, so a stock HF
//              config describes the result;
//   global     every candidate ranked together after dividing its score by the mean score of its
//              kind in its layer (scores standardised already, flap's, as they are); each layer keeps
//              at least min_keep of each kind;
//   channel    hidden channels (LLM-Pruner's channel-wise mode): the lowest-scored channels of the
//              residual stream go from every layer at once, as many as the budget allows;
//   layer      whole layers, lowest score first, as many as fit in the budget (the kept layers stay);
//              criterion angular takes the longest run of consecutive layers that fits, the run whose
//              input and output are closest; sleb the layers of its search (pruning/depth.h), in order.
// Kept (dense) layers, under per_layer, global and layer: the first ⌈keep_first·L⌉ and the last
// ⌈keep_last·L⌉ of the L layers, plus keep_layers (negative indices count from the end); uniform
// and channel change every layer alike, so they take no ends and refuse keep_layers.
// Attention units: none, kv_group (a GQA group with its query heads) or query_head (the same number
// of query heads from every kv-group; per_layer/uniform only). head_dim never changes.
// round_to r > 1: every pruned MLP (and, under channel, the hidden size) keeps a multiple of r
// units — the multiple nearest to what the budget gave it, at least r (a width below r is left as
// it is) — so the achieved ratio moves off the target by up to r/2 units a layer.
// Ties break on (score, layer, index), so every rank that holds the same scores decides the same.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "pruning/group.h"
#include "pruning/score.h"

namespace secateur::pruning {

struct PruneOptions {
  Criterion criterion = Criterion::taylor_element1;
  Aggregate aggregate = Aggregate::sum;
  std::string scope = "per_layer";       // per_layer | global | uniform | channel | layer
  double ratio = 0.2;                    // fraction of all parameters removed, in [0, 1)
  std::string attention = "kv_group";    // none | kv_group | query_head
  bool mlp = true;
  double keep_first = 0, keep_last = 0;  // fractions of the depth kept dense at each end
  std::vector<int64_t> keep_layers;      // more dense layers (not with uniform or channel)
  double min_keep = 0.1;                 // global: fraction of each kind a layer keeps at least
  int64_t round_to = 1;                  // kept MLP widths (hidden under channel) are multiples of it
  Compensation compensation = Compensation::none;   // pruning/compensate.h; not with scopes channel and layer
  double ridge = 0.1;                    // least_squares: λ relative to the mean input variance
  uint64_t seed = 0;
};

struct Decision {
  std::vector<Group> removed;
  std::vector<int64_t> kept_layers;      // the dense layers, ascending
  model::ModelConfig before, after;
  int64_t params_before = 0, params_after = 0;
  double target_ratio = 0, achieved_ratio = 0;
  uint64_t hash = 0;                     // FNV-1a of the removed (kind, layer, index) list
  nlohmann::json to_json(const PruneOptions& opt) const;
};

// FNV-1a of the removed (kind, layer, index) list: the one hash of a decision, for every pruning method.
uint64_t decision_hash(const std::vector<Group>& removed);

// Checks the options against the model before any work; Error naming the key otherwise.
void validate(const PruneOptions& opt, const model::ModelConfig& config);
// The layers kept dense in this model, ascending.
std::vector<int64_t> kept_layers(const PruneOptions& opt, const model::ModelConfig& config);

// The statistics are only read for the criterion's needs (none for random).
Decision decide(const model::ModelConfig& config, const Statistics& stats, const PruneOptions& opt);

}  // namespace secateur::pruning
