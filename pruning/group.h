// pruning/group.h — the Group, the one noun of pruning: a set of coupled slices that are
// removed together. Coupling is written out per family (not traced from a graph):
//   LLaMA  neuron         gate row, up row (+ biases), down column
//          query_head     q rows (+ bias), o columns           — its kv-group keeps the rest
//          kv_group       k and v rows (+ biases) and the group's query heads (q rows, o columns)
//          hidden_channel one column of the embedding, every norm, every input projection and the
//                         LM head; one row of every output projection (o, down, + their biases)
//          layer          every tensor of the layer
//   GPT-2  neuron (fc row + bias, proj column), query_head (q/k/v rows + biases, o columns —
//          GPT-2 has no GQA, so a head is its own kv-group), hidden_channel, layer.
// Indices are in the unsharded model; apply (pruning/apply.h) is the only code that slices.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "runtime/model/config.h"

namespace secateur::pruning {

enum class GroupKind { neuron, query_head, kv_group, hidden_channel, layer };

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

// Builds groups of one model: the model's weight names are listed once, not per group.
class GroupMaker {
 public:
  explicit GroupMaker(const model::ModelConfig& config);
  Group operator()(GroupKind kind, int64_t layer, int64_t index) const;   // Error if out of range

 private:
  const model::ModelConfig& config_;
  std::vector<std::string> names_;
};

// The group of one kind at (layer, index); Error if out of range.
Group make_group(const model::ModelConfig& config, GroupKind kind, int64_t layer, int64_t index);

}  // namespace secateur::pruning
