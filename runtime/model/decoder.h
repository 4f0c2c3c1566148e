// runtime/model/decoder.h — one decoder implementation for the LLaMA and GPT-2 families.
// Driven entirely by ModelConfig (per-layer widths), so a pruned model with uneven
// layers runs through the same code. Which weights it has, under which canonical names and
// shapes, comes from the model spec (runtime/model/spec.h); the Decoder binds each by its role.
#pragma once
#include <ATen/core/Tensor.h>

#include <array>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "parallel/collectives.h"
#include "runtime/model/config.h"
#include "runtime/model/shard.h"
#include "runtime/model/spec.h"

namespace secateur::model {

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

struct LayerWeights {
  at::Tensor ln1_w, ln1_b, ln2_w, ln2_b;                         // [d]
  at::Tensor q_w, q_b, k_w, k_b, v_w, v_b;                       // [heads*D, d], [heads*D]
  at::Tensor o_w, o_b;                                           // [d, heads*D], [d]
  at::Tensor gate_w, gate_b, up_w, up_b;                         // [d_ff, d], [d_ff] (no gate in GPT-2)
  at::Tensor down_w, down_b;                                     // [d, d_ff], [d]
};

// Keys and values of past positions, per layer: buffers [B, kv_heads, capacity, D] whose first
// `length` positions are filled; they grow geometrically and each step writes into them in place,
// so a cache serves inference (no gradient flows through it).
struct KVCache {
  std::vector<at::Tensor> k, v;
  int64_t length = 0;
};

// Where each token of a batch sits and what it sees, for rows that are not one causal sequence
// (shared-prefix scoring packs a prefix and several continuations into a row, runtime/eval/tasks.cpp):
// positions [B, T] int64 (the RoPE angle, GPT-2's position row), mask [B, 1, T, past + T] bool
// (key j visible to query t). Without one, row b's token t sits at past + t and sees keys 0..past + t.
struct Layout {
  at::Tensor positions, mask;
};

// On a TP group of more than one rank the decoder holds this rank's shard (ShardPlan) of every
// weight and runs Megatron-style through the layers of parallel/tensor_parallel: column-parallel
// q/k/v and gate/up, row-parallel o and down followed by one sum each, vocabulary-parallel
// embedding, LM head, cross-entropy and KL (the full logits are only gathered by logits(), for
// generation and tests). It never calls a communicator itself. Alone, it is the whole model.
class Decoder {
 public:
  // Takes the tensors it needs by canonical name (this rank's shards when tp is given); Error
  // naming any missing or misshapen tensor.
  Decoder(ModelConfig config, const NamedTensors& tensors, parallel::Group tp = {});

  // Random weights (seeded; the same on every rank) of the right shapes: for tests and benchmarks.
  static Decoder with_random_weights(const ModelConfig& config, uint64_t seed, parallel::Group tp = {});

  const ModelConfig& config() const { return config_; }          // the whole model
  const ModelConfig& local_config() const { return local_; }     // this rank's widths
  const ShardPlan& plan() const { return plan_; }
  parallel::Group tp() const { return tp_; }                   // the TP ranks it runs on
  at::ScalarType dtype() const { return embed_.scalar_type(); }
  // The LM head's weight (the embedding when tied): [V_local, d], this rank's vocabulary rows.
  const at::Tensor& head_weight() const { return config_.tied_embeddings ? embed_ : lm_head_; }
  at::Device device() const { return embed_.device(); }

  // Cast / move every weight (norm weights included, as HF does).
  void to(at::Device device, at::ScalarType dtype);

  // Final hidden states after the last norm: ids [B, T] int64 -> [B, T, d].
  // With a cache, positions continue after cache->length and the cache is extended; a layout
  // places each token itself (the cache still grows by T).
  at::Tensor hidden_states(const at::Tensor& ids, KVCache* cache = nullptr, const Layout* layout = nullptr) const;
  at::Tensor logits(const at::Tensor& ids, KVCache* cache = nullptr) const;   // [B, T, V] (gathered over TP)

  // Knowledge distillation from a teacher of the same vocabulary, sharded on the same TP comm:
  // per position, alpha·T²·KL(teacher ‖ student) at temperature T + (1 − alpha)·CE
  // + hidden_weight · mean over d of (h_student − h_teacher)², h the final hidden states (after
  // the last norm; the hidden sizes must then match).
  struct Distill {
    const Decoder* teacher = nullptr;
    double alpha = 0.5, temperature = 2.0, hidden_weight = 0.0;
  };

  // Sum of next-token NLL over ids[:, 1:] as a float32 scalar that autograd can differentiate;
  // logits are formed in chunks of 256 positions, so without grad a [T, V] matrix is never whole.
  // With kd, the sum of the distillation loss instead (vocabulary-parallel under TP, too).
  // predict [B, T] (bool), if given, says which tokens are targets: position t counts when
  // predict[:, t] is set (column 0 is never a target), e.g. an instruction's response only.
  at::Tensor loss_sum(const at::Tensor& ids, const Distill* kd = nullptr, const at::Tensor& predict = {}) const;
  // loss_sum(ids) given x [B, T, d], the residual stream entering layer `from` of ids (what the
  // residual tap hands out; from = n_layers: the last layer's output), running only the layers
  // from there on: SLEB's search (pruning/depth.h) re-runs the model from where it changes.
  at::Tensor loss_sum_from(const at::Tensor& x, int64_t from, const at::Tensor& ids) const;
  // The same as a number, with the count of predicted tokens.
  std::pair<double, int64_t> nll(const at::Tensor& ids) const;
  // loss_sum(ids) · scale and its backward into every weight that requires grad, holding only the
  // residual stream between layers: the forward keeps each layer's input, the backward runs each
  // layer's forward again, one layer at a time (activation checkpointing: one more forward pass, at
  // most one layer's activations held). Each weight's gradient is accumulated once, the tied
  // embedding's too, as in loss_sum(ids).backward(). Returns loss_sum(ids). No skipped layers.
  double backward_checkpointed(const at::Tensor& ids, double scale) const;

  // Activation taps, for activation-based importance: while set, every forward pass hands the
  // observer the input of each group of linear layers (this rank's columns of it):
  //   attn_in  -> q, k, v     attn_out -> o     mlp_in -> gate, up     mlp_hidden -> down
  //   head_in  -> the LM head (layer -1)
  //   residual -> none: the residual stream entering layer l (l = n_layers: the last layer's output,
  //               before the final norm), replicated over TP
  using Tap = model::Tap;
  using Observer = std::function<void(int64_t layer, Tap tap, const at::Tensor& input)>;
  void set_observer(Observer observer) { observer_ = std::move(observer); }
  // The forward pass up to the LM head's input, for the observer alone: every tap, no logits.
  void observe(const at::Tensor& ids) const;

  // LoRA adapters (runtime/train/lora.h makes them): y = x Wᵀ + scale · dropout(x) Aᵀ Bᵀ on each
  // projection that has one. a: [r, in], b: [out, r], this rank's part: column-parallel
  // projections (q, k, v, gate, up) shard b by rows, row-parallel ones (o, down) shard a by
  // columns, so the adapter's output joins the partial sum before the existing all-reduce.
  // Dropout masks are drawn for the whole input from a generator seeded by (dropout_seed,
  // layer, projection), then sliced, so every TP layout drops the same elements.
  using Proj = model::Proj;
  struct Adapter {
    at::Tensor a, b;
    double scale = 0, dropout = 0;
  };
  void set_adapter(int64_t layer, Proj p, Adapter adapter);
  const Adapter& adapter(int64_t layer, Proj p) const { return adapters_.at(layer)[static_cast<int>(p)]; }
  Adapter& adapter(int64_t layer, Proj p) { return adapters_.at(layer)[static_cast<int>(p)]; }
  // Training mode turns adapter dropout on; the seed changes per step.
  void set_training(bool on, uint64_t dropout_seed = 0) {
    training_ = on;
    dropout_seed_ = dropout_seed;
  }

  // Layers the forward pass leaves out, passing their input on unchanged (SLEB's search in
  // pruning/depth.h): one flag per layer, or empty for none. Not with a KV cache.
  void set_skipped_layers(std::vector<bool> skip);

  // Neuron masks on the MLP (training-time pruning, pruning/movement.h): mask [d_ff] of the whole
  // layer, 0/1, multiplied into this rank's part of the gate and up outputs and of the down input,
  // which is what masking gate/up rows and down columns computes; a gradient reaching the mask is
  // then Σ G ⊙ W over the neuron's three weights (GPT-2: no gradient through the fc bias). An
  // undefined mask = no masking.
  void set_mlp_mask(int64_t layer, at::Tensor mask);
  void clear_mlp_masks() { mlp_masks_.clear(); }

  // Every weight under its canonical name, in a stable order (embedding, layers, norm, head).
  NamedTensors named_tensors() const;
  std::vector<at::Tensor*> parameters();

 private:
  Decoder(ModelConfig config, parallel::Group tp);   // shapes and plan only; weights undefined
  struct Slot {
    std::string name;
    at::Tensor* tensor;
    std::vector<int64_t> shape;
    bool norm;                 // a norm's scale
  };
  std::vector<Slot> slots();   // the spec's weights for this rank's config, with where each lives
  at::Tensor* slot(Role role, int64_t layer);

  at::Tensor attention(int64_t l, const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                       KVCache* cache, const Layout* layout) const;
  at::Tensor mlp(int64_t l, const at::Tensor& x) const;
  // Layers from..n_layers − 1 (not the skipped ones) on the residual stream x at positions pos, then
  // the final norm.
  at::Tensor layers(at::Tensor x, int64_t from, const at::Tensor& pos, KVCache* cache, const Layout* layout) const;
  at::Tensor block(int64_t l, const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, KVCache* cache,
                   const Layout* layout) const;                // layer l on the residual stream
  // RoPE's cos and signed sin tables for positions pos ([B, 1, T, D] per_row, else [T, D]); none for GPT-2.
  std::pair<at::Tensor, at::Tensor> rope(const at::Tensor& pos, bool per_row) const;
  // The residual stream entering layer 0: the embedding (+ GPT-2's learned positions).
  at::Tensor embed_positions(const at::Tensor& ids, const at::Tensor& pos, int64_t past, const Layout* layout,
                             bool sparse_grad = false) const;
  // h: the final hidden states; head: the LM head's weight if not head_weight().
  at::Tensor head_loss_sum(const at::Tensor& h, const at::Tensor& ids, const Distill* kd,
                           const at::Tensor& predict, const at::Tensor* head = nullptr) const;
  at::Tensor norm(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) const;
  at::Tensor embed(const at::Tensor& ids, bool sparse_grad = false) const;
  // at::linear plus the projection's adapter, if any.
  at::Tensor project(int64_t l, Proj p, const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) const;
  void tap(int64_t layer, Tap t, const at::Tensor& x) const {
    if (observer_) observer_(layer, t, x);
  }

  ModelConfig config_, local_;
  ShardPlan plan_;
  parallel::Group tp_;
  at::Tensor embed_, pos_embed_, norm_w_, norm_b_, lm_head_;
  std::vector<LayerWeights> layers_;
  std::vector<std::array<Adapter, kProjCount>> adapters_;
  std::vector<at::Tensor> mlp_masks_;
  std::vector<bool> skipped_;
  bool training_ = false;
  uint64_t dropout_seed_ = 0;
  Observer observer_;
};

}  // namespace secateur::model
