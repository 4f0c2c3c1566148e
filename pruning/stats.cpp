#include "pruning/stats.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <chrono>

#include "parallel/comm.h"
#include "runtime/core/check.h"
#include "runtime/core/progress.h"
#include "runtime/model/shard.h"

namespace secateur::pruning {

namespace {

enum class Pass { first_order, fisher };

// Per-index sums of x over the other dim, accumulated in float64 without a float64 copy of x:
// {rows, cols} for a matrix, {x} for a vector.
std::array<at::Tensor, 2> reduce_both(const at::Tensor& x) {
  if (x.dim() == 1) return {x.to(at::kDouble), at::Tensor()};
  return {x.sum({1}, false, at::kDouble), x.sum({0}, false, at::kDouble)};
}

void add_to(std::array<at::Tensor, 2>& acc, const std::array<at::Tensor, 2>& v) {
  for (int d = 0; d < 2; ++d) {
    if (!v[d].defined()) continue;
    acc[d] = acc[d].defined() ? acc[d] + v[d] : v[d].clone();
  }
}

struct Collector {
  Statistics* stats;
  parallel::Comm* dp;
  Pass pass = Pass::first_order;
  double fisher_scale = 1.0;   // 1 / N
};

// Runs once the weight's gradient is accumulated: fold it into the statistics, then drop it.
struct StatsHook : torch::autograd::PostAccumulateGradHook {
  StatsHook(Collector* c, std::string name) : c_(c), name_(std::move(name)) {}
  void operator()(const torch::autograd::Variable& weight) override {
    at::Tensor g = weight.grad();
    if (!g.defined()) return;
    const at::Tensor w = weight.detach();
    at::Tensor gd = g;
    WeightStats& s = c_->stats->weights[name_];
    if (c_->pass == Pass::first_order) {
      if (c_->dp && c_->dp->size() > 1) {                    // g of all samples; summed in float64
        gd = g.to(at::kDouble);
        c_->dp->all_reduce(gd, parallel::ReduceOp::sum);
        gd = gd.to(g.scalar_type());
      }
      const at::Tensor wg = w * gd;
      add_to(s.abs_wg, reduce_both(wg.abs()));
      add_to(s.wg, reduce_both(wg));
    } else {
      const auto f = reduce_both(w * w * gd * gd * c_->fisher_scale);
      for (int d = 0; d < 2; ++d) {
        if (f[d].defined()) s.w2f[d] += f[d];
      }
    }
    const_cast<torch::autograd::Variable&>(weight).mutable_grad().reset();
  }
  Collector* c_;
  std::string name_;
};

}  // namespace

Statistics collect_statistics(model::Decoder& model, const at::Tensor& samples, const CalibrationOptions& opt,
                              parallel::Comm* dp) {
  SECATEUR_CHECK(samples.dim() == 2 && samples.size(0) > 0 && samples.size(1) > 1,
                 "[pruning/stats] calibration samples must be [N, T] with N >= 1, T >= 2");
  const auto t0 = std::chrono::steady_clock::now();
  Statistics stats;
  stats.samples = samples.size(0);
  Collector collector{&stats, dp};
  const auto named = model.named_tensors();
  for (const auto& [name, t] : named) {                       // magnitudes need no data
    const at::Tensor w = t.detach();
    stats.weights[name].l1 = reduce_both(w.abs());
    stats.weights[name].l2 = reduce_both(w * w);
  }
  for (auto& [name, t] : named) {
    at::Tensor leaf = t;
    leaf.set_requires_grad(true);
    torch::autograd::impl::set_post_acc_grad_hooks(leaf, std::make_unique<StatsHook>(&collector, name));
  }
  const model::Range mine = dp ? model::split_range(samples.size(0), dp->rank(), dp->size())
                               : model::Range{0, samples.size(0)};
  const at::Tensor local = samples.narrow(0, mine.begin, mine.size()).to(model.device());
  const double tokens = static_cast<double>(samples.size(0) * (samples.size(1) - 1));   // predictions, all ranks
  if (opt.first_order) {
    // g = ∇ of the mean CE over all N samples, in one backward (LLM-Pruner's batch loss); a rank
    // without samples runs a zero-weighted pass so that it joins the DP sums in the hooks.
    collector.pass = Pass::first_order;
    Progress progress("calibration (first order)", samples.size(0), "samples");
    const at::Tensor batch = local.size(0) > 0 ? local : samples.narrow(0, 0, 1).to(model.device());
    const double weight = local.size(0) > 0 ? 1.0 / tokens : 0.0;
    (model.loss_sum(batch) * weight).backward();
    progress.add(samples.size(0));
  }
  if (opt.fisher) {
    collector.pass = Pass::fisher;
    for (auto& [name, ws] : stats.weights) {                 // defined on every rank, for the DP sum
      for (int d = 0; d < 2; ++d) {
        if (ws.l1[d].defined()) ws.w2f[d] = at::zeros_like(ws.l1[d]);
      }
    }
    collector.fisher_scale = 1.0 / static_cast<double>(samples.size(0));
    Progress progress("calibration (Fisher)", std::max<int64_t>(local.size(0), 1), "samples");
    for (int64_t i = 0; i < local.size(0); ++i) {
      const at::Tensor loss = model.loss_sum(local.narrow(0, i, 1)) / static_cast<double>(samples.size(1) - 1);
      loss.backward();
      progress.add(1);
    }
    if (dp && dp->size() > 1) {
      for (auto& [name, s] : stats.weights) {
        for (at::Tensor& v : s.w2f) {
          if (!v.defined()) continue;
          dp->all_reduce(v, parallel::ReduceOp::sum);
        }
      }
    }
  }
  for (auto& [name, t] : named) {
    torch::autograd::impl::set_post_acc_grad_hooks(t, nullptr);
    at::Tensor leaf = t;
    leaf.mutable_grad().reset();
    leaf.set_requires_grad(false);
  }
  stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return stats;
}

}  // namespace secateur::pruning
