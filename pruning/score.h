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
// Aggregation over dependencies: sum (LLM-Pruner's default), prod, max, last.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "pruning/group.h"
#include "pruning/stats.h"

namespace secateur::pruning {

enum class Criterion { random, l1, l2, taylor_element1, taylor_element2, taylor_vector, taylor_mixed, activation };
enum class Aggregate { sum, prod, max, last };

Criterion parse_criterion(const std::string& name);   // Error naming the allowed values
Aggregate parse_aggregate(const std::string& name);
const char* criterion_name(Criterion c);
CalibrationOptions calibration_for(Criterion c);   // the statistics the criterion reads
// Those statistics by name: "first_order", "fisher", "mixed", "activations" ("" for the magnitude
// and random criteria, which need no calibration); what a statistics file records and is checked on.
std::string calibration_needs(Criterion c);

std::vector<double> score_groups(const std::vector<Group>& groups, const Statistics& stats, Criterion criterion,
                                 Aggregate aggregate, uint64_t seed);

}  // namespace secateur::pruning
