#include "pruning/group.h"

#include <algorithm>
#include <tuple>

#include "runtime/core/check.h"
#include "runtime/model/spec.h"

namespace secateur::pruning {

using model::ModelConfig;

const char* kind_name(GroupKind k) {
  switch (k) {
    case GroupKind::neuron: return "neuron";
    case GroupKind::query_head: return "query_head";
    case GroupKind::kv_group: return "kv_group";
    case GroupKind::hidden_channel: return "hidden_channel";
    case GroupKind::layer: return "layer";
  }
  return "?";
}

GroupKind parse_kind(const std::string& name) {
  for (GroupKind k : {GroupKind::neuron, GroupKind::query_head, GroupKind::kv_group, GroupKind::hidden_channel,
                      GroupKind::layer}) {
    if (name == kind_name(k)) return k;
  }
  SECATEUR_FAIL("[pruning] unknown group kind '{}' (allowed: neuron, query_head, kv_group, hidden_channel, layer)",
                name);
}

namespace {

using model::Dim;
using model::Unit;

// A slice's place in its group: the group's own dimension before the coupled ones, then by
// projection, a weight before its bias (the order the scores' sums run in).
std::tuple<int, int, bool> slice_order(const model::TensorSpec& t, bool coupled) {
  return {coupled ? 1 : 0, t.proj ? static_cast<int>(*t.proj) : -1, t.bias};
}

}  // namespace

GroupMaker::GroupMaker(const ModelConfig& config) : config_(config), weights_(model::weights(config)) {
  heads_are_kv_ = model::spec_of(config).heads_are_kv;
  by_layer_.resize(config.n_layers());
  for (size_t i = 0; i < weights_.size(); ++i) {
    if (weights_[i].layer >= 0) by_layer_[weights_[i].layer].push_back(i);
  }
}

Group make_group(const ModelConfig& c, GroupKind kind, int64_t layer, int64_t index) {
  return GroupMaker(c)(kind, layer, index);
}

Group GroupMaker::operator()(GroupKind kind, int64_t layer, int64_t index) const {
  const ModelConfig& c = config_;
  const bool model_wide = kind == GroupKind::hidden_channel;
  SECATEUR_CHECK(model_wide || (layer >= 0 && layer < c.n_layers()), "[pruning] layer {} out of range (0..{})", layer,
                 c.n_layers() - 1);
  SECATEUR_CHECK(index >= 0 && index < model::unit_count(c, kind, model_wide ? 0 : layer),
                 "[pruning] {} {} out of range in layer {}", kind_name(kind), index, layer);
  Group g{kind, model_wide ? -1 : layer, index, {}};
  if (kind == GroupKind::layer || kind == GroupKind::hidden_channel) {
    // Every tensor of the layer, whole; or every tensor's index along the hidden dimension.
    if (kind == GroupKind::layer) {
      for (size_t i : by_layer_[layer]) g.slices.push_back({weights_[i].name, -1, 0, 0});
    } else {
      for (const model::Weight& w : weights_) {
        for (size_t d = 0; d < w.spec->axes.size(); ++d) {
          if (w.spec->axes[d] == Dim::hidden) g.slices.push_back({w.name, static_cast<int>(d), index, index + 1});
        }
      }
    }
    std::sort(g.slices.begin(), g.slices.end(), [](const Slice& a, const Slice& b) { return a.tensor < b.tensor; });
    return g;
  }
  // Units within a layer: the slices along the group's own dimension, and, for a kv-group, its
  // query heads along q (an architecture without GQA treats a query head as its own kv-group).
  const int64_t D = c.head_dim;
  std::vector<std::tuple<Dim, int64_t, int64_t, bool>> spans;   // dim, begin, end, coupled
  if (kind == GroupKind::neuron) {
    spans.emplace_back(Dim::d_ff, index, index + 1, false);
  } else if (kind == GroupKind::kv_group || heads_are_kv_) {
    const int64_t per = kind == GroupKind::kv_group ? c.group_size(layer) : 1;
    spans.emplace_back(Dim::kv, index * D, (index + 1) * D, false);
    spans.emplace_back(Dim::q, index * per * D, (index + 1) * per * D, true);
  } else {
    spans.emplace_back(Dim::q, index * D, (index + 1) * D, false);
  }
  std::vector<std::pair<std::tuple<int, int, bool>, Slice>> found;
  for (size_t i : by_layer_[layer]) {
    const model::Weight& w = weights_[i];
    for (size_t d = 0; d < w.spec->axes.size(); ++d) {
      for (const auto& [dim, begin, end, coupled] : spans) {
        if (w.spec->axes[d] == dim) found.push_back({slice_order(*w.spec, coupled), {w.name, static_cast<int>(d), begin, end}});
      }
    }
  }
  std::stable_sort(found.begin(), found.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  for (auto& [order, slice] : found) g.slices.push_back(std::move(slice));
  return g;
}

std::vector<Group> enumerate_groups(const ModelConfig& c, GroupKind kind) {
  const GroupMaker make(c);
  std::vector<Group> out;
  if (kind == GroupKind::hidden_channel) {
    for (int64_t i = 0; i < c.hidden; ++i) out.push_back(make(kind, -1, i));
    return out;
  }
  for (int64_t l = 0; l < c.n_layers(); ++l) {
    for (int64_t i = 0; i < model::unit_count(c, kind, l); ++i) out.push_back(make(kind, l, i));
  }
  return out;
}

}  // namespace secateur::pruning
