#include "pruning/stats.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
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

// Row and column sums in float64 of a matrix made block by block: `block(r0, n)` gives rows
// [r0, r0 + n) in any dtype, which are converted to float64 while they are in cache and summed both
// ways, so no full-size temporary (a float64 copy, a product) of the matrix ever exists. On CPU the
// blocks run in parallel; each block's column sums are kept apart and added in block order, so the
// result does not depend on the thread count. Several sums of one block: `block` may return a
// list, one per accumulator.
constexpr int64_t kBlockElements = 1 << 15;

template <typename Block>
void add_blocked(const std::vector<Pair*>& acc, int64_t rows, int64_t cols, const Block& block) {
  const bool cpu = acc[0]->at(0).is_cpu();
  const int64_t per = cpu ? std::max<int64_t>(1, kBlockElements / std::max<int64_t>(cols, 1)) : rows;
  const int64_t blocks = (rows + per - 1) / per;
  std::vector<at::Tensor> partial;
  for (Pair* a : acc) partial.push_back(at::empty({blocks, cols}, a->at(1).options()));
  at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t r0 = b * per, n = std::min(per, rows - r0);
      const std::vector<at::Tensor> xs = block(r0, n);
      for (size_t k = 0; k < acc.size(); ++k) {
        const at::Tensor x = xs[k].to(at::kDouble);
        acc[k]->at(0).narrow(0, r0, n).add_(x.sum({1}));
        partial[k][b].copy_(x.sum({0}));
      }
    }
  });
  for (size_t k = 0; k < acc.size(); ++k) acc[k]->at(1).add_(partial[k].sum({0}));
}

// Per-index sums of f(x) over the other dim into `acc` ({rows, cols} of a matrix, {x} of a vector),
// in float64, for each of the accumulators and the functions that go with them.
template <typename F>
void add_sums(const std::vector<Pair*>& acc, const std::vector<at::Tensor>& xs, const F& f) {
  const at::Tensor& x0 = xs[0];
  if (x0.dim() == 1) {
    const std::vector<at::Tensor> ys = f(xs);
    for (size_t k = 0; k < acc.size(); ++k) acc[k]->at(0).add_(ys[k].to(at::kDouble));
    return;
  }
  add_blocked(acc, x0.size(0), x0.size(1), [&](int64_t r0, int64_t n) {
    std::vector<at::Tensor> part;
    for (const at::Tensor& x : xs) part.push_back(x.narrow(0, r0, n));
    return f(part);
  });
}

// Zero accumulators shaped for x's per-index sums.
Pair zero_sums(const at::Tensor& x) {
  const auto o = x.options().dtype(at::kDouble);
  if (x.dim() == 1) return {at::zeros({x.size(0)}, o), at::Tensor()};
  return {at::zeros({x.size(0)}, o), at::zeros({x.size(1)}, o)};
}

struct Collector {
  Statistics* stats = nullptr;
  parallel::Comm* dp = nullptr;
  bool mixed = false;
  Pass pass = Pass::first_order;
  double fisher_scale = 1.0;                  // 1 / N
  std::map<std::string, at::Tensor> fisher;     // element-wise F (float32 at least), for the Fisher criteria
  std::map<std::string, at::Tensor> grad_sum;   // Σ_n g_n, for mix only: its first-order g is their mean
};

// The first-order sums of one weight from g, its gradient of the loss over all samples, and for
// mix its element-wise F.
void add_first_order(WeightStats& s, const at::Tensor& w, const at::Tensor& g, const at::Tensor& fisher) {
  std::vector<Pair*> acc = {&s.abs_wg, &s.wg};
  std::vector<at::Tensor> in = {w, g};
  if (fisher.defined()) acc.push_back(&s.mix), in.push_back(fisher);
  add_sums(acc, in, [](const std::vector<at::Tensor>& x) {
    const at::Tensor wg = x[0] * x[1];
    std::vector<at::Tensor> out = {wg.abs(), wg};
    if (x.size() == 3) out.push_back((wg - 0.5 * x[0] * x[0] * x[2]).abs());
    return out;
  });
}

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
      add_first_order(s, w, gd, at::Tensor());
    } else {
      c_->fisher.at(name_).addcmul_(g, g, c_->fisher_scale);
      if (c_->mixed) c_->grad_sum.at(name_).add_(g);
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
    s.l1 = zero_sums(w), s.l2 = zero_sums(w);
    add_sums({&s.l1, &s.l2}, {w}, [](const std::vector<at::Tensor>& x) {
      return std::vector<at::Tensor>{x[0].abs(), x[0] * x[0]};
    });
    if (opt.first_order || opt.mixed) s.abs_wg = zero_sums(w), s.wg = zero_sums(w);
    const auto wide = w.options().dtype(at::promote_types(w.scalar_type(), at::kFloat));
    const bool differentiated = opt.model_wide || model::locate(model.config(), name)->layer >= 0;
    if (opt.fisher) s.w2f = zero_sums(w);
    if (opt.mixed) s.mix = zero_sums(w);
    if (opt.fisher && differentiated) collector.fisher[name] = at::zeros(w.sizes(), wide);
    if (opt.mixed && differentiated) collector.grad_sum[name] = at::zeros(w.sizes(), wide);
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

// The backward of loss_sum(ids) · scale, whole or a layer at a time.
void backward(const model::Decoder& model, const at::Tensor& ids, double scale, bool recompute) {
  if (recompute) {
    (void)model.backward_checkpointed(ids, scale);
  } else {
    (model.loss_sum(ids) * scale).backward();
  }
}

// One backward per sample: the hooks fold g²/N into F (and, for mix, g into Σ g).
void fisher_pass(model::Decoder& model, Statistics& stats, Collector& collector, const model::NamedTensors& named,
                 const at::Tensor& local, const at::Tensor& samples, parallel::Group dp, bool recompute) {
  collector.pass = Pass::fisher;
  collector.fisher_scale = 1.0 / static_cast<double>(samples.size(0));
  Progress progress("calibration (Fisher)", std::max<int64_t>(local.size(0), 1), "samples");
  for (int64_t i = 0; i < local.size(0); ++i) {
    backward(model, local.narrow(0, i, 1), 1.0 / static_cast<double>(samples.size(1) - 1), recompute);
    progress.add(1);
  }
  // Then, weight by weight: F summed over DP, w2f = Σ W²⊙F; for mix, the first-order g of the whole
  // batch's mean loss is the mean of this pass's per-sample gradients (each sample's loss is its
  // mean over its predictions), so it needs no second backward.
  for (const auto& [name, t] : named) {
    at::Tensor& f = collector.fisher.at(name);
    parallel::sum(dp, f);
    const at::Tensor w = t.detach();
    WeightStats& s = stats.weights.at(name);
    add_sums({&s.w2f}, {w, f}, [](const std::vector<at::Tensor>& x) {
      return std::vector<at::Tensor>{x[0] * x[0] * x[1]};
    });
    if (collector.mixed) {
      at::Tensor g = collector.grad_sum.at(name).to(at::kDouble);
      collector.grad_sum.erase(name);
      parallel::sum(dp, g);
      add_first_order(s, w, (g / static_cast<double>(samples.size(0))).to(w.scalar_type()), f);
    }
    collector.fisher.erase(name);
  }
}

// g = ∇ of the mean CE over all N samples, in one backward (LLM-Pruner's batch loss); a rank
// without samples runs a zero-weighted pass so that it joins the DP sums in the hooks.
void first_order_pass(model::Decoder& model, Collector& collector, const at::Tensor& local, const at::Tensor& samples,
                      bool recompute) {
  collector.pass = Pass::first_order;
  Progress progress("calibration (first order)", samples.size(0), "samples");
  const double tokens = static_cast<double>(samples.size(0) * (samples.size(1) - 1));   // predictions, all ranks
  const at::Tensor batch = local.size(0) > 0 ? local : samples.narrow(0, 0, 1).to(model.device());
  const double weight = local.size(0) > 0 ? 1.0 / tokens : 0.0;
  backward(model, batch, weight, recompute);
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
  if (opt.mixed) opt.fisher = true, opt.first_order = false;   // mix: both orders from the per-sample pass
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
  model::NamedTensors differentiated;   // the weights whose gradients are formed
  for (const auto& [name, t] : named) {
    if (opt.model_wide || model::locate(model.config(), name)->layer >= 0) differentiated.emplace_back(name, t);
  }
  const parallel::Range mine = parallel::dp_share(samples.size(0), dp);
  const at::Tensor local = samples.narrow(0, mine.begin, mine.size()).to(model.device());
  if (opt.activations || opt.residuals) activation_pass(model, stats, local, samples, opt, dp);
  const bool gradients = opt.first_order || opt.fisher;
  if (gradients) set_hooks(differentiated, &collector);
  if (opt.fisher) fisher_pass(model, stats, collector, differentiated, local, samples, dp, opt.recompute);
  if (opt.first_order) first_order_pass(model, collector, local, samples, opt.recompute);
  if (gradients) set_hooks(differentiated, nullptr);
  make_whole_over_tp(stats, model);
  stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return stats;
}

}  // namespace secateur::pruning
