// parallel/tensor_parallel/vocab_parallel.h — the embedding and the LM head split by vocabulary
// rows over TP (Megatron): each rank holds the rows of `vocab`, and the full logits [N, V] are
// never gathered. On a group of one these are the plain operations (fused kernels).
#pragma once
#include <ATen/core/Tensor.h>

#include "parallel/collectives.h"
#include "parallel/split.h"

namespace secateur::parallel {

// rows [V_local, d] of the embedding, ids [B, T] of the whole vocabulary -> [B, T, d] on every rank.
// sparse_grad: the gradient of rows is a sparse tensor of the looked-up rows, not a dense [V_local, d].
at::Tensor vocab_parallel_embedding(const at::Tensor& rows, const at::Tensor& ids, Range vocab, Group tp,
                                    bool sparse_grad = false);

// log Σ_v exp(z_v) over the whole vocabulary: z [N, V_local] -> [N].
at::Tensor vocab_parallel_logsumexp(const at::Tensor& z, Group tp);

// Next-token NLL per row: logits [N, V_local], target [N] of the whole vocabulary -> [N].
at::Tensor vocab_parallel_cross_entropy(const at::Tensor& logits, const at::Tensor& target, Range vocab, Group tp);

// Σ_t w_t · NLL_t of the logits h W^T, without ever holding them whole: h [N, d] (after copy_to_tp),
// rows [V_local, d] of the head, target [N] of the whole vocabulary, weight [N] or undefined (all 1)
// -> a scalar in float32 (float64 for a float64 h). The logits are made `rows` tokens at a time, and
// where a gradient is wanted (grad mode on and h or W requiring it) each chunk's gradients of h and W
// are taken at once from its softmax and summed, so the backward only hands them out: peak memory is
// one chunk's logits and the gradients' own size, whatever N is, at the FLOPs of the plain path.
at::Tensor vocab_parallel_linear_cross_entropy(const at::Tensor& h, const at::Tensor& rows, const at::Tensor& target,
                                               const at::Tensor& weight, Range vocab, Group tp, int64_t chunk_rows);

// KL(teacher ‖ student) per row from logits already divided by the temperature, [N, V_local] -> [N].
at::Tensor vocab_parallel_kl(const at::Tensor& teacher, const at::Tensor& student, Group tp);

}  // namespace secateur::parallel
