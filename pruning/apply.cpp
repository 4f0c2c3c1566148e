#include "pruning/apply.h"

#include <ATen/ATen.h>

#include <map>
#include <set>

#include "runtime/core/check.h"

namespace secateur::pruning {

using model::ModelConfig;

namespace {

// "model.layers.7.mlp.up_proj.weight" -> 7; -1 for model-wide tensors.
int64_t layer_of(const std::string& name) {
  const std::string p = "model.layers.";
  if (name.rfind(p, 0) != 0) return -1;
  return std::stoll(name.substr(p.size(), name.find('.', p.size()) - p.size()));
}

std::string renumber(const std::string& name, int64_t to) {
  const std::string p = "model.layers.";
  const size_t dot = name.find('.', p.size());
  return model::layer_prefix(to) + name.substr(dot + 1);
}

}  // namespace

Pruned apply(const ModelConfig& config, const model::NamedTensors& tensors, const std::vector<Group>& remove,
             const model::ShardPlan* plan) {
  Pruned out{config, {}, {}};
  ModelConfig& c = out.config;
  std::map<std::string, std::map<int, std::set<int64_t>>> drop;   // tensor -> dim -> indices
  std::set<int64_t> dead_layers;
  std::map<int64_t, std::set<int64_t>> heads_gone, kv_gone, neurons_gone;
  std::set<int64_t> channels_gone;
  for (const Group& g : remove) {
    switch (g.kind) {
      case GroupKind::layer: dead_layers.insert(g.layer); continue;
      case GroupKind::neuron: neurons_gone[g.layer].insert(g.index); break;
      case GroupKind::query_head:
        heads_gone[g.layer].insert(g.index);
        if (config.family == model::Family::gpt2) kv_gone[g.layer].insert(g.index);
        break;
      case GroupKind::kv_group: {
        kv_gone[g.layer].insert(g.index);
        const int64_t per = config.n_heads[g.layer] / config.n_kv_heads[g.layer];
        for (int64_t h = g.index * per; h < (g.index + 1) * per; ++h) heads_gone[g.layer].insert(h);
        break;
      }
      case GroupKind::hidden_channel: channels_gone.insert(g.index); break;
    }
    for (const Slice& s : g.slices) {
      for (int64_t i = s.begin; i < s.end; ++i) drop[s.tensor][s.dim].insert(i);
    }
  }
  // Check what the smaller model must satisfy before touching a tensor.
  for (const auto& [l, heads] : heads_gone) {
    if (config.family != model::Family::llama) continue;
    const int64_t per = config.n_heads[l] / config.n_kv_heads[l];
    std::map<int64_t, int64_t> per_group;                       // kv-group -> query heads left
    for (int64_t g = 0; g < config.n_kv_heads[l]; ++g) {
      if (!kv_gone[l].count(g)) per_group[g] = per;
    }
    for (int64_t h : heads) {
      if (per_group.count(h / per)) --per_group[h / per];
    }
    std::set<int64_t> left;
    for (const auto& [g, n] : per_group) left.insert(n);
    SECATEUR_CHECK(left.size() <= 1 && (left.empty() || *left.begin() > 0),
                   "[pruning/apply] layer {}: query heads removed unevenly across kv-groups (GQA needs the same "
                   "number of query heads in every group, at least one; remove whole kv-groups instead)", l);
  }
  SECATEUR_CHECK(static_cast<int64_t>(channels_gone.size()) < config.hidden,
                 "[pruning/apply] removing all {} hidden channels leaves no model", config.hidden);

  for (const auto& [l, s] : neurons_gone) c.d_ff[l] -= static_cast<int64_t>(s.size());
  for (const auto& [l, s] : heads_gone) c.n_heads[l] -= static_cast<int64_t>(s.size());
  for (const auto& [l, s] : kv_gone) c.n_kv_heads[l] -= static_cast<int64_t>(s.size());
  c.hidden -= static_cast<int64_t>(channels_gone.size());
  std::map<int64_t, int64_t> new_index;                         // old layer -> new layer
  for (int64_t l = 0, k = 0; l < config.n_layers(); ++l) {
    if (!dead_layers.count(l)) new_index[l] = k++;
  }
  for (auto it = dead_layers.rbegin(); it != dead_layers.rend(); ++it) {
    c.n_heads.erase(c.n_heads.begin() + *it);
    c.n_kv_heads.erase(c.n_kv_heads.begin() + *it);
    c.d_ff.erase(c.d_ff.begin() + *it);
  }
  c.validate();

  for (const auto& [name, t] : tensors) {
    const int64_t l = layer_of(name);
    if (l >= 0 && dead_layers.count(l)) continue;
    const auto cut = plan ? plan->slice_of(name, config) : model::ShardPlan::TensorSlice{};
    model::ShardPlan::TensorSlice place;
    at::Tensor kept = t;
    auto it = drop.find(name);
    for (int dim = 0; dim < t.dim(); ++dim) {
      const bool sharded = dim == cut.dim;
      const int64_t first = sharded ? cut.range.begin : 0;             // index in the whole tensor of local 0
      const std::set<int64_t>* gone = nullptr;
      if (it != drop.end() && it->second.count(dim)) gone = &it->second.at(dim);
      if (sharded) {                                                   // kept indices before this shard
        int64_t before = first;
        if (gone) before -= std::distance(gone->begin(), gone->lower_bound(first));
        place.dim = dim;
        place.range.begin = before;
      }
      if (gone) {
        std::vector<int64_t> keep;
        for (int64_t i = 0; i < kept.size(dim); ++i) {
          if (!gone->count(first + i)) keep.push_back(i);
        }
        kept = kept.index_select(dim, at::tensor(keep, at::kLong).to(kept.device()));
      }
      if (sharded) place.range.end = place.range.begin + kept.size(dim);
    }
    out.tensors.emplace_back(l >= 0 ? renumber(name, new_index.at(l)) : name, kept.contiguous());
    out.placement.push_back(place);
  }
  return out;
}

}  // namespace secateur::pruning
