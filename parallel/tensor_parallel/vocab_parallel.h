// parallel/tensor_parallel/vocab_parallel.h — the embedding and the LM head split by vocabulary
// rows over TP (Megatron): each rank holds the rows of `vocab`, and the full logits [N, V] are
// never gathered. On a group of one these are the plain operations (fused kernels).
#pragma once
#include <ATen/core/Tensor.h>

#include "parallel/collectives.h"
#include "parallel/split.h"

namespace secateur::parallel {

// rows [V_local, d] of the embedding, ids [B, T] of the whole vocabulary -> [B, T, d] on every rank.
at::Tensor vocab_parallel_embedding(const at::Tensor& rows, const at::Tensor& ids, Range vocab, Group tp);

// log Σ_v exp(z_v) over the whole vocabulary: z [N, V_local] -> [N].
at::Tensor vocab_parallel_logsumexp(const at::Tensor& z, Group tp);

// Next-token NLL per row: logits [N, V_local], target [N] of the whole vocabulary -> [N].
at::Tensor vocab_parallel_cross_entropy(const at::Tensor& logits, const at::Tensor& target, Range vocab, Group tp);

// KL(teacher ‖ student) per row from logits already divided by the temperature, [N, V_local] -> [N].
at::Tensor vocab_parallel_kl(const at::Tensor& teacher, const at::Tensor& student, Group tp);

}  // namespace secateur::parallel
