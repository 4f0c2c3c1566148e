// runtime/model/spec.h — the model spec: the one place that knows an architecture's tensors.
// Per architecture: every tensor with its canonical and GGUF names, the named dimension each of
// its axes belongs to, how tensor parallelism splits it, which projection it is and which
// activation it reads. Everything else is derived from this table: the Decoder's weight slots,
// the pruning groups (a group is every slice along one named dimension), the TP shard of a
// tensor, LoRA and sparsity targets, the readers of activation taps, the checkpoint name maps,
// the parameter count and what removing units does to a ModelConfig.
// Adding an architecture means one ArchSpec (register_arch), the forward code that differs
// (Family) and, where its checkpoint is not stored under canonical names, the loader's map.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "parallel/tensor_parallel/shard.h"
#include "runtime/model/config.h"

namespace secateur::model {

// The named dimension an axis belongs to. q = query heads × head_dim of the layer, kv = kv-heads
// × head_dim, d_ff = MLP neurons; pruning removes units along hidden, q, kv and d_ff.
enum class Dim { vocab, positions, hidden, q, kv, d_ff };

// How tensor parallelism (Megatron) splits a tensor: column = by output rows (dim 0), row = by
// input columns (dim 1), vocab = embedding / LM head rows by vocabulary; replicated = whole.
using parallel::Split;

// The linear layers of a block; their short names are the config's targets (LoRA, sparsity).
enum class Proj { q, k, v, o, gate, up, down };
constexpr int kProjCount = 7;
const char* proj_name(Proj p);                                   // q, k, v, o, gate, up, down
std::vector<std::string> proj_names();                           // all of them, in that order
Proj parse_proj(const std::string& name, const std::string& key);   // Error naming key and the allowed names

// Activation taps: the input of each group of linear layers (see Decoder::set_observer), and the
// residual stream between layers (what whole-layer criteria compare; no weight reads it).
enum class Tap { attn_in, attn_out, mlp_in, mlp_hidden, head_in, residual };

// What the forward code binds a tensor to.
enum class Role {
  embed, positions, norm_w, norm_b, lm_head,                                  // model-wide
  ln1_w, ln1_b, q_w, q_b, k_w, k_b, v_w, v_b, o_w, o_b,                        // attention block
  ln2_w, ln2_b, gate_w, gate_b, up_w, up_b, down_w, down_b,                    // MLP block
};

// When a tensor exists in a model of a given config.
enum class When { always, attention_bias, mlp_bias, untied };

struct TensorSpec {
  Role role;
  std::string name;              // canonical; a layer tensor's name follows the layer prefix
  std::vector<Dim> axes;         // the named dimension of each axis
  Split split = Split::replicated;
  When when = When::always;
  std::optional<Proj> proj;      // the projection a linear layer's weight or bias belongs to
  bool bias = false;
  std::optional<Tap> reads;      // a linear weight: the tap whose activation is its input
  bool norm = false;             // a norm's scale (random weights start near 1)
  std::string gguf;              // GGUF name ("" = none); a layer tensor's follows "blk.<l>."
  bool gguf_rope_rows = false;   // llama.cpp stores these rows permuted for interleaved RoPE
  // The HF checkpoint's name where it is not the canonical one (under ArchSpec::hf_prefix, a layer
  // tensor's after hf_layer_prefix + "<l>."), stored transposed (a Conv1D weight, [in, out]), and
  // part hf_part of a tensor that several share along the output axis (GPT-2's c_attn: q, k, v).
  std::string hf;
  bool hf_transposed = false;
  int hf_part = -1;
};

// The coupled dimensions that pruning removes units of (pruning::GroupKind).
enum class Unit { neuron, query_head, kv_group, hidden_channel, layer };

struct ArchSpec {
  std::string name;                  // ModelConfig::arch
  Family family;                     // the forward code that runs it
  std::string hf_model_type;         // config.json's model_type
  std::string hf_class;              // config.json's architectures[0]
  std::string hf_config_class;       // its transformers config class; with widths that differ per layer the
                                     // export is "Secateur" + these (runtime/io/modeling_secateur.py), "" = none
  std::string gguf_arch;             // GGUF general.architecture ("" = no GGUF loader)
  std::string layer_prefix;          // of a layer tensor's name, before the layer's index
  std::string hf_prefix, hf_layer_prefix;   // of TensorSpec::hf names (GPT-2: "transformer.", "h.")
  bool heads_are_kv = false;         // no GQA: every query head is its own kv-group (GPT-2)
  bool hf_llama_keys = true;         // config.json has LlamaConfig's attention_bias, mlp_bias, pretraining_tp
                                     // (Qwen2: its class fixes the biases)
  std::string biased_as;             // what a model of it becomes once o_proj and the MLP have biases (pruning's
                                     // compensation): "" = itself, its flags allow them (LLaMA; GPT-2 has them);
                                     // Qwen2's class has none, so it becomes a LLaMA (q/k/v biases as flags)
  std::vector<TensorSpec> before, layer, after;   // model-wide before the layers, per layer, after

  // Every tensor is stored in HF checkpoints under its canonical name and layout, so a TP rank
  // can read and write its slices in place (GPT-2's fused, transposed ones cannot).
  bool hf_canonical() const;
  const TensorSpec* find(Role role) const;   // nullptr if the architecture has no such tensor
};

// Built in: "llama", "gpt2" and "qwen2". register_arch adds one (tests define their own); Error if the
// name or its hf_model_type is taken.
void register_arch(ArchSpec spec);
const ArchSpec& find_arch(const std::string& name);              // Error listing the known ones
const ArchSpec* find_arch_by_hf_type(const std::string& model_type);   // nullptr if none
const ArchSpec* find_arch_by_gguf(const std::string& gguf_arch);        // nullptr if none
std::string hf_model_types();                                            // "llama, gpt2", for errors
std::string gguf_archs();
const ArchSpec& spec_of(const ModelConfig& c);                   // c.arch, or the family's default

// One tensor of a model of a given config.
struct Weight {
  const TensorSpec* spec;
  int64_t layer;                     // -1 for model-wide tensors
  std::string name;
  std::vector<int64_t> shape;        // for the config it was listed for (a TP shard's local config: its shard)
};

bool present(const TensorSpec& t, const ModelConfig& c);
int64_t extent(const ModelConfig& c, Dim d, int64_t layer);   // size of an axis of this dimension
std::vector<Weight> weights(const ModelConfig& c);              // every tensor c has, in a stable order
std::string layer_prefix(const ModelConfig& c, int64_t layer);    // LLaMA's layer 3: model.layers.3.
std::string tensor_name(const ModelConfig& c, const TensorSpec& t, int64_t layer);

// The spec of a canonical name and its layer (-1 for model-wide); nullopt if it is none of c's.
struct Located {
  const TensorSpec* spec;
  int64_t layer;
};
std::optional<Located> locate(const ModelConfig& c, const std::string& name);
// The same tensor in layer `to` (layers are renumbered when whole layers go).
std::string renumber(const ModelConfig& c, const std::string& name, int64_t to);

// The bias of the projection whose weight (or bias) is `name`; "" when c has none.
std::string bias_of(const ModelConfig& c, const std::string& name);
// The weight of a projection in a layer; "" when the architecture has none (GPT-2's gate).
std::string proj_weight(const ModelConfig& c, int64_t layer, Proj p);
const TensorSpec* proj_spec(const ModelConfig& c, Proj p);        // its weight's spec; nullptr if none
// The weights that read a tap (layer -1: the LM head, which is the embedding when tied).
std::vector<std::string> readers(const ModelConfig& c, int64_t layer, Tap t);

// Units of one kind in a layer (hidden channels: the model's; layers: 1).
int64_t unit_count(const ModelConfig& c, Unit u, int64_t layer);
// The config once these units are gone (layer -1 for hidden channels). A kv-group takes its
// query heads with it, a query head of an architecture without GQA its kv-head; a unit named
// twice goes once; whole layers go last. Error (naming the layer) when what is left breaks the
// model: query heads removed unevenly across a layer's kv-groups, or every hidden channel gone.
struct UnitRef {
  Unit unit;
  int64_t layer, index;
};
ModelConfig without(const ModelConfig& c, const std::vector<UnitRef>& removed);

}  // namespace secateur::model
