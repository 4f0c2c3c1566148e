#include "pruning/redundancy.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include "parallel/collectives.h"
#include "pruning/movement.h"
#include "runtime/core/check.h"
#include "runtime/core/log.h"

namespace secateur::pruning {

namespace {

// Per neuron i: is there a j > i (`later`, the strict upper triangle) with cos_ij >= t?
at::Tensor has_partner(const at::Tensor& cos, const at::Tensor& later, double t) { return ((cos >= t) & later).any(1); }

}  // namespace

at::Tensor reconstructability(const at::Tensor& gram, double ridge) {
  // The regression on the Gram matrix normalised to a unit diagonal (R² does not change when a
  // neuron is scaled), so the ridge weighs every neuron alike; a dead neuron stands alone.
  const at::Tensor C = gram.to(at::kDouble);
  const at::Tensor diag = C.diagonal();
  const at::Tensor live = diag > 0;
  const at::Tensor root = at::where(live, diag, at::ones_like(diag)).sqrt();
  at::Tensor K = C / (root.unsqueeze(1) * root.unsqueeze(0));
  K.masked_fill_(~live.unsqueeze(0) | ~live.unsqueeze(1), 0.0);
  K.diagonal().fill_(1.0);
  const at::Tensor P = at::linalg_inv(K + ridge * at::eye(C.size(0), K.options()));
  const at::Tensor r2 = (1 - (1 / P.diagonal() - ridge)).clamp(0, 1);
  return at::where(live, r2, at::zeros_like(r2));
}

namespace {

// Uniqueness and reconstructability of a layer's neurons from their Gram matrix C (all of them).
void similarity_report(const at::Tensor& C, double ridge, nlohmann::json& j) {
  const double f = static_cast<double>(C.size(0));
  const at::Tensor diag = C.diagonal();
  const at::Tensor root = diag.sqrt();
  at::Tensor cos = C / (root.unsqueeze(1) * root.unsqueeze(0) + 1e-6);
  cos.fill_diagonal_(0);
  const at::Tensor r2 = reconstructability(C, ridge);
  const at::Tensor later = at::ones_like(cos, at::kBool).triu(1);
  const at::Tensor similar = has_partner(cos, later, 0.8);
  const double n_similar = similar.sum().item<double>();
  const auto unique = [&](double t) { return 1 - has_partner(cos, later, t).to(at::kDouble).mean().item<double>(); };
  j["unique"] = 1 - n_similar / f;
  j["unique_0.9"] = unique(0.9);
  j["unique_0.99"] = unique(0.99);
  j["r2_above_0.9"] = (r2 > 0.9).to(at::kDouble).mean().item<double>();
  j["r2_above_0.99"] = (r2 > 0.99).to(at::kDouble).mean().item<double>();
  j["similar_also_reconstructable"] = n_similar > 0 ? (similar & (r2 > 0.9)).sum().item<double>() / n_similar : 0.0;
  j["dead"] = (diag == 0).sum().item<int64_t>();
}

}  // namespace

nlohmann::json redundancy_report(model::Decoder& model, const at::Tensor& samples, const RedundancyOptions& opt,
                                 parallel::Comm* dp) {
  SECATEUR_CHECK(samples.dim() == 2 && samples.size(0) > 0 && samples.size(1) > 1 && opt.micro_batch > 0 &&
                     opt.ridge >= 0, "[report] needs windows of at least 2 tokens, micro_batch > 0, ridge >= 0");
  const model::ModelConfig& c = model.config();
  const int64_t L = c.n_layers();
  const parallel::Group tp = model.tp();
  std::vector<CosineStats> stats;
  std::vector<at::Tensor> scores, sens;
  for (int64_t l = 0; l < L; ++l) {
    const model::Range rows = model.plan().layers[l].neurons;
    SECATEUR_CHECK(c.d_ff[l] == 0 || rows.size() > 0, "[report] layer {} has {} MLP neurons, fewer than the TP ranks",
                   l, c.d_ff[l]);
    stats.emplace_back(c.d_ff[l], rows);
    scores.push_back(at::zeros({c.d_ff[l]}, at::TensorOptions(model.device()).dtype(model.dtype())).requires_grad_(true));
    sens.push_back(at::zeros({c.d_ff[l]}, at::TensorOptions(model.device()).dtype(at::kDouble)));
    // Sensitivity through a mask of ones: its gradient is Σ G ⊙ W over each neuron's weights.
    model.set_mlp_mask(l, at::ones_like(scores[l]) + (scores[l] - scores[l].detach()));
  }
  model.set_observer([&](int64_t layer, model::Decoder::Tap tap, const at::Tensor& input) {
    if (tap != model::Decoder::Tap::mlp_hidden) return;
    const at::Tensor h = input.detach().reshape({-1, input.size(-1)}).to(at::kDouble);   // on its device
    stats[layer].add(h, parallel::gather(tp, h, 1));
  });
  // Batches are fixed windows of the sample list; each DP rank takes its share of them.
  const int64_t n = samples.size(0), batches = (n + opt.micro_batch - 1) / opt.micro_batch;
  SECATEUR_CHECK(batches >= parallel::size_of(dp), "[report] {} batches of {} windows cannot be split over {} DP ranks",
                 batches, opt.micro_batch, parallel::size_of(dp));
  const parallel::Range mine = parallel::dp_share(batches, dp);
  for (int64_t b = mine.begin; b < mine.end; ++b) {
    const at::Tensor ids = samples.narrow(0, b * opt.micro_batch, std::min(opt.micro_batch, n - b * opt.micro_batch))
                               .to(model.device());
    for (at::Tensor& s : scores) s.mutable_grad().reset();
    const double tokens = static_cast<double>(ids.size(0) * (ids.size(1) - 1));
    (model.loss_sum(ids) / tokens).backward();
    for (int64_t l = 0; l < L; ++l) {
      if (scores[l].grad().defined()) sens[l] += scores[l].grad().to(at::kDouble).abs();   // this rank's neurons
    }
  }
  model.clear_mlp_masks();
  model.set_observer(nullptr);
  at::NoGradGuard no_grad;
  nlohmann::json layers = nlohmann::json::array();
  double sens_total = 0, unique_n = 0, r2_9 = 0, r2_99 = 0, neurons = 0;
  for (int64_t l = 0; l < L; ++l) {
    stats[l].commit(1.0, dp);                                    // plain sums over every token
    parallel::sum(tp, sens[l]);
    parallel::sum(dp, sens[l]);
    const at::Tensor s = sens[l] / static_cast<double>(batches);
    const int64_t f = c.d_ff[l];
    nlohmann::json j = {{"layer", l}, {"neurons", f}, {"sensitivity_sum", s.sum().item<double>()},
                        {"sensitivity_mean", f ? s.mean().item<double>() : 0.0}};
    if (f > 0 && !stats[l].empty()) {
      similarity_report(parallel::gather(tp, stats[l].gram_rows()), opt.ridge, j);
      unique_n += j["unique"].get<double>() * static_cast<double>(f);
      r2_9 += j["r2_above_0.9"].get<double>() * static_cast<double>(f);
      r2_99 += j["r2_above_0.99"].get<double>() * static_cast<double>(f);
    }
    sens_total += j["sensitivity_sum"].get<double>();
    neurons += static_cast<double>(f);
    layers.push_back(j);
  }
  const double tokens = static_cast<double>(n * (samples.size(1) - 1));   // predicted tokens
  return {{"neurons", neurons}, {"tokens", tokens}, {"batches", batches}, {"sensitivity_sum", sens_total},
          {"unique", neurons ? unique_n / neurons : 0.0}, {"r2_above_0.9", neurons ? r2_9 / neurons : 0.0},
          {"r2_above_0.99", neurons ? r2_99 / neurons : 0.0}, {"ridge", opt.ridge}, {"layers", layers}};
}

}  // namespace secateur::pruning
