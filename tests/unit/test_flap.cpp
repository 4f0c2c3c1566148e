// FLAP and Wanda-sp (pruning/score.h) and bias compensation (pruning/compensate.h), against
// direct float64 computations on a small model: each metric from the raw activations of the
// output projections' inputs; compensation exact where FLAP states it (on the calibration mean
// input, every pruned projection gives the dense one's output), biases added where none existed.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include <map>
#include <set>

#include "pruning/apply.h"
#include "pruning/compensate.h"
#include "pruning/decision.h"
#include "pruning/score.h"
#include "pruning/stats.h"
#include "runtime/core/check.h"
#include "runtime/model/spec.h"

using namespace secateur;
using model::ModelConfig;
using pruning::Criterion;
using pruning::GroupKind;

namespace {

// LLaMA with GQA (2 query heads a kv-group, head_dim 4) and no biases, as LLaMA and SmolLM2 come.
ModelConfig plain_llama(const std::string& arch = "llama") {
  auto c = ModelConfig::make(model::Family::llama, 61, 40, 3, 8, 4, 24);
  c.arch = arch;
  c.head_dim = 4;
  c.tied_embeddings = false;
  c.attention_bias = arch == "qwen2";   // as Qwen2's config reads (its q/k/v biases are always there)
  return c;
}

struct Calibrated {
  model::Decoder model;
  at::Tensor samples;
  pruning::Statistics stats;
  std::map<std::pair<int64_t, int>, at::Tensor> inputs;   // (layer, tap) -> [tokens, columns]: o_proj's and down_proj's
};

Calibrated calibrated(const ModelConfig& c) {
  Calibrated k{model::Decoder::with_random_weights(c, 17), {}, {}, {}};
  k.model.to(at::kCPU, at::kDouble);
  at::manual_seed(9);
  k.samples = at::randint(c.vocab_size, {5, 7}, at::kLong);
  pruning::CalibrationOptions opt;
  opt.first_order = false;
  opt.activations = true;
  k.stats = pruning::collect_statistics(k.model, k.samples, opt);
  k.model.set_observer([&](int64_t layer, model::Tap tap, const at::Tensor& x) {
    if (tap == model::Tap::attn_out || tap == model::Tap::mlp_hidden) {
      k.inputs[{layer, static_cast<int>(tap)}] = x.detach().reshape({-1, x.size(-1)}).clone();
    }
  });
  at::NoGradGuard ng;
  (void)k.model.logits(k.samples);
  k.model.set_observer(nullptr);
  return k;
}

std::map<std::string, at::Tensor> weights_of(const model::Decoder& m) {
  std::map<std::string, at::Tensor> w;
  for (const auto& [n, t] : m.named_tensors()) w[n] = t;
  return w;
}

double score_of(const Calibrated& k, Criterion c, GroupKind kind, int64_t layer, int64_t index) {
  const pruning::Group g = pruning::make_group(k.model.config(), kind, layer, index);
  return pruning::score_groups({g}, k.stats, c, pruning::Aggregate::sum, 0).at(0);
}

}  // namespace

TEST(Flap, WandaSpAndFluctuationScoresEqualTheirFormulas) {
  const ModelConfig c = plain_llama();
  const Calibrated k = calibrated(c);
  auto w = weights_of(k.model);
  EXPECT_EQ(k.stats.tokens, k.samples.numel());
  for (int64_t l = 0; l < c.n_layers(); ++l) {
    const std::string p = model::layer_prefix(c, l);
    for (const bool attention : {false, true}) {
      const at::Tensor x = k.inputs.at({l, static_cast<int>(attention ? model::Tap::attn_out : model::Tap::mlp_hidden)});
      const at::Tensor W = w.at(p + (attention ? "self_attn.o_proj.weight" : "mlp.down_proj.weight"));
      // Wanda-sp: mean_i |W_ij| · ‖x_j‖; FLAP: z-score of Var(x_j)·‖W_:j‖² (squared for attention).
      const at::Tensor wanda = W.abs().mean(0) * x.square().sum(0).sqrt();
      at::Tensor s = x.var(0, /*unbiased=*/false) * W.square().sum(0);
      if (attention) s = s.square();
      const at::Tensor z = (s - s.mean()) / s.std();
      const GroupKind kind = attention ? GroupKind::kv_group : GroupKind::neuron;
      const int64_t width = attention ? c.group_size(l) * c.head_dim : 1;   // o_proj columns of a kv-group
      for (int64_t i = 0; i < model::unit_count(c, kind, l); ++i) {
        const double want_w = wanda.narrow(0, i * width, width).sum().item<double>();
        const double want_f = z.narrow(0, i * width, width).mean().item<double>();
        EXPECT_NEAR(score_of(k, Criterion::wanda_sp, kind, l, i), want_w, 1e-9 * std::abs(want_w)) << l << " " << i;
        EXPECT_NEAR(score_of(k, Criterion::flap, kind, l, i), want_f, 1e-9) << l << " " << i;
      }
      if (attention) {   // a query head: its own dh columns
        const double want = z.narrow(0, 3 * c.head_dim, c.head_dim).mean().item<double>();
        EXPECT_NEAR(score_of(k, Criterion::flap, GroupKind::query_head, l, 3), want, 1e-9);
      }
    }
  }
  // Neither scores hidden channels or layers: refused before any work, naming the key.
  pruning::PruneOptions opt;
  opt.criterion = Criterion::flap;
  opt.scope = "channel";
  EXPECT_THROW(pruning::validate(opt, c), Error);
  opt.criterion = Criterion::taylor_element1;
  opt.compensation = pruning::Compensation::bias;
  opt.scope = "layer";
  EXPECT_THROW(pruning::validate(opt, c), Error);
}

TEST(Flap, GlobalScopeRanksStandardisedScoresAsTheyAre) {
  const ModelConfig c = plain_llama();
  const Calibrated k = calibrated(c);
  pruning::PruneOptions opt;
  opt.criterion = Criterion::flap;
  opt.scope = "global";
  opt.ratio = 0.15;
  opt.min_keep = 0.05;
  const pruning::Decision d = pruning::decide(c, k.stats, opt);
  // Every removed unit scores no higher than every kept one that would have fit in the budget.
  double highest_removed = -1e300;
  for (const auto& g : d.removed) highest_removed = std::max(highest_removed, score_of(k, opt.criterion, g.kind, g.layer, g.index));
  const auto neurons = pruning::enumerate_groups(c, GroupKind::neuron);
  const auto s = pruning::score_groups(neurons, k.stats, opt.criterion, pruning::Aggregate::sum, 0);
  int64_t below = 0;
  for (double v : s) below += v < highest_removed;
  int64_t removed_neurons = 0;
  for (const auto& g : d.removed) removed_neurons += g.kind == GroupKind::neuron;
  EXPECT_GE(removed_neurons, below - 1);   // the ones below the cut went (kv-groups may skip one that no longer fits)
  EXPECT_LT(d.after.d_ff[0] + d.after.d_ff[1] + d.after.d_ff[2], 3 * 24);
}

namespace {

// The kept input columns of an output projection under a removal (the whole model's indices).
std::vector<int64_t> kept_columns(const std::vector<pruning::Group>& remove, const std::string& weight, int64_t in) {
  std::set<int64_t> gone;
  for (const auto& g : remove) {
    for (const auto& s : g.slices) {
      if (s.tensor == weight && s.dim == 1) {
        for (int64_t j = s.begin; j < s.end; ++j) gone.insert(j);
      }
    }
  }
  std::vector<int64_t> kept;
  for (int64_t j = 0; j < in; ++j) {
    if (!gone.count(j)) kept.push_back(j);
  }
  return kept;
}

}  // namespace

TEST(Flap, CompensatedProjectionsGiveTheDenseOutputOnTheMeanInput) {
  for (const std::string arch : {"llama", "qwen2"}) {
    const ModelConfig c = plain_llama(arch);
    const Calibrated k = calibrated(c);
    pruning::PruneOptions opt;
    opt.criterion = Criterion::flap;
    opt.ratio = 0.3;
    const pruning::Decision d = pruning::decide(c, k.stats, opt);
    const auto dense = k.model.named_tensors();
    const pruning::Compensated comp =
        pruning::compensate(c, dense, d.removed, k.stats, pruning::Compensation::bias, 0.01);
    EXPECT_EQ(comp.config.arch, "llama") << arch;      // Qwen2's HF class has no o_proj / MLP bias
    EXPECT_TRUE(comp.config.attention_bias && comp.config.mlp_bias);
    const pruning::Pruned p = pruning::apply(comp.config, comp.tensors, comp.remove);
    auto before = weights_of(k.model);
    std::map<std::string, at::Tensor> after(p.tensors.begin(), p.tensors.end());
    for (const auto& [name, t] : dense) EXPECT_TRUE(at::equal(t, before.at(name))) << name;   // the dense model as it was
    const double n = static_cast<double>(k.stats.tokens);
    for (int64_t l = 0; l < c.n_layers(); ++l) {
      const std::string pre = model::layer_prefix(c, l);
      for (const char* proj : {"self_attn.o_proj", "mlp.down_proj"}) {
        const std::string wn = pre + proj + ".weight", bn = pre + proj + ".bias";
        const at::Tensor mean = k.stats.weights.at(wn).act_sum[1] / n;     // [in] over the calibration tokens
        const std::vector<int64_t> kept = kept_columns(comp.remove, wn, mean.size(0));
        const at::Tensor dense_bias = before.count(bn) ? before.at(bn) : at::zeros({c.hidden}, at::kDouble);
        const at::Tensor want = at::mv(before.at(wn), mean) + dense_bias;
        const at::Tensor got = at::mv(after.at(wn), mean.index_select(0, at::tensor(kept, at::kLong))) + after.at(bn);
        EXPECT_LE((got - want).abs().max().item<double>(), 1e-9 * want.abs().max().item<double>()) << arch << " " << wn;
        if (static_cast<int64_t>(kept.size()) == mean.size(0)) EXPECT_TRUE(at::equal(after.at(bn), dense_bias)) << wn;
      }
      // The biases the flags brought are zero, cut with their rows.
      EXPECT_EQ(after.at(pre + "mlp.up_proj.bias").size(0), p.config.d_ff[l]);
      EXPECT_EQ(after.at(pre + "mlp.up_proj.bias").abs().max().item<double>(), 0.0);
      if (arch == "llama") EXPECT_EQ(after.at(pre + "self_attn.q_proj.bias").abs().max().item<double>(), 0.0);
    }
    EXPECT_GT(d.achieved_ratio, 0.2);
    const model::Decoder small(p.config, p.tensors);   // it runs
    at::NoGradGuard ng;
    EXPECT_TRUE(at::isfinite(small.logits(k.samples)).all().item<bool>());
  }
  // No activation means: a clear error, before anything is built.
  const ModelConfig c = plain_llama();
  model::Decoder m = model::Decoder::with_random_weights(c, 3);
  EXPECT_THROW(pruning::compensate(c, m.named_tensors(), {}, pruning::Statistics{}, pruning::Compensation::bias, 0.01),
               Error);
}

// Least squares: the kept columns and the bias are the ridge regression of the removed inputs on the
// kept ones, computed here from the raw inputs; over the calibration tokens the pruned projection's
// error has mean zero and is below the bias step's.
TEST(Flap, LeastSquaresCompensationIsTheRidgeRegressionOfTheRemovedInputs) {
  const ModelConfig c = plain_llama();
  Calibrated k = calibrated(c);
  pruning::CalibrationOptions opt_gram;
  opt_gram.first_order = false;
  opt_gram.gram = true;
  k.stats = pruning::collect_statistics(k.model, k.samples, opt_gram);
  pruning::PruneOptions opt;
  opt.criterion = Criterion::flap;
  opt.ratio = 0.3;
  const pruning::Decision d = pruning::decide(c, k.stats, opt);
  const auto dense = k.model.named_tensors();
  std::map<std::string, at::Tensor> before;
  for (const auto& [n, t] : dense) before[n] = t.clone();
  const double ridge = 0.05;
  const auto ls = pruning::compensate(c, dense, d.removed, k.stats, pruning::Compensation::least_squares, ridge);
  const auto bias = pruning::compensate(c, dense, d.removed, k.stats, pruning::Compensation::bias, ridge);
  std::map<std::string, at::Tensor> w_ls(ls.tensors.begin(), ls.tensors.end()), w_b(bias.tensors.begin(), bias.tensors.end());
  for (const auto& [n, t] : k.model.named_tensors()) EXPECT_TRUE(at::equal(t, before.at(n))) << n << " changed";
  int64_t checked = 0;
  for (int64_t l = 0; l < c.n_layers(); ++l) {
    const std::string pre = model::layer_prefix(c, l);
    for (const bool attention : {false, true}) {
      const std::string wn = pre + (attention ? "self_attn.o_proj.weight" : "mlp.down_proj.weight");
      const std::string bn = pre + (attention ? "self_attn.o_proj.bias" : "mlp.down_proj.bias");
      const at::Tensor x = k.inputs.at({l, static_cast<int>(attention ? model::Tap::attn_out : model::Tap::mlp_hidden)});
      const at::Tensor gram = x.t().mm(x);
      EXPECT_LE((k.stats.gram.at(wn) - gram).abs().max().item<double>(), 1e-9 * gram.abs().max().item<double>()) << wn;
      const std::vector<int64_t> kept = kept_columns(ls.remove, wn, x.size(1));
      if (static_cast<int64_t>(kept.size()) == x.size(1)) continue;
      std::vector<int64_t> gone;
      for (int64_t j = 0, i = 0; j < x.size(1); ++j) {
        if (i < static_cast<int64_t>(kept.size()) && kept[i] == j) ++i;
        else gone.push_back(j);
      }
      const at::Tensor K = at::tensor(kept, at::kLong), R = at::tensor(gone, at::kLong);
      // By hand: centre the inputs, ridge-regress x_R on x_K.
      const at::Tensor z = x - x.mean(0, true), zk = z.index_select(1, K), zr = z.index_select(1, R);
      at::Tensor ckk = zk.t().mm(zk) / x.size(0);
      ckk = ckk + ridge * ckk.diagonal().mean() * at::eye(ckk.size(0), ckk.options());
      const at::Tensor A = at::linalg_solve(ckk, zk.t().mm(zr) / x.size(0)).t();   // [R, K]
      const at::Tensor W = before.at(wn), W_R = W.index_select(1, R);
      const at::Tensor want_w = W.index_select(1, K) + W_R.mm(A);
      const at::Tensor mu = x.mean(0);
      const at::Tensor want_b = at::mv(W_R, mu.index_select(0, R) - at::mv(A, mu.index_select(0, K)));
      const at::Tensor got_w = w_ls.at(wn).index_select(1, K);
      EXPECT_LE((got_w - want_w).abs().max().item<double>(), 1e-9 * want_w.abs().max().item<double>()) << wn;
      EXPECT_LE((w_ls.at(bn) - want_b).abs().max().item<double>(), 1e-9 * want_b.abs().max().item<double>()) << wn;
      // Over the calibration tokens: mean error zero, squared error below the bias step's.
      const at::Tensor y = x.mm(W.t());
      const at::Tensor e_ls = y - (x.index_select(1, K).mm(got_w.t()) + w_ls.at(bn));
      const at::Tensor e_b = y - (x.index_select(1, K).mm(w_b.at(wn).index_select(1, K).t()) + w_b.at(bn));
      EXPECT_LE(e_ls.mean(0).abs().max().item<double>(), 1e-9 * y.abs().max().item<double>()) << wn;
      EXPECT_LT(e_ls.square().sum().item<double>(), e_b.square().sum().item<double>()) << wn;
      ++checked;
    }
  }
  EXPECT_GT(checked, 0);
  pruning::Statistics no_gram = k.stats;
  no_gram.gram.clear();
  EXPECT_THROW(pruning::compensate(c, dense, d.removed, no_gram, pruning::Compensation::least_squares, ridge), Error);
}
