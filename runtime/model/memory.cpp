// runtime/model/memory.cpp — the memory model (see memory.h).
#include "runtime/model/memory.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "runtime/model/shard.h"
#include "runtime/model/spec.h"

namespace secateur::model {

double MemoryEstimate::peak() const { return std::max({load, score, apply, export_}); }

namespace {

constexpr double kMiB = 1 << 20;

// One TP rank's sizes, bytes in the compute dtype b.
struct RankSizes {
  ModelConfig local;
  double weights = 0, largest_layer_tensor = 0, largest_tensor = 0, embed = 0, head = 0, layers = 0;
  double layer_bytes_per_token = 0;   // A_layer / N: what autograd keeps of the widest layer
  double lora_inputs_per_token = 0;   // the widest layer's Σ of its projections' local input widths
  double lora_elements_per_rank = 0;  // Σ over every projection of (in + out) of its local shape
};

// Whether a weight is one of the projections LoRA adapts (the spec's q, k, v, o, gate, up, down).
bool is_projection(const ModelConfig& c, const Weight& w) {
  for (int p = 0; p < kProjCount; ++p) {
    if (w.spec == proj_spec(c, static_cast<Proj>(p))) return true;
  }
  return false;
}

RankSizes rank_sizes(const ModelConfig& full, int rank, int tp, double b) {
  const ShardPlan plan = ShardPlan::make(full, rank, tp);
  RankSizes r;
  r.local = plan.local_config(full);
  std::vector<double> lora_inputs(static_cast<size_t>(r.local.n_layers()), 0.0);
  for (const Weight& w : weights(r.local)) {
    double n = b;
    for (int64_t s : w.shape) n *= static_cast<double>(s);
    r.weights += n;
    r.largest_tensor = std::max(r.largest_tensor, n);
    if (w.layer >= 0) r.largest_layer_tensor = std::max(r.largest_layer_tensor, n);
    if (w.layer >= 0) r.layers += n;
    if (w.spec->role == Role::embed) r.embed = n;
    if (w.spec->role == Role::lm_head) r.head = n;
    // An adapter's A is [r, in] and B [out, r] of the local shape: A whole and B cut for a
    // column-parallel projection, the other way round for a row-parallel one.
    if (w.layer >= 0 && is_projection(r.local, w)) {
      r.lora_elements_per_rank += static_cast<double>(w.shape[0] + w.shape[1]);
      lora_inputs[static_cast<size_t>(w.layer)] += static_cast<double>(w.shape[1]);
    }
  }
  for (double in : lora_inputs) r.lora_inputs_per_token = std::max(r.lora_inputs_per_token, in);
  const double d = static_cast<double>(full.hidden);
  for (int64_t l = 0; l < r.local.n_layers(); ++l) {
    const double q = static_cast<double>(r.local.n_heads[l] * r.local.head_dim);
    const double kv = static_cast<double>(r.local.n_kv_heads[l] * r.local.head_dim);
    const double f = static_cast<double>(r.local.d_ff[l]);
    r.layer_bytes_per_token = std::max(r.layer_bytes_per_token, b * (4 * d + 5 * q + 5 * kv + 4 * f));
  }
  return r;
}

// The LM head's loss on N tokens without distillation (Decoder::head_loss_sum).
double head_bytes(double tokens, double v_local, int tp) {
  return tp == 1 && tokens * v_local * 4 <= 256 * kMiB ? tokens * v_local * 10 : 2 * 64 * kMiB;
}

}  // namespace

std::vector<MemoryEstimate> estimate_prune_memory(const ModelConfig& full, const MemoryInputs& in) {
  const double b = static_cast<double>(in.dtype_bytes);
  const double tokens = std::ceil(static_cast<double>(in.samples) / in.dp) * static_cast<double>(in.seq);
  const double d = static_cast<double>(full.hidden), L = static_cast<double>(full.n_layers());
  std::vector<MemoryEstimate> out;
  for (int rank = 0; rank < in.tp; ++rank) {
    const RankSizes r = rank_sizes(full, rank, in.tp, b);
    MemoryEstimate e;
    e.rank = rank;
    e.weights = r.weights;
    const double layer = tokens * r.layer_bytes_per_token;
    e.activations = in.recompute ? tokens * b * d * (L + 1) + layer : L * layer;
    e.head = head_bytes(tokens, static_cast<double>(r.local.vocab_size), in.tp);
    e.load = in.base_bytes + e.weights;
    if (in.gradients) {
      const double wide = in.model_wide ? (full.tied_embeddings ? r.embed : std::max(r.embed, r.head)) : 0;
      e.gradient = wide + in.fisher_buffers * (in.model_wide ? e.weights : r.layers) * 4 / b;
      e.score = e.load + e.activations + e.head + e.gradient;
    } else {
      e.activations = layer;
      e.head = 64 * kMiB;
      e.score = e.load + e.activations + e.head;
    }
    e.apply = e.load + r.largest_layer_tensor;   // what a cut copies (the embedding and head stay whole)
    e.export_ = in.base_bytes + e.weights * (1 - in.ratio) + 64 * kMiB;
    out.push_back(e);
  }
  return out;
}

std::vector<RecoveryEstimate> estimate_recovery_memory(const ModelConfig& full, const RecoveryInputs& in) {
  const double b = static_cast<double>(in.dtype_bytes);
  const double tokens = static_cast<double>(in.micro_batch * in.seq);
  const double d = static_cast<double>(full.hidden), L = static_cast<double>(full.n_layers());
  std::vector<RecoveryEstimate> out;
  for (int rank = 0; rank < in.tp; ++rank) {
    const RankSizes r = rank_sizes(full, rank, in.tp, b);
    const double v_local = static_cast<double>(r.local.vocab_size);
    RecoveryEstimate e;
    e.rank = rank;
    e.weights = r.weights;
    const double lora = static_cast<double>(in.lora_rank) * b * r.lora_elements_per_rank;   // this rank's adapters
    e.state = in.full ? 2 * e.weights : 4 * lora;
    e.gradients = in.full ? e.weights : 0;
    e.activations = L * tokens * r.layer_bytes_per_token;
    if (!in.full && in.lora_dropout) e.activations += L * tokens * (b + 1) * r.lora_inputs_per_token;
    if (in.distill) {
      const double chunk_rows = std::min(tokens, 256.0 * static_cast<double>(in.micro_batch));
      e.head = tokens * v_local * 12 + chunk_rows * v_local * 20;
      e.teacher = e.weights + tokens * d * b;
    } else {
      e.head = head_bytes(tokens, v_local, in.tp);
    }
    e.step = in.full ? 2 * r.largest_tensor : 0;
    // The forward's graph and the weights' gradients are not held whole at once: the backward frees
    // each layer's activations as it forms that layer's gradients, and begins with the head's.
    const double graph = e.activations + e.head + (in.full ? std::max(r.embed, r.head) : 0);
    e.peak = in.base_bytes + e.weights + e.teacher + e.state + std::max(graph, e.gradients + e.step);
    out.push_back(e);
  }
  return out;
}

}  // namespace secateur::model
