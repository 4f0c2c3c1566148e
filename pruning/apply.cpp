#include "pruning/apply.h"

#include <ATen/ATen.h>

#include <map>
#include <set>

#include "runtime/core/check.h"

namespace secateur::pruning {

using model::ModelConfig;

Pruned apply(const ModelConfig& config, model::NamedTensors tensors, const std::vector<Group>& remove,
             const model::ShardPlan* plan) {
  std::map<std::string, std::map<int, std::set<int64_t>>> drop;   // tensor -> dim -> indices
  std::set<int64_t> dead_layers;
  std::vector<model::UnitRef> units;
  for (const Group& g : remove) {
    units.push_back({g.kind, g.layer, g.index});
    if (g.kind == GroupKind::layer) {
      dead_layers.insert(g.layer);
      continue;
    }
    for (const Slice& s : g.slices) {
      for (int64_t i = s.begin; i < s.end; ++i) drop[s.tensor][s.dim].insert(i);
    }
  }
  // What the smaller model must satisfy is checked before a tensor is touched.
  Pruned out{model::without(config, units), {}, {}};
  out.config.validate();
  std::map<int64_t, int64_t> new_index;                         // old layer -> new layer
  for (int64_t l = 0, k = 0; l < config.n_layers(); ++l) {
    if (!dead_layers.count(l)) new_index[l] = k++;
  }

  for (auto& [name, t] : tensors) {
    const auto at = model::locate(config, name);
    SECATEUR_CHECK(at.has_value(), "[pruning/apply] '{}' is not a tensor of a {} model", name,
                   model::spec_of(config).name);
    const int64_t l = at->layer;
    if (l >= 0 && dead_layers.count(l)) {
      t.reset();
      continue;
    }
    const auto cut = plan ? plan->slice_of(name, config) : model::Slice{};
    model::Slice place;
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
    out.tensors.emplace_back(l >= 0 ? model::renumber(config, name, new_index.at(l)) : name, kept.contiguous());
    out.placement.push_back(place);
    t.reset();
  }
  return out;
}

}  // namespace secateur::pruning
