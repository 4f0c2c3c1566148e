#include "parallel/tensor_parallel/vocab_parallel.h"

#include <ATen/ATen.h>

#include <algorithm>

#include "parallel/tensor_parallel/mappings.h"

namespace secateur::parallel {

namespace {

// Ids of the whole vocabulary as row indices of this rank's shard, and which ones it holds.
std::pair<at::Tensor, at::Tensor> local_rows(const at::Tensor& ids, Range vocab) {
  const at::Tensor local = ids - vocab.begin;
  const at::Tensor mine = (local >= 0) & (local < vocab.size());
  return {local.clamp(0, std::max<int64_t>(vocab.size() - 1, 0)), mine};
}

}  // namespace

at::Tensor vocab_parallel_embedding(const at::Tensor& rows, const at::Tensor& ids, Range vocab, Group tp) {
  if (tp.alone()) return at::embedding(rows, ids);
  // Each rank looks up the ids in its rows, zeros elsewhere, then one sum.
  const auto [index, mine] = local_rows(ids, vocab);                                 // [B, T]
  const at::Tensor x = at::embedding(rows, index);
  return reduce_from_tp(x * mine.unsqueeze(-1).to(x.scalar_type()), tp);
}

at::Tensor vocab_parallel_logsumexp(const at::Tensor& z, Group tp) {
  // The shards' max is only a shift.
  const at::Tensor m = max(tp, std::get<0>(z.detach().max(-1, true)));                 // [N, 1]
  return reduce_from_tp((z - m).exp().sum(-1), tp).log() + m.squeeze(1);
}

at::Tensor vocab_parallel_cross_entropy(const at::Tensor& logits, const at::Tensor& target, Range vocab, Group tp) {
  if (tp.alone()) return at::cross_entropy_loss(logits, target, {}, at::Reduction::None);
  // The log-sum-exp and the target's logit from the shards.
  const auto [index, mine] = local_rows(target, vocab);
  const at::Tensor picked = logits.gather(1, index.unsqueeze(1)).squeeze(1) * mine.to(logits.scalar_type());
  return vocab_parallel_logsumexp(logits, tp) - reduce_from_tp(picked, tp);
}

at::Tensor vocab_parallel_kl(const at::Tensor& teacher, const at::Tensor& student, Group tp) {
  // KL(t ‖ s) = Σ_v p_t log p_t − Σ_v p_t z_s + lse(z_s), with Σ_v p_t = 1.
  if (tp.alone()) {                                                                  // fused log-softmax kernels
    const at::Tensor log_pt = at::log_softmax(teacher, -1);
    return (log_pt.exp() * (log_pt - at::log_softmax(student, -1))).sum(-1);
  }
  const at::Tensor log_pt = teacher - vocab_parallel_logsumexp(teacher, tp).unsqueeze(1);
  const at::Tensor cross = reduce_from_tp((log_pt.exp() * (log_pt - student)).sum(-1), tp);
  return cross + vocab_parallel_logsumexp(student, tp);
}

}  // namespace secateur::parallel
