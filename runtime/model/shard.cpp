#include "runtime/model/shard.h"

#include <regex>

#include "runtime/core/check.h"

namespace secateur::model {

Range split_range(int64_t total, int rank, int size) {
  const int64_t base = total / size, extra = total % size;
  const int64_t begin = rank * base + std::min<int64_t>(rank, extra);
  return {begin, begin + base + (rank < extra ? 1 : 0)};
}

ShardPlan ShardPlan::make(const ModelConfig& full, int rank, int size) {
  SECATEUR_CHECK(size >= 1 && rank >= 0 && rank < size, "[model/shard] bad TP rank {} of {}", rank, size);
  ShardPlan p;
  p.rank = rank;
  p.size = size;
  for (int64_t l = 0; l < full.n_layers(); ++l) {
    Layer L;
    L.kv_heads = split_range(full.n_kv_heads[l], rank, size);
    const int64_t group = full.n_kv_heads[l] > 0 ? full.n_heads[l] / full.n_kv_heads[l] : 0;
    L.heads = {L.kv_heads.begin * group, L.kv_heads.end * group};
    L.neurons = split_range(full.d_ff[l], rank, size);
    p.layers.push_back(L);
  }
  p.vocab = split_range(full.vocab_size, rank, size);
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

ShardPlan::TensorSlice ShardPlan::slice_of(const std::string& name, const ModelConfig& full) const {
  if (!sharded()) return {};
  if (name == "model.embed_tokens.weight" || name == "lm_head.weight") return {0, vocab};
  static const std::regex layer_re(R"(model\.layers\.(\d+)\.(self_attn|mlp)\.(\w+)_proj\.(weight|bias))");
  std::smatch m;
  if (!std::regex_match(name, m, layer_re)) return {};                   // norms, positions: replicated
  const auto l = std::stoll(m[1]);
  SECATEUR_CHECK(l < static_cast<int64_t>(layers.size()), "[model/shard] {} is past the model's layers", name);
  const std::string proj = m[3];
  const bool weight = m[4] == "weight";
  const int64_t D = full.head_dim;
  const Layer& L = layers[l];
  if (proj == "q") return {0, {L.heads.begin * D, L.heads.end * D}};
  if (proj == "k" || proj == "v") return {0, {L.kv_heads.begin * D, L.kv_heads.end * D}};
  if (proj == "gate" || proj == "up") return {0, L.neurons};
  if (proj == "o") return weight ? TensorSlice{1, {L.heads.begin * D, L.heads.end * D}} : TensorSlice{};
  if (proj == "down") return weight ? TensorSlice{1, L.neurons} : TensorSlice{};
  SECATEUR_FAIL("[model/shard] no sharding rule for '{}'", name);
}

}  // namespace secateur::model
