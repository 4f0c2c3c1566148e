// pruning/group.h — the Group, the one noun of pruning: a set of coupled slices that are
// removed together. Coupling is derived from the model spec (runtime/model/spec.h): a group is
// every slice along one named dimension of the model (the coupled dimension), e.g. for LLaMA
//   neuron         index i along d_ff: gate row, up row (+ biases), down column
//   query_head     head h along q: q rows (+ bias), o columns     — its kv-group keeps the rest
//   kv_group       group g along kv (k and v rows + biases) and its query heads along q
//   hidden_channel index i along hidden: a column of the embedding and of every input projection
//                  and the LM head, a row of every output projection (o, down + biases), every norm
//   layer          every tensor of the layer
// An architecture without GQA (GPT-2) treats a query head as its own kv-group.
// Indices are in the unsharded model; apply (pruning/apply.h) is the only code that slices.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "runtime/model/spec.h"

namespace secateur::pruning {

using GroupKind = model::Unit;   // the coupled dimension a group removes a unit of

const char* kind_name(GroupKind k);
GroupKind parse_kind(const std::string& name);   // Error naming the allowed kinds

struct Slice {
  std::string tensor;   // canonical name
  int dim;              // 0 = rows, 1 = columns (a 1-D tensor has only dim 0)
  int64_t begin, end;
};

struct Group {
  GroupKind kind;
  int64_t layer;        // -1 for model-wide groups (hidden channels)
  int64_t index;        // within its layer, in the unsharded model
  std::vector<Slice> slices;
};

// Every group of one kind in a model of this config, in (layer, index) order.
std::vector<Group> enumerate_groups(const model::ModelConfig& config, GroupKind kind);

// Builds groups of one model: the model's weights are listed once, not per group.
class GroupMaker {
 public:
  explicit GroupMaker(const model::ModelConfig& config);
  Group operator()(GroupKind kind, int64_t layer, int64_t index) const;   // Error if out of range

 private:
  const model::ModelConfig& config_;
  std::vector<model::Weight> weights_;
  std::vector<std::vector<size_t>> by_layer_;      // indices into weights_, per layer
  bool heads_are_kv_ = false;
};

// The group of one kind at (layer, index); Error if out of range.
Group make_group(const model::ModelConfig& config, GroupKind kind, int64_t layer, int64_t index);

}  // namespace secateur::pruning
