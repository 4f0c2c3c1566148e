// runtime/model/config.h — the shape of a decoder model, with widths per layer.
// Pruning makes layers differ (heads, kv-heads and d_ff each per layer), so every
// width that pruning can change is a vector indexed by layer, never one scalar.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace secateur::model {

enum class Family { llama, gpt2 };

const char* family_name(Family f);
Family parse_family(const std::string& name);   // "llama" | "gpt2"; Error otherwise

struct ModelConfig {
  Family family = Family::llama;      // the forward code that runs it
  std::string arch;                   // its model spec (runtime/model/spec.h); "" = the family's own
  int64_t vocab_size = 0;
  int64_t hidden = 0;                 // d_model
  int64_t head_dim = 0;               // kept fixed by pruning (RoPE needs it)
  int64_t max_positions = 2048;       // learned positions (GPT-2) / context length (LLaMA)
  std::vector<int64_t> n_heads;       // query heads per layer
  std::vector<int64_t> n_kv_heads;    // key/value heads per layer (== n_heads without GQA)
  std::vector<int64_t> d_ff;          // MLP width per layer
  double norm_eps = 1e-5;
  double rope_theta = 10000.0;        // LLaMA only
  bool tied_embeddings = false;
  bool attention_bias = false;        // q/k/v/o biases (GPT-2: true)
  bool mlp_bias = false;              // MLP biases (GPT-2: true)
  int64_t bos_id = -1, eos_id = -1, pad_id = -1;

  int64_t n_layers() const { return static_cast<int64_t>(n_heads.size()); }
  // Query heads per kv-group in layer l (0 when the layer has no attention left).
  int64_t group_size(int64_t l) const { return n_kv_heads.at(l) > 0 ? n_heads.at(l) / n_kv_heads.at(l) : 0; }
  bool uniform() const;               // every layer has the same widths (a stock HF config can describe it)
  int64_t n_params() const;           // parameters of every tensor of its spec (tied embeddings once)
  void validate() const;              // Error naming the first inconsistent field

  // Uniform constructor helper.
  static ModelConfig make(Family family, int64_t vocab, int64_t hidden, int64_t layers, int64_t heads,
                          int64_t kv_heads, int64_t d_ff);
};

}  // namespace secateur::model
