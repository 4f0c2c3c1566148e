#include "pruning/stats.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/function_hook.h>
#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/variable.h>

#include <chrono>
#include <cmath>

#include "parallel/collectives.h"
#include "runtime/core/check.h"
#include "runtime/core/progress.h"
#include "runtime/model/shard.h"

namespace secateur::pruning {

namespace {

using Pair = std::array<at::Tensor, 2>;
enum class Pass { first_order, fisher };

// Per-index sums of x over the other dim, accumulated in float64 without a float64 copy of x:
// {rows, cols} for a matrix, {x} for a vector.
Pair reduce_both(const at::Tensor& x) {
  if (x.dim() == 1) return {x.to(at::kDouble), at::Tensor()};
  return {x.sum({1}, false, at::kDouble), x.sum({0}, false, at::kDouble)};
}

void add_to(Pair& acc, const Pair& v) {
  for (int d = 0; d < 2; ++d) {
    if (v[d].defined()) acc[d] += v[d];
  }
}

Pair zeros_like(const Pair& p) {
  Pair z;
  for (int d = 0; d < 2; ++d) {
    if (p[d].defined()) z[d] = at::zeros_like(p[d]);
  }
  return z;
}

struct Collector {
  Statistics* stats = nullptr;
  parallel::Comm* dp = nullptr;
  bool mixed = false;
  Pass pass = Pass::first_order;
  double fisher_scale = 1.0;                  // 1 / N
  std::map<std::string, at::Tensor> fisher;   // element-wise F, for mix only
};

// Runs once the weight's gradient is accumulated: fold it into the statistics, then drop it.
struct StatsHook : torch::autograd::PostAccumulateGradHook {
  StatsHook(Collector* c, std::string name) : c_(c), name_(std::move(name)) {}
  void operator()(const torch::autograd::Variable& weight) override {
    at::Tensor g = weight.grad();
    if (!g.defined()) return;
    const at::Tensor w = weight.detach();
    WeightStats& s = c_->stats->weights[name_];
    if (c_->pass == Pass::first_order) {
      at::Tensor gd = g;
      if (parallel::size_of(c_->dp) > 1) {                  // g of all samples; summed in float64
        gd = g.to(at::kDouble);
        parallel::sum(c_->dp, gd);
        gd = gd.to(g.scalar_type());
      }
      const at::Tensor wg = w * gd;
      add_to(s.abs_wg, reduce_both(wg.abs()));
      add_to(s.wg, reduce_both(wg));
      if (c_->mixed) {
        auto it = c_->fisher.find(name_);
        if (it != c_->fisher.end()) {
          add_to(s.mix, reduce_both((wg - 0.5 * w * w * it->second).abs()));
          c_->fisher.erase(it);                              // this weight's F is no longer needed
        }
      }
    } else {
      const at::Tensor g2 = g * g * c_->fisher_scale;
      add_to(s.w2f, reduce_both(w * w * g2));
      if (c_->mixed) c_->fisher[name_] += g2;
    }
    const_cast<torch::autograd::Variable&>(weight).mutable_grad().reset();
  }
  Collector* c_;
  std::string name_;
};

// Every field that sums over the other dim: made whole over TP as described in the header.
void make_whole_over_tp(Statistics& stats, const model::Decoder& model) {
  const parallel::Group tp = model.tp();
  if (parallel::size_of(tp) == 1) return;
  for (auto& [name, s] : stats.weights) {                     // the same names, in the same order, on every rank
    const int sharded = model.plan().slice_of(name, model.config()).dim;
    if (sharded < 0) continue;                                // replicated: already whole and equal
    for (Pair* field : {&s.l1, &s.l2, &s.abs_wg, &s.wg, &s.w2f, &s.mix}) {
      for (int d = 0; d < 2; ++d) {
        at::Tensor& v = (*field)[d];
        if (!v.defined()) continue;
        if (d == sharded) v = parallel::gather(tp, v);
        else parallel::sum(tp, v);
      }
    }
    for (at::Tensor* v : {&s.act[1], &s.act_sum[1]}) {                 // inputs of row-parallel layers
      if (v->defined() && sharded == 1) *v = parallel::gather(tp, *v);
    }
  }
}

// Every field defined on every rank before any pass (zeros where a rank sees no gradient, e.g.
// an empty TP shard), so that the DP and TP sums line up.
void init_fields(Statistics& stats, Collector& collector, const model::NamedTensors& named, const model::Decoder& model,
                 const CalibrationOptions& opt) {
  for (const auto& [name, t] : named) {
    const at::Tensor w = t.detach();
    WeightStats& s = stats.weights[name];
    s.l1 = reduce_both(w.abs());
    s.l2 = reduce_both(w * w);
    if (opt.first_order) s.abs_wg = zeros_like(s.l1), s.wg = zeros_like(s.l1);
    if (opt.fisher) s.w2f = zeros_like(s.l1);
    if (opt.mixed) s.mix = zeros_like(s.l1), collector.fisher[name] = at::zeros_like(w);
  }
  if (opt.residuals) {
    const int64_t n = model.config().n_layers() + 1;
    stats.residual_cosine = at::zeros({n, n}, at::kDouble);
    stats.residual_angle = at::zeros({n, n}, at::kDouble);
  }
  if (!opt.activations) return;
  for (int64_t l = -1; l < model.config().n_layers(); ++l) {
    for (auto tap : {model::Decoder::Tap::attn_in, model::Decoder::Tap::attn_out, model::Decoder::Tap::mlp_in,
                     model::Decoder::Tap::mlp_hidden, model::Decoder::Tap::head_in}) {
      if ((l < 0) != (tap == model::Decoder::Tap::head_in)) continue;
      for (const std::string& n : model::readers(model.config(), l, tap)) {
        WeightStats& s = stats.weights.at(n);
        s.act[1] = at::zeros_like(s.l1[1]);
        s.act_sum[1] = at::zeros_like(s.l1[1]);
        if (opt.gram && (tap == model::Decoder::Tap::attn_out || tap == model::Decoder::Tap::mlp_hidden)) {
          const auto at = model::locate(model.config(), n);     // the whole model's input width
          const int64_t in = model::extent(model.config(), at->spec->axes.at(1), l);
          stats.gram[n] = at::zeros({in, in}, s.l1[1].options());
        }
      }
    }
  }
}

// The residual stream's distances of one batch: each boundary's unit vectors per token (in the
// compute dtype, float32 at least) against those of every earlier boundary, summed in float64.
class ResidualDistances {
 public:
  explicit ResidualDistances(Statistics& stats) : stats_(stats) {}

  void add(int64_t boundary, const at::Tensor& x) {
    const at::Tensor flat = x.detach().reshape({-1, x.size(-1)});
    const at::Tensor h = flat.to(at::promote_types(flat.scalar_type(), at::kFloat));
    const at::Tensor unit = h / h.norm(2, {1}, true).clamp_min(1e-30);   // a zero state: cos 0 with all
    if (boundary == 0) units_ = at::empty({stats_.residual_cosine.size(0), unit.size(0), unit.size(1)}, unit.options());
    if (boundary > 0) {
      const at::Tensor cos = at::einsum("jtd,td->jt", {units_.narrow(0, 0, boundary), unit}).clamp(-1.0, 1.0);
      stats_.residual_cosine.select(1, boundary).narrow(0, 0, boundary) += (1.0 - cos).sum({1}, false, at::kDouble);
      stats_.residual_angle.select(1, boundary).narrow(0, 0, boundary) +=
          cos.acos().sum({1}, false, at::kDouble) / M_PI;
    }
    units_[boundary].copy_(unit);
  }

 private:
  Statistics& stats_;
  at::Tensor units_;   // [L+1, tokens, d]
};

// Σ x² and Σ x per input channel of every linear layer (and, with gram, Σ x xᵀ of the output
// projections' inputs, gathered over TP), with residuals the residual stream's distances (the
// same on every TP rank), over this rank's samples, then over DP.
void activation_pass(model::Decoder& model, Statistics& stats, const at::Tensor& local, const at::Tensor& samples,
                     const CalibrationOptions& opt, parallel::Group dp) {
  const bool gram = opt.gram;
  ResidualDistances residuals(stats);
  model.set_observer([&](int64_t layer, model::Decoder::Tap tap, const at::Tensor& x) {
    if (tap == model::Decoder::Tap::residual) {
      if (opt.residuals) residuals.add(layer, x);
      return;
    }
    if (!opt.activations) return;
    const at::Tensor flat = x.detach().reshape({-1, x.size(-1)});
    const at::Tensor energy = flat.square().sum({0}, false, at::kDouble), total = flat.sum({0}, false, at::kDouble);
    const bool projection_input = tap == model::Decoder::Tap::attn_out || tap == model::Decoder::Tap::mlp_hidden;
    at::Tensor g;
    if (gram && projection_input) {
      const at::Tensor whole = parallel::gather(model.tp(), flat.contiguous(), 1);   // [tokens, in] of the layer
      g = at::mm(whole.t(), whole).to(at::kDouble);   // per batch in the compute dtype, summed in float64
    }
    for (const std::string& n : model::readers(model.config(), layer, tap)) {
      stats.weights.at(n).act[1] += energy;
      stats.weights.at(n).act_sum[1] += total;
      if (g.defined()) stats.gram.at(n).add_(g);
    }
  });
  at::NoGradGuard no_grad;
  Progress progress("calibration (activations)", std::max<int64_t>(local.size(0), 1), "samples");
  for (int64_t i = 0; i < local.size(0); i += 8) {
    const int64_t n = std::min<int64_t>(8, local.size(0) - i);
    model.observe(local.narrow(0, i, n));
    progress.add(n);
  }
  model.set_observer(nullptr);
  for (auto& [name, s] : stats.weights) {
    for (at::Tensor* v : {&s.act[1], &s.act_sum[1]}) {
      if (v->defined()) parallel::sum(dp, *v);
    }
  }
  for (auto& [name, g] : stats.gram) parallel::sum(dp, g);   // every projection's, on every rank (a pass ran)
  for (at::Tensor* m : {&stats.residual_cosine, &stats.residual_angle}) {
    if (m->defined()) parallel::sum(dp, *m);
  }
  stats.tokens = samples.numel();
}

// One backward per sample (the hooks fold g² into w2f and, for mix, F), then summed over DP.
void fisher_pass(model::Decoder& model, Statistics& stats, Collector& collector, const at::Tensor& local,
                 const at::Tensor& samples, parallel::Group dp) {
  collector.pass = Pass::fisher;
  collector.fisher_scale = 1.0 / static_cast<double>(samples.size(0));
  Progress progress("calibration (Fisher)", std::max<int64_t>(local.size(0), 1), "samples");
  for (int64_t i = 0; i < local.size(0); ++i) {
    const at::Tensor loss = model.loss_sum(local.narrow(0, i, 1)) / static_cast<double>(samples.size(1) - 1);
    loss.backward();
    progress.add(1);
  }
  for (auto& [name, s] : stats.weights) {
    for (at::Tensor& v : s.w2f) parallel::sum(dp, v);
  }
  for (auto& [name, f] : collector.fisher) parallel::sum(dp, f);
}

// g = ∇ of the mean CE over all N samples, in one backward (LLM-Pruner's batch loss); a rank
// without samples runs a zero-weighted pass so that it joins the DP sums in the hooks.
void first_order_pass(model::Decoder& model, Collector& collector, const at::Tensor& local, const at::Tensor& samples) {
  collector.pass = Pass::first_order;
  Progress progress("calibration (first order)", samples.size(0), "samples");
  const double tokens = static_cast<double>(samples.size(0) * (samples.size(1) - 1));   // predictions, all ranks
  const at::Tensor batch = local.size(0) > 0 ? local : samples.narrow(0, 0, 1).to(model.device());
  const double weight = local.size(0) > 0 ? 1.0 / tokens : 0.0;
  (model.loss_sum(batch) * weight).backward();
  progress.add(samples.size(0));
}

// The gradient hooks on every weight (collector != nullptr), or off again with the gradients dropped.
void set_hooks(const model::NamedTensors& named, Collector* collector) {
  for (const auto& [name, t] : named) {
    at::Tensor leaf = t;
    if (collector) {
      leaf.set_requires_grad(true);
      torch::autograd::impl::set_post_acc_grad_hooks(leaf, std::make_unique<StatsHook>(collector, name));
    } else {
      torch::autograd::impl::set_post_acc_grad_hooks(leaf, nullptr);
      leaf.mutable_grad().reset();
      leaf.set_requires_grad(false);
    }
  }
}

}  // namespace

Statistics collect_statistics(model::Decoder& model, const at::Tensor& samples, const CalibrationOptions& opt_in,
                              parallel::Comm* dp) {
  SECATEUR_CHECK(samples.dim() == 2 && samples.size(0) > 0 && samples.size(1) > 1,
                 "[pruning/stats] calibration samples must be [N, T] with N >= 1, T >= 2");
  CalibrationOptions opt = opt_in;
  if (opt.mixed) opt.first_order = opt.fisher = true;
  if (opt.gram) opt.activations = true;
  const auto t0 = std::chrono::steady_clock::now();
  Statistics stats;
  stats.samples = samples.size(0);
  Collector collector;
  collector.stats = &stats;
  collector.dp = dp;
  collector.mixed = opt.mixed;
  const auto named = model.named_tensors();
  init_fields(stats, collector, named, model, opt);
  const parallel::Range mine = parallel::dp_share(samples.size(0), dp);
  const at::Tensor local = samples.narrow(0, mine.begin, mine.size()).to(model.device());
  if (opt.activations || opt.residuals) activation_pass(model, stats, local, samples, opt, dp);
  const bool gradients = opt.first_order || opt.fisher;
  if (gradients) set_hooks(named, &collector);
  if (opt.fisher) fisher_pass(model, stats, collector, local, samples, dp);   // first: mix needs F in the next pass
  if (opt.first_order) first_order_pass(model, collector, local, samples);
  if (gradients) set_hooks(named, nullptr);
  make_whole_over_tp(stats, model);
  stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return stats;
}

}  // namespace secateur::pruning
