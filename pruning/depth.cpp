#include "pruning/depth.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <set>

#include "parallel/collectives.h"
#include "runtime/core/check.h"
#include "runtime/core/progress.h"

namespace secateur::pruning {

namespace {

// The calibration NLL of the model without some layers, summed over every rank's windows. Each
// phase runs the current model once (keep), holding the residual stream entering every candidate
// layer; a candidate's loss then runs only the layers after it, from there.
class Search {
 public:
  Search(model::Decoder& model, const at::Tensor& local, parallel::Comm* dp) : model_(model), local_(local), dp_(dp) {}
  ~Search() {
    model_.set_observer(nullptr);
    model_.set_skipped_layers({});
  }

  void keep(const std::vector<bool>& gone, const std::vector<bool>& wanted) {
    gone_ = gone;
    states_.assign(batches(), std::vector<at::Tensor>(gone.size()));
    int64_t batch = 0;
    model_.set_observer([&](int64_t layer, model::Tap tap, const at::Tensor& x) {
      if (tap == model::Tap::residual && layer < static_cast<int64_t>(wanted.size()) && wanted[layer]) {
        states_[batch][layer] = x.detach();   // never written in place: the forward makes new tensors
      }
    });
    model_.set_skipped_layers(gone);
    at::NoGradGuard no_grad;
    for (; batch < batches(); ++batch) model_.observe(this->batch(batch));
    model_.set_observer(nullptr);
  }

  double without(int64_t layer) {
    std::vector<bool> skip = gone_;
    skip[layer] = true;
    model_.set_skipped_layers(skip);
    at::NoGradGuard no_grad;
    double total = 0;
    for (int64_t b = 0; b < batches(); ++b) {
      total += model_.loss_sum_from(states_[b][layer], layer + 1, batch(b)).item<double>();
    }
    return parallel::sum(dp_, total);
  }

 private:
  static constexpr int64_t kBatch = 8;
  int64_t batches() const { return (local_.size(0) + kBatch - 1) / kBatch; }
  at::Tensor batch(int64_t b) const { return local_.narrow(0, b * kBatch, std::min(kBatch, local_.size(0) - b * kBatch)); }

  model::Decoder& model_;
  const at::Tensor& local_;
  parallel::Comm* dp_;
  std::vector<bool> gone_;
  std::vector<std::vector<at::Tensor>> states_;   // [batch][layer]: the stream entering a candidate
};

}  // namespace

Statistics sleb_search(model::Decoder& model, const at::Tensor& samples, const PruneOptions& opt, parallel::Comm* dp) {
  SECATEUR_CHECK(samples.dim() == 2 && samples.size(0) > 0 && samples.size(1) > 1,
                 "[pruning/depth] calibration samples must be [N, T] with N >= 1, T >= 2");
  const auto t0 = std::chrono::steady_clock::now();
  const model::ModelConfig& c = model.config();
  const int64_t L = c.n_layers();
  const std::vector<int64_t> kept = kept_layers(opt, c);
  const std::set<int64_t> keep(kept.begin(), kept.end());
  const double budget = opt.ratio * static_cast<double>(c.n_params());
  std::vector<int64_t> params(L);
  for (int64_t l = 0; l < L; ++l) params[l] = c.n_params() - model::without(c, {{GroupKind::layer, l, 0}}).n_params();

  const parallel::Range mine = parallel::dp_share(samples.size(0), dp);
  const at::Tensor local = samples.narrow(0, mine.begin, mine.size()).to(model.device());
  const double predicted = static_cast<double>(samples.size(0) * (samples.size(1) - 1));
  Search search(model, local, dp);
  Statistics out;
  out.samples = samples.size(0);
  out.tokens = samples.numel();
  out.sleb_ratio = opt.ratio;
  std::vector<bool> gone(L, false);
  double taken = 0;
  while (static_cast<int64_t>(out.sleb_order.size()) < L - 1) {
    std::vector<bool> wanted(L);
    int64_t candidates = 0;
    double smallest = budget + 1;
    for (int64_t l = 0; l < L; ++l) {
      wanted[l] = !gone[l] && !keep.count(l);
      if (!wanted[l]) continue;
      ++candidates;
      smallest = std::min(smallest, static_cast<double>(params[l]));
    }
    if (candidates == 0 || taken + smallest > budget) break;   // no phase whose every layer is over the budget
    Progress progress(fmt::format("calibration (SLEB, layer {} to go)", out.sleb_order.size() + 1), candidates,
                      "layers");
    search.keep(gone, wanted);
    int64_t best = -1;
    double best_nll = 0;
    for (int64_t l = 0; l < L; ++l) {
      if (!wanted[l]) continue;
      const double nll = search.without(l);
      if (best < 0 || nll < best_nll) best = l, best_nll = nll;   // strict: the lowest layer wins a tie
      progress.add(1);
    }
    if (taken + static_cast<double>(params[best]) > budget) break;
    taken += static_cast<double>(params[best]);
    gone[best] = true;
    out.sleb_order.push_back(best);
    out.sleb_nll.push_back(best_nll / predicted);
    spdlog::info("SLEB: layer {} goes ({} gone), calibration NLL {:.4f} per token", best, out.sleb_order.size(),
                 out.sleb_nll.back());
  }
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return out;
}

}  // namespace secateur::pruning
