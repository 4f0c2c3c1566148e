// runtime/train/lora.h — LoRA (Hu et al.) on a Decoder's projections, as LLM-Pruner recovers:
// rank r, alpha, dropout, targets q, k, v, o, gate, up, down by default. A ~ U(±1/√in) (PEFT's
// kaiming-uniform bound), B = 0, so a fresh adapter leaves the model's outputs unchanged. Both are
// drawn for the whole matrix from a generator seeded by (seed, layer, projection) and then sliced,
// so every TP layout starts from the same adapters. Tensor-parallel: see Decoder::Adapter.
#pragma once
#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

#include "runtime/model/decoder.h"

namespace secateur::train {

struct LoraOptions {
  int64_t rank = 8;
  double alpha = 16;
  double dropout = 0.05;
  std::vector<std::string> targets = model::proj_names();
  uint64_t seed = 0;
};

// One trainable tensor: PEFT-style name, the tensor (this rank's part), and how it lies over TP.
struct Trainable {
  std::string name;
  at::Tensor* tensor;
  bool sharded;         // a TP shard (its gradient is complete); else replicated over TP
  bool partial_grad;    // replicated, but each TP rank holds only a partial sum of its gradient
  double lr = 0;        // its own peak learning rate (0 = the run's), on the run's schedule
  bool decay = true;    // weight decay applies
};

// Adds adapters in the model's dtype and on its device; Error naming an unknown target.
std::vector<Trainable> add_lora(model::Decoder& model, const LoraOptions& opt);
int64_t lora_parameter_count(const model::ModelConfig& config, const LoraOptions& opt);   // the whole model's
// W += scale · B A for every adapter, then the adapters are dropped.
void merge_lora(model::Decoder& model);

// Full fine-tuning: every weight of the model.
std::vector<Trainable> all_weights(model::Decoder& model);

}  // namespace secateur::train
