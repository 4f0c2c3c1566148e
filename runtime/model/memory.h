// runtime/model/memory.h — a model of the peak memory of one rank on the prune path (load, score
// with the first-order Taylor criteria, apply, export) and in recovery (LoRA, full, KD), from the
// model's shape alone, to plan a run before it starts (`secateur memory`) and to check against what
// tools/bench/scale.py measures.
//
// Per rank (b = bytes per element of the compute dtype; N = calibration tokens of this DP rank;
// local widths = this TP rank's shard; every size in bytes):
//   W        = Σ this rank's weight shards (exact: the spec's tensors, the shard plan's slices)
//   A_layer  = N · b · (4 d + 5 q + 5 kv + 4 f)     what autograd keeps of one layer (norm inputs, q/k/v
//                                                   before and after RoPE, attention in and out, the
//                                                   MLP's gate, up, activation and product)
//   R        = N · b · d · (L + 1)                  the residual stream between layers (recompute)
//   head     = N · V_local · 10 bytes               logits (float32 + model dtype + log-softmax), when
//                                                   N · V_local · 4 ≤ 256 MiB at TP 1; beyond, and at
//                                                   TP > 1, 2 · 64 MiB chunks
//   G        = with hidden-channel scope (the only one that differentiates the embedding and the
//              head), the largest gradient held at once: a tied head's (V_local · d · b, kept through
//              the backward), or the embedding's or the head's, whichever is larger; else 0
//   load     = base + W
//   score    = base + W + head + G + (recompute ? R + A_layer : L · A_layer) + F · W_diff · 4 / b
//              (F: the Fisher criteria's weight-sized float32 sums, 1 for element2, 2 for mixed, over
//              the differentiated weights W_diff);
//              without a backward (activation, Wanda-sp, FLAP): base + W + A_layer + 64 MiB
//   apply    = base + W + the largest layer tensor (each weight released once cut; the embedding
//              and the head are not cut by neuron and head pruning)
//   export   = base + W_pruned + 64 MiB (one piece converted at a time)
// base is the process's own resident memory before any model: the libraries' pages (measured by
// tools/bench/scale.py as the peak of `secateur --help`). The statistics of compensation (least
// squares' Gram matrices) are not modelled.
//
// Recovery (runtime/train/trainer.h), per rank, N = recover.micro_batch · recover.seq_len tokens (a
// micro-batch's graph is what a step holds at once; its gradients accumulate into the same tensors):
//   state    = full: 2 · W (AdamW's two moments, in the weights' dtype); LoRA: 4 · the adapters
//              (r · (in + out) per projection, with their gradients and moments)
//   grads    = full: W (the gradients, formed in the backward; none before it)
//   act      = L · A_layer(N), + for LoRA with dropout L · N · (b + 1) · (5 d + q + f) (each adapter's
//              dropped input and its mask)
//   head     = as for scoring, on N tokens; with KD the plain path on every chunk: N · V_local · 12 bytes
//              kept for the backward (the student's log-softmax at 1 and at T, the teacher's softmax, float32)
//              and, live while one chunk of 256 positions is computed, 20 bytes more an element (both
//              models' float32 logits, the teacher's log-softmax, the difference and its product)
//   teacher  = KD: W (a teacher of the student's shape; a dense teacher of a pruned student is larger by
//              the pruned part) + its final hidden states N · d · b
//   step     = full: 2 · the largest tensor (AdamW's temporaries for one tensor; the gradient norm
//              squares 16M elements at a time)
//   recover  = base + W + teacher + state + max(act + head + (full: the head's or embedding's gradient,
//              the backward's first), grads + step): a layer's activations are freed as its gradients form
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "runtime/model/config.h"

namespace secateur::model {

struct MemoryInputs {
  int tp = 1, dp = 1;
  int64_t dtype_bytes = 2;          // of the compute dtype
  int64_t samples = 10, seq = 64;   // the calibration, all DP ranks together
  bool recompute = true;            // calibration.recompute
  bool gradients = true;            // the criterion needs a backward (Taylor); else one forward (activation, FLAP)
  int fisher_buffers = 0;           // weight-sized float32 sums the criterion keeps (element2: F; mixed: F, Σ g)
  bool model_wide = false;          // gradients of the embedding and head too (hidden-channel scope)
  double ratio = 0.2;               // the fraction of parameters pruned (the export's size)
  double base_bytes = 480.0 * (1 << 20);
};

struct MemoryEstimate {             // bytes, for the rank with the largest peak
  int rank = 0;
  double weights = 0, activations = 0, head = 0, gradient = 0;
  double load = 0, score = 0, apply = 0, export_ = 0;
  double peak() const;
};

// Per TP rank (DP ranks of the same TP rank are alike but for their share of the tokens: the first is taken).
std::vector<MemoryEstimate> estimate_prune_memory(const ModelConfig& full, const MemoryInputs& in);

struct RecoveryInputs {
  int tp = 1;                       // DP ranks each hold the same (micro-batches are per rank)
  int64_t dtype_bytes = 2;
  int64_t micro_batch = 4, seq = 128;   // recover.micro_batch, recover.seq_len
  bool full = false;                // recover.method full; else LoRA
  int64_t lora_rank = 8;
  bool lora_dropout = true;         // recover.lora_dropout > 0
  bool distill = false;             // recover.distill: a teacher of the same shape on the same ranks
  double base_bytes = 480.0 * (1 << 20);
};

struct RecoveryEstimate {           // bytes
  int rank = 0;
  double weights = 0, state = 0, gradients = 0, activations = 0, head = 0, teacher = 0, step = 0, peak = 0;
};

std::vector<RecoveryEstimate> estimate_recovery_memory(const ModelConfig& full, const RecoveryInputs& in);

}  // namespace secateur::model
