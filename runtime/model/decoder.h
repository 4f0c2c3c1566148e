// runtime/model/decoder.h — one decoder implementation for the LLaMA and GPT-2 families.
// Driven entirely by ModelConfig (per-layer widths), so a pruned model with uneven
// layers runs through the same code. Weights live under canonical names (HF LLaMA
// names, see canonical_names()); GPT-2 checkpoints are renamed on load/save (runtime/io).
#pragma once
#include <ATen/core/Tensor.h>

#include <string>
#include <utility>
#include <vector>

#include "runtime/model/config.h"

namespace secateur::model {

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

struct LayerWeights {
  at::Tensor ln1_w, ln1_b, ln2_w, ln2_b;                         // [d]
  at::Tensor q_w, q_b, k_w, k_b, v_w, v_b;                       // [heads*D, d], [heads*D]
  at::Tensor o_w, o_b;                                           // [d, heads*D], [d]
  at::Tensor gate_w, gate_b, up_w, up_b;                         // [d_ff, d], [d_ff] (no gate in GPT-2)
  at::Tensor down_w, down_b;                                     // [d, d_ff], [d]
};

// Keys and values of past positions, per layer: [B, kv_heads, T_past, D].
struct KVCache {
  std::vector<at::Tensor> k, v;
  int64_t length = 0;
};

class Decoder {
 public:
  // Takes the tensors it needs by canonical name; Error naming any missing or misshapen tensor.
  Decoder(ModelConfig config, const NamedTensors& tensors);

  const ModelConfig& config() const { return config_; }
  at::ScalarType dtype() const { return embed_.scalar_type(); }
  at::Device device() const { return embed_.device(); }

  // Cast / move every weight (norm weights included, as HF does).
  void to(at::Device device, at::ScalarType dtype);

  // Final hidden states after the last norm: ids [B, T] int64 -> [B, T, d].
  // With a cache, positions continue after cache->length and the cache is extended.
  at::Tensor hidden_states(const at::Tensor& ids, KVCache* cache = nullptr) const;
  at::Tensor logits(const at::Tensor& ids, KVCache* cache = nullptr) const;   // [B, T, V]

  // Sum of next-token NLL over ids[:, 1:] (float64 scalar) and the count of predicted tokens;
  // logits are formed in chunks so a [T, V] float32 matrix is never held whole.
  std::pair<double, int64_t> nll(const at::Tensor& ids) const;

  // Every weight under its canonical name, in a stable order (embedding, layers, norm, head).
  NamedTensors named_tensors() const;
  std::vector<at::Tensor*> parameters();

 private:
  struct Slot {
    std::string name;
    at::Tensor* tensor;
    std::vector<int64_t> shape;
  };
  std::vector<Slot> slots();   // the one table of which weights the config has, with names and shapes

  at::Tensor attention(int64_t l, const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                       KVCache* cache) const;
  at::Tensor mlp(int64_t l, const at::Tensor& x) const;
  at::Tensor norm(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) const;
  at::Tensor head_weight() const { return config_.tied_embeddings ? embed_ : lm_head_; }

  ModelConfig config_;
  at::Tensor embed_, pos_embed_, norm_w_, norm_b_, lm_head_;
  std::vector<LayerWeights> layers_;
};

// Canonical tensor names of one layer's weights, e.g. "model.layers.3.self_attn.q_proj.weight".
std::string layer_prefix(int64_t layer);

}  // namespace secateur::model
