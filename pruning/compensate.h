// pruning/compensate.h — what the removed input columns of an output projection (o_proj's of a
// head or kv-group, down_proj's of a neuron) did, given to what stays: the step between a decision
// and apply (prune.compensation). With x the projection's input over the calibration tokens, μ its
// mean, C its covariance, R the removed columns and K the kept ones:
//   bias           FLAP's: b += W_R·μ_R. On the mean input the pruned projection gives the dense
//                  one's output exactly.
//   least_squares  the removed inputs predicted from the kept ones, x_R ≈ μ_R + A(x_K − μ_K) with
//                  A = C_RK (C_KK + λI)⁻¹, λ = ridge × the mean of diag C_KK: W_K += W_R·A and
//                  b += W_R(μ_R − A·μ_K). With ridge → 0 this minimises Σ_t ‖W x_t + b − W' x_K,t − b'‖²
//                  over the calibration tokens; it includes the bias step (A = 0 is the bias step).
// Biases the model lacks are added: LLaMA's config flags attention_bias and mlp_bias bring zero
// q/k/v and gate/up biases along (what stock transformers loads); Qwen2, whose HF class has no o_proj
// or MLP bias, becomes the LLaMA it otherwise is; GPT-2 has them all. Nothing is sliced here.
#pragma once
#include <vector>

#include "parallel/collectives.h"
#include "pruning/group.h"
#include "pruning/stats.h"
#include "runtime/model/decoder.h"

namespace secateur::pruning {

enum class Compensation { none, bias, least_squares };
Compensation parse_compensation(const std::string& name);   // Error naming the allowed values
const char* compensation_name(Compensation c);

struct Compensated {
  model::ModelConfig config;      // with the biases
  model::NamedTensors tensors;    // the dense tensors, biases added, the compensation in them
  std::vector<Group> remove;      // the same units, as groups of `config` (they cut the new biases too)
};

// Error when the statistics hold no activation means (or, for least squares, no Gram matrices).
// With a plan, `tensors` are this rank's TP shards of `config`: bias sums each rank's removed
// columns' share over tp; least squares gathers each projection's columns over tp, solves on every
// rank alike and keeps its own columns.
Compensated compensate(const model::ModelConfig& config, const model::NamedTensors& tensors,
                       const std::vector<Group>& remove, const Statistics& stats, Compensation how, double ridge,
                       const model::ShardPlan* plan = nullptr, parallel::Group tp = {});

}  // namespace secateur::pruning
