#include "parallel/tensor_parallel/vocab_parallel.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

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

at::Tensor vocab_parallel_embedding(const at::Tensor& rows, const at::Tensor& ids, Range vocab, Group tp,
                                    bool sparse_grad) {
  if (tp.alone()) return at::embedding(rows, ids, -1, false, sparse_grad);
  // Each rank looks up the ids in its rows, zeros elsewhere, then one sum.
  const auto [index, mine] = local_rows(ids, vocab);                                 // [B, T]
  const at::Tensor x = at::embedding(rows, index, -1, false, sparse_grad);
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

namespace {

struct LinearCe {
  at::Tensor loss, dh, dw;
};

// The loss, and (when asked) its gradients with respect to h and W, chunk by chunk (see the header).
LinearCe linear_ce(const at::Tensor& h, const at::Tensor& w, const at::Tensor& target, const at::Tensor& weight,
                   Range vocab, Group tp, int64_t chunk_rows, bool want_dh, bool want_dw) {
  at::NoGradGuard no_grad;
  const at::ScalarType acc = at::promote_types(h.scalar_type(), at::kFloat);
  const int64_t n = h.size(0);
  LinearCe out{at::zeros({}, h.options().dtype(acc)), {}, {}};
  if (want_dh) out.dh = at::empty_like(h);
  if (want_dw) out.dw = at::zeros_like(w);
  for (int64_t r0 = 0; r0 < n; r0 += chunk_rows) {
    const int64_t c = std::min(chunk_rows, n - r0);
    const at::Tensor hc = h.narrow(0, r0, c);
    at::Tensor z = at::linear(hc, w).to(acc);                                          // [c, V_local]
    const auto [index, mine] = local_rows(target.narrow(0, r0, c), vocab);
    const at::Tensor mine_f = mine.to(acc);
    const at::Tensor picked = reduce_from_tp(z.gather(1, index.unsqueeze(1)).squeeze(1) * mine_f, tp);
    const at::Tensor m = max(tp, std::get<0>(z.max(-1, true)));                        // [c, 1]
    z.sub_(m).exp_();                                                                  // z is exp(z - m) now
    const at::Tensor sum = reduce_from_tp(z.sum(-1), tp);                              // [c]
    at::Tensor ce = sum.log() + m.squeeze(1) - picked;
    const at::Tensor wc = weight.numel() > 0 ? weight.narrow(0, r0, c).to(acc) : at::Tensor();
    if (wc.defined()) ce = ce * wc;
    out.loss += ce.sum();
    if (!want_dh && !want_dw) continue;
    // d(Σ w NLL)/dz = w · (softmax − onehot(target)), the onehot only on the rank holding the target.
    z.div_(sum.unsqueeze(1));
    z.scatter_add_(1, index.unsqueeze(1), -mine_f.unsqueeze(1));
    if (wc.defined()) z.mul_(wc.unsqueeze(1));
    const at::Tensor g = z.to(h.scalar_type());
    if (want_dh) out.dh.narrow(0, r0, c).copy_(at::mm(g, w));
    if (want_dw) out.dw.addmm_(g.t(), hc);
  }
  return out;
}

struct LinearCrossEntropy : torch::autograd::Function<LinearCrossEntropy> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& h, const at::Tensor& w,
                            const at::Tensor& target, const at::Tensor& weight, int64_t comm, int64_t vocab_begin,
                            int64_t vocab_end, int64_t chunk_rows, bool want_dh, bool want_dw) {
    LinearCe r = linear_ce(h, w, target, weight, Range{vocab_begin, vocab_end}, Group(reinterpret_cast<Comm*>(comm)),
                           chunk_rows, want_dh, want_dw);
    ctx->saved_data["dh"] = r.dh;
    ctx->saved_data["dw"] = r.dw;
    return r.loss;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad) {
    const auto scaled = [&](const char* key) {   // in place: the saved gradients are used once
      at::Tensor t = ctx->saved_data[key].toTensor();
      return t.defined() ? t.mul_(grad[0].to(t.scalar_type())) : at::Tensor();
    };
    at::Tensor dh = scaled("dh"), dw = scaled("dw");
    ctx->saved_data.clear();
    return {dh, dw, {}, {}, {}, {}, {}, {}, {}, {}};
  }
};

}  // namespace

at::Tensor vocab_parallel_linear_cross_entropy(const at::Tensor& h, const at::Tensor& rows, const at::Tensor& target,
                                               const at::Tensor& weight, Range vocab, Group tp, int64_t chunk_rows) {
  const bool grad = at::GradMode::is_enabled();
  const bool want_dh = grad && h.requires_grad(), want_dw = grad && rows.requires_grad();
  // Autograd takes no undefined inputs: "no weights" is an empty tensor.
  const at::Tensor w = weight.defined() ? weight : at::empty({0}, h.options().dtype(at::kFloat));
  if (!want_dh && !want_dw) return linear_ce(h, rows, target, w, vocab, tp, chunk_rows, false, false).loss;
  return LinearCrossEntropy::apply(h, rows, target, w, reinterpret_cast<int64_t>(tp.comm()), vocab.begin,
                                   vocab.end, chunk_rows, want_dh, want_dw);
}

}  // namespace secateur::parallel
