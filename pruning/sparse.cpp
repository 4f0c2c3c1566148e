#include "pruning/sparse.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <map>

#include "parallel/collectives.h"
#include "pruning/stats.h"
#include "runtime/config/choices.h"
#include "runtime/core/check.h"
#include "runtime/core/log.h"

namespace secateur::pruning {

static_assert(std::size(config::choices::sparse_method) == static_cast<size_t>(SparseMethod::wanda) + 1);

void SparseOptions::validate() const {
  SECATEUR_CHECK(sparsity >= 0 && sparsity < 1, "[config] 'sparse.sparsity' = {} must be in [0, 1)", sparsity);
  SECATEUR_CHECK(gamma >= 0, "[config] 'sparse.gamma' = {} must be >= 0", gamma);
  SECATEUR_CHECK(epsilon > 0, "[config] 'sparse.epsilon' = {} must be > 0", epsilon);
  SECATEUR_CHECK(reweight_every > 0, "[config] 'sparse.reweight_every' = {} must be > 0", reweight_every);
  SECATEUR_CHECK(prune_at > 0 && prune_at <= 1, "[config] 'sparse.prune_at' = {} must be in (0, 1]", prune_at);
  SECATEUR_CHECK(rounds > 0, "[config] 'sparse.rounds' = {} must be > 0", rounds);
  config::check_choice(config::choices::sparse_scope, "sparse.scope", scope);
  config::check_choice(config::choices::sparse_pattern, "sparse.pattern", pattern);
  SECATEUR_CHECK(pattern == "unstructured" || method == SparseMethod::wanda, "[config] 'sparse.pattern' = {} needs "
                 "'sparse.method' = wanda", pattern);
  SECATEUR_CHECK(pattern == "unstructured" || sparsity == 0.5, "[config] 'sparse.pattern' = 2:4 is 50% sparse: "
                 "'sparse.sparsity' = {} must be 0.5", sparsity);
  SECATEUR_CHECK(!targets.empty(), "[config] 'sparse.targets' is empty");
  for (const std::string& t : targets) (void)model::parse_proj(t, "sparse.targets");
}

at::Tensor soft_threshold(const at::Tensor& w, const at::Tensor& t) {
  return w.sign() * (w.abs() - t).clamp_min(0);
}

SparsePruner::SparsePruner(model::Decoder& model, SparseOptions opt, int64_t total_steps,
                           std::function<void(const nlohmann::json&)> metric)
    : model_(model), opt_(std::move(opt)), total_(total_steps), metric_(std::move(metric)) {
  opt_.validate();
  prune_step_ = std::max<int64_t>(1, std::llround(opt_.prune_at * static_cast<double>(total_)));
  std::vector<std::string> wanted;
  for (int64_t l = 0; l < model_.config().n_layers(); ++l) {
    for (const std::string& t : opt_.targets) {
      wanted.push_back(model::proj_weight(model_.config(), l, model::parse_proj(t, "sparse.targets")));
    }
  }
  const model::NamedTensors named = model_.named_tensors();
  const std::vector<at::Tensor*> params = model_.parameters();
  for (size_t i = 0; i < named.size(); ++i) {
    const auto it = std::find(wanted.begin(), wanted.end(), named[i].first);
    if (it == wanted.end()) continue;
    tensors_.emplace_back(named[i].first, params[i]);
    layer_of_.push_back((it - wanted.begin()) / static_cast<int64_t>(opt_.targets.size()));
  }
  SECATEUR_CHECK(!tensors_.empty(), "[config] 'sparse.targets': the model has none of these weight matrices");
  if (opt_.method == SparseMethod::imp) {
    for (int64_t r = 1; r <= opt_.rounds; ++r) {
      round_steps_.push_back(std::max<int64_t>(1, std::llround(static_cast<double>(r) / static_cast<double>(opt_.rounds) *
                                                               opt_.prune_at * static_cast<double>(total_))));
    }
  }
}

void SparsePruner::after_gradients(int64_t) {
  if (masks_.empty()) return;
  for (size_t i = 0; i < tensors_.size(); ++i) {
    at::Tensor& w = *tensors_[i].second;
    if (w.grad().defined()) w.mutable_grad().mul_(masks_[i]);
  }
}

void SparsePruner::after_update(int64_t step, double lr) {
  at::NoGradGuard no_grad;
  const int64_t done = step + 1;
  if (opt_.method == SparseMethod::rpp && done <= prune_step_ && opt_.gamma > 0) {
    for (size_t i = 0; i < tensors_.size(); ++i) {
      at::Tensor& w = *tensors_[i].second;
      if (alpha_.size() <= i || step % opt_.reweight_every == 0) {
        if (alpha_.size() <= i) alpha_.resize(tensors_.size());
        alpha_[i] = 1.0 / (w.abs() + opt_.epsilon);
      }
      w.copy_(soft_threshold(w, alpha_[i] * (lr * opt_.gamma)));
    }
    if (done % opt_.reweight_every == 0 && metric_) {
      nlohmann::json j = sparsity(false);
      j["stage"] = "sparse_step";
      j["step"] = done;
      metric_(j);
    }
  }
  if (opt_.method == SparseMethod::rpp && done == prune_step_) hard_prune(opt_.sparsity, done);
  for (size_t r = 0; r < round_steps_.size(); ++r) {
    if (done != round_steps_[r]) continue;
    const double frac = static_cast<double>(r + 1) / static_cast<double>(round_steps_.size());
    hard_prune(1.0 - std::pow(1.0 - opt_.sparsity, frac), done);
  }
  for (size_t i = 0; i < masks_.size(); ++i) tensors_[i].second->mul_(masks_[i]);
}

void SparsePruner::prune_wanda(const Statistics& stats) {
  at::NoGradGuard no_grad;
  const parallel::Group tp = model_.tp();
  masks_.assign(tensors_.size(), at::Tensor());
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const auto& [name, weight] = tensors_[i];
    at::Tensor& w = *weight;                                                // [out, in] (this rank's shard)
    const auto it = stats.weights.find(name);
    SECATEUR_CHECK(it != stats.weights.end() && it->second.act[1].defined(), "[sparse] wanda: no activation "
                   "statistics for '{}'", name);
    const model::Slice cut = model_.plan().slice_of(name, model_.config());
    const bool row_split = cut.dim == 1;                                    // this rank holds columns of each row
    const at::ScalarType acc = at::promote_types(w.scalar_type(), at::kFloat);
    const at::Tensor norms = it->second.act[1].sqrt().to(acc);              // ‖x_j‖ of the whole model's columns
    at::Tensor score = w.detach().abs().to(acc) *
                       (row_split ? norms.narrow(0, cut.range.begin, cut.range.size()) : norms).to(w.device());
    if (row_split) score = parallel::gather(tp, score, 1);                  // whole rows
    at::Tensor keep = at::ones_like(score);
    const int64_t in = score.size(1);
    if (opt_.pattern == "2:4") {
      SECATEUR_CHECK(in % 4 == 0, "[sparse] wanda 2:4: '{}' has {} inputs, not a multiple of 4", name, in);
      const at::Tensor groups = score.view({score.size(0), in / 4, 4});
      keep.view({score.size(0), in / 4, 4}).scatter_(2, std::get<1>(groups.topk(2, 2, /*largest=*/false)), 0.0);
    } else {
      const auto k = static_cast<int64_t>(std::floor(opt_.sparsity * static_cast<double>(in)));
      if (k > 0) keep.scatter_(1, std::get<1>(score.topk(k, 1, /*largest=*/false)), 0.0);
    }
    if (row_split) keep = keep.narrow(1, cut.range.begin, cut.range.size());
    masks_[i] = keep.to(w.scalar_type()).contiguous();
    w.mul_(masks_[i]);
  }
  nlohmann::json s = sparsity(false);
  spdlog::info("[sparse] wanda ({}): {:.2f}% of the pruned matrices are zero", opt_.pattern,
               100 * s["sparsity"].get<double>());
  s["stage"] = "sparse_prune";
  s["step"] = 0;
  s["target"] = opt_.pattern == "2:4" ? 0.5 : opt_.sparsity;
  if (metric_) metric_(s);
}

void SparsePruner::hard_prune(double target, int64_t step) {
  at::NoGradGuard no_grad;
  const parallel::Group tp = model_.tp();
  const auto sum_tp = [&](int64_t v) { return parallel::sum(tp, v); };
  // A replicated tensor is counted on TP rank 0 only.
  const auto counted = [&](size_t i) {
    return model_.plan().slice_of(tensors_[i].first, model_.config()).dim >= 0 || tp.rank() == 0;
  };
  // The threshold t with count(|w| <= t) >= target over `which`, by bisection on [0, max |w|]; the
  // magnitudes are recomputed per pass rather than held (a copy of every pruned weight otherwise).
  const auto threshold = [&](const std::vector<size_t>& which) {
    int64_t n = 0;
    double hi = 0;
    for (size_t i : which) {
      const at::Tensor& w = *tensors_[i].second;
      if (counted(i)) n += w.numel();
      if (w.numel() > 0) hi = std::max(hi, w.abs().max().item<double>());
    }
    n = sum_tp(n);
    hi = parallel::max(tp, hi);
    const int64_t want = static_cast<int64_t>(std::floor(target * static_cast<double>(n)));
    if (want == 0) return -1.0;
    const auto at_most = [&](double t) {
      int64_t c = 0;
      for (size_t i : which) {
        if (counted(i)) c += (tensors_[i].second->abs() <= t).sum().item<int64_t>();
      }
      return sum_tp(c);
    };
    if (at_most(0.0) >= want) return 0.0;
    double lo = 0;
    for (int it = 0; it < 64; ++it) {
      const double mid = 0.5 * (lo + hi);
      (at_most(mid) >= want ? hi : lo) = mid;
    }
    return hi;
  };
  std::vector<double> t(tensors_.size());
  const bool last = opt_.method == SparseMethod::rpp || step == round_steps_.back();
  if (opt_.threshold >= 0 && last) {
    std::fill(t.begin(), t.end(), opt_.threshold);
  } else {
    // The tensors that share one threshold: all, those of one layer, or each alone.
    std::map<int64_t, std::vector<size_t>> sets;
    for (size_t i = 0; i < tensors_.size(); ++i) {
      const int64_t key = opt_.scope == "global" ? 0 : opt_.scope == "per_layer" ? layer_of_[i] : static_cast<int64_t>(i);
      sets[key].push_back(i);
    }
    for (const auto& [key, which] : sets) {
      const double th = threshold(which);
      for (size_t i : which) t[i] = th;
    }
  }
  masks_.resize(tensors_.size());
  for (size_t i = 0; i < tensors_.size(); ++i) {
    at::Tensor& w = *tensors_[i].second;
    at::Tensor keep = (w.abs() > t[i]).to(w.scalar_type());
    masks_[i] = masks_[i].defined() ? masks_[i] * keep : keep;   // pruned weights stay pruned
    w.mul_(masks_[i]);
  }
  nlohmann::json s = sparsity(false);
  spdlog::info("[sparse] step {}: hard prune to {} ({}): {:.2f}% of the pruned matrices are zero", step,
               opt_.threshold >= 0 && last ? fmt::format("|w| > {}", opt_.threshold) : fmt::format("{:.1f}%", 100 * target),
               opt_.scope, 100 * s["sparsity"].get<double>());
  s["stage"] = "sparse_prune";
  s["step"] = step;
  s["target"] = target;
  if (metric_) metric_(s);
}

model::NamedTensors SparsePruner::state() const {
  model::NamedTensors s;
  for (size_t i = 0; i < tensors_.size(); ++i) {
    if (i < alpha_.size() && alpha_[i].defined()) s.emplace_back("alpha." + tensors_[i].first, alpha_[i].cpu());
    if (i < masks_.size() && masks_[i].defined()) s.emplace_back("mask." + tensors_[i].first, masks_[i].cpu());
  }
  return s;
}

void SparsePruner::restore(const model::NamedTensors& state) {
  std::map<std::string, at::Tensor> s(state.begin(), state.end());
  const auto take = [&](const std::string& name, const at::Tensor& like, std::vector<at::Tensor>& into, size_t i) {
    const auto it = s.find(name);
    if (it == s.end()) return;
    SECATEUR_CHECK(it->second.sizes() == like.sizes(), "[sparse] the checkpoint's '{}' has shape [{}], the weight is [{}]",
                   name, fmt::join(it->second.sizes(), ", "), fmt::join(like.sizes(), ", "));
    into.resize(tensors_.size());
    into[i] = it->second.to(like.device());
    s.erase(it);
  };
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const at::Tensor& w = *tensors_[i].second;
    take("alpha." + tensors_[i].first, w, alpha_, i);
    take("mask." + tensors_[i].first, w, masks_, i);
  }
  SECATEUR_CHECK(s.empty(), "[sparse] the checkpoint's pruner state has '{}', which this run does not prune "
                 "(another sparse.targets or model?)", s.empty() ? "" : s.begin()->first);
}

nlohmann::json SparsePruner::sparsity(bool per_tensor) const {
  const parallel::Group tp = model_.tp();
  std::vector<int64_t> counts;                        // zeros, elements per tensor, this rank's shards
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const at::Tensor& w = *tensors_[i].second;
    const bool counted = model_.plan().slice_of(tensors_[i].first, model_.config()).dim >= 0 || tp.rank() == 0;
    counts.push_back(counted ? (w == 0).sum().item<int64_t>() : 0);
    counts.push_back(counted ? w.numel() : 0);
  }
  at::Tensor c = at::tensor(counts, at::kLong).to(at::kDouble);
  parallel::sum(tp, c);
  nlohmann::json tensors = nlohmann::json::object();
  std::vector<double> layer_zeros(model_.config().n_layers(), 0), layer_total(model_.config().n_layers(), 0);
  double zeros = 0, total = 0;
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const double z = c[2 * i].item<double>(), n = c[2 * i + 1].item<double>();
    tensors[tensors_[i].first] = n > 0 ? z / n : 0.0;
    const int64_t l = layer_of_[i];
    layer_zeros[l] += z;
    layer_total[l] += n;
    zeros += z;
    total += n;
  }
  nlohmann::json layers = nlohmann::json::array();
  for (size_t l = 0; l < layer_total.size(); ++l) {
    layers.push_back(layer_total[l] > 0 ? layer_zeros[l] / layer_total[l] : 0.0);
  }
  nlohmann::json j = {{"sparsity", total > 0 ? zeros / total : 0.0}, {"zeros", zeros}, {"elements", total},
                      {"layers", layers}};
  if (per_tensor) j["tensors"] = tensors;
  return j;
}

}  // namespace secateur::pruning
