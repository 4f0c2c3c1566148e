#include "runtime/model/shard.h"

#include "runtime/core/check.h"
#include "runtime/model/spec.h"

namespace secateur::model {

ShardPlan ShardPlan::make(const ModelConfig& full, int rank, int size) {
  std::vector<Widths> widths;
  for (int64_t l = 0; l < full.n_layers(); ++l) widths.push_back({full.n_kv_heads[l], full.group_size(l), full.d_ff[l]});
  ShardPlan p;
  static_cast<parallel::ShardPlan&>(p) = parallel::ShardPlan::make(widths, full.vocab_size, rank, size);
  return p;
}

ModelConfig ShardPlan::local_config(const ModelConfig& full) const {
  ModelConfig c = full;
  for (size_t l = 0; l < layers.size(); ++l) {
    c.n_heads[l] = layers[l].heads.size();
    c.n_kv_heads[l] = layers[l].kv_heads.size();
    c.d_ff[l] = layers[l].neurons.size();
  }
  c.vocab_size = vocab.size();
  return c;
}

Slice ShardPlan::slice_of(const std::string& name, const ModelConfig& full) const {
  if (!sharded()) return {};
  const auto at = locate(full, name);
  SECATEUR_CHECK(at.has_value(), "[model/shard] '{}' is not a tensor of a {} model", name, spec_of(full).name);
  const TensorSpec& t = *at->spec;
  const int dim = parallel::split_axis(t.split);
  if (dim < 0) return {};
  const int64_t D = full.head_dim;
  switch (t.axes.at(dim)) {
    case Dim::vocab: return {dim, vocab};
    case Dim::q: {
      const Range& h = layers.at(at->layer).heads;
      return {dim, {h.begin * D, h.end * D}};
    }
    case Dim::kv: {
      const Range& h = layers.at(at->layer).kv_heads;
      return {dim, {h.begin * D, h.end * D}};
    }
    case Dim::d_ff: return {dim, layers.at(at->layer).neurons};
    case Dim::hidden:
    case Dim::positions: break;
  }
  SECATEUR_FAIL("[model/shard] no sharding rule for '{}'", name);
}

}  // namespace secateur::model
