// Whole-layer criteria (pruning/score.h, pruning/depth.h) against direct float64 computations on a
// small model: the residual stream's distances (block influence, angular) from the states captured
// at every layer boundary; a skipped layer computes what the model without it computes; the angular
// span is the best of every span that fits; SLEB's order is that of a brute-force search over the
// physically smaller models.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "pruning/apply.h"
#include "pruning/decision.h"
#include "pruning/depth.h"
#include "pruning/score.h"
#include "pruning/stats.h"
#include "runtime/core/check.h"

using namespace secateur;
using model::ModelConfig;
using pruning::Criterion;
using pruning::GroupKind;

namespace {

ModelConfig six_layers() {
  auto c = ModelConfig::make(model::Family::llama, 61, 24, 6, 4, 2, 20);
  c.head_dim = 6;
  c.tied_embeddings = false;
  return c;
}

model::Decoder model_of(const ModelConfig& c) {
  model::Decoder m = model::Decoder::with_random_weights(c, 23);
  m.to(at::kCPU, at::kDouble);
  return m;
}

at::Tensor samples_of(const ModelConfig& c) {
  at::manual_seed(4);
  return at::randint(c.vocab_size, {19, 9}, at::kLong);   // batches of 8, 8 and 3
}

// The residual stream at every boundary, [tokens, d] each, from one forward pass over all samples.
std::vector<at::Tensor> boundaries(model::Decoder& m, const at::Tensor& samples) {
  std::vector<at::Tensor> h(m.config().n_layers() + 1);
  m.set_observer([&](int64_t layer, model::Tap tap, const at::Tensor& x) {
    if (tap == model::Tap::residual) h.at(layer) = x.detach().reshape({-1, x.size(-1)}).clone();
  });
  at::NoGradGuard ng;
  (void)m.hidden_states(samples);
  m.set_observer(nullptr);
  return h;
}

pruning::Statistics residual_stats(model::Decoder& m, const at::Tensor& samples) {
  pruning::CalibrationOptions o;
  o.first_order = false;
  o.residuals = true;
  return pruning::collect_statistics(m, samples, o);
}

double nll_per_token(const model::Decoder& m, const at::Tensor& samples) {
  at::NoGradGuard ng;
  const auto [sum, n] = m.nll(samples);
  return sum / static_cast<double>(n);
}

// The model without these layers, physically.
model::Decoder without_layers(const model::Decoder& m, const std::set<int64_t>& layers) {
  const pruning::GroupMaker make(m.config());
  std::vector<pruning::Group> gone;
  for (int64_t l : layers) gone.push_back(make(GroupKind::layer, l, 0));
  const pruning::Pruned p = pruning::apply(m.config(), m.named_tensors(), gone);
  return model::Decoder(p.config, p.tensors);
}

// Per token, cos(a_t, b_t) of two [tokens, d] states.
at::Tensor cosines(const at::Tensor& a, const at::Tensor& b) {
  return (a * b).sum(1) / (a.norm(2, {1}) * b.norm(2, {1}));
}

// The six-layer model, its samples, their residual statistics and the states at every boundary.
struct Measured {
  ModelConfig c = six_layers();
  model::Decoder m = model_of(c);
  at::Tensor samples = samples_of(c);
  pruning::Statistics stats = residual_stats(m, samples);
  std::vector<at::Tensor> h = boundaries(m, samples);
};

pruning::PruneOptions layer_options(Criterion c, double layers, const ModelConfig& cfg) {
  pruning::PruneOptions o;
  o.criterion = c;
  o.scope = "layer";
  const double one = static_cast<double>(cfg.n_params() - model::without(cfg, {{GroupKind::layer, 0, 0}}).n_params());
  o.ratio = layers * one / static_cast<double>(cfg.n_params());
  return o;
}

}  // namespace

TEST(Depth, ResidualDistancesAndBlockInfluenceEqualADirectCosineComputation) {
  Measured k;
  const ModelConfig& c = k.c;
  model::Decoder& m = k.m;
  const at::Tensor& samples = k.samples;
  const pruning::Statistics& stats = k.stats;
  const std::vector<at::Tensor>& h = k.h;
  const int64_t L = c.n_layers();
  ASSERT_EQ(stats.tokens, samples.numel());
  ASSERT_EQ(stats.residual_cosine.sizes(), at::IntArrayRef({L + 1, L + 1}));
  // h_0 is the embedding; h_L is what the final norm normalises (the model's last hidden states).
  at::Tensor embed, norm;
  for (const auto& [n, t] : m.named_tensors()) {
    if (n == "model.embed_tokens.weight") embed = t;
    if (n == "model.norm.weight") norm = t;
  }
  EXPECT_TRUE(at::allclose(h[0], embed.index_select(0, samples.flatten()), 0, 1e-12));
  const at::Tensor normed = h[L] / (h[L].square().mean(-1, true) + c.norm_eps).sqrt() * norm;
  at::NoGradGuard ng;
  EXPECT_TRUE(at::allclose(normed, m.hidden_states(samples).reshape({-1, c.hidden}), 0, 1e-12));
  double worst = 0;
  for (int64_t i = 0; i <= L; ++i) {
    for (int64_t j = i + 1; j <= L; ++j) {
      const at::Tensor cos = cosines(h[i], h[j]);
      const double d = (1 - cos).sum().item<double>(), a = cos.clamp(-1, 1).acos().sum().item<double>() / M_PI;
      worst = std::max({worst, std::abs(stats.residual_cosine[i][j].item<double>() - d) / d,
                        std::abs(stats.residual_angle[i][j].item<double>() - a) / a});
    }
  }
  EXPECT_LE(worst, 1e-9);
  std::vector<pruning::Group> layers;
  const pruning::GroupMaker make(c);
  for (int64_t l = 0; l < L; ++l) layers.push_back(make(GroupKind::layer, l, 0));
  const std::vector<double> bi = pruning::score_groups(layers, stats, Criterion::block_influence, {}, 0);
  for (int64_t l = 0; l < L; ++l) {
    const at::Tensor cos = cosines(h[l], h[l + 1]);
    EXPECT_NEAR(bi[l], (1 - cos).mean().item<double>(), 1e-12) << l;
  }
  // The decision removes the lowest-influence layers that fit, here two.
  const pruning::Decision d = pruning::decide(c, stats, layer_options(Criterion::block_influence, 2.5, c));
  std::vector<int64_t> order(L);
  for (int64_t l = 0; l < L; ++l) order[l] = l;
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return bi[a] < bi[b]; });
  ASSERT_EQ(d.removed.size(), 2u);
  EXPECT_EQ((std::set<int64_t>{d.removed[0].layer, d.removed[1].layer}), (std::set<int64_t>{order[0], order[1]}));
}

TEST(Depth, ASkippedLayerComputesWhatTheModelWithoutItComputes) {
  const ModelConfig c = six_layers();
  model::Decoder m = model_of(c);
  const at::Tensor samples = samples_of(c);
  std::vector<bool> skip(c.n_layers(), false);
  skip[2] = skip[4] = true;
  const double without = nll_per_token(without_layers(m, {2, 4}), samples);
  m.set_skipped_layers(skip);
  EXPECT_NEAR(nll_per_token(m, samples), without, 1e-12);
  const std::vector<at::Tensor> h = boundaries(m, samples);
  EXPECT_TRUE(at::equal(h[3], h[2]));
  EXPECT_FALSE(at::equal(h[2], h[1]));
  model::KVCache cache;
  EXPECT_THROW((void)m.hidden_states(samples, &cache), Error);
  EXPECT_THROW(m.set_skipped_layers({true}), Error);
  m.set_skipped_layers({});
  EXPECT_GT(std::abs(nll_per_token(m, samples) - without), 1e-6);
}

TEST(Depth, AngularRemovesTheClosestSpanOfTheLongestLengthThatFits) {
  const Measured k;
  const ModelConfig& c = k.c;
  const std::vector<at::Tensor>& h = k.h;
  for (const std::vector<int64_t>& keep : {std::vector<int64_t>{}, std::vector<int64_t>{0, -1}}) {
    for (int64_t n : {1, 2, 3}) {
      pruning::PruneOptions o = layer_options(Criterion::angular, static_cast<double>(n) + 0.5, c);
      o.keep_layers = keep;
      const int64_t first = keep.empty() ? 0 : 1, last = c.n_layers() - (keep.empty() ? 0 : 1);
      int64_t best = -1;
      double best_angle = 0;
      for (int64_t s = first; s + n <= last; ++s) {
        const at::Tensor cos = cosines(h[s], h[s + n]);
        const double a = cos.clamp(-1, 1).acos().mean().item<double>() / M_PI;
        if (best < 0 || a < best_angle) best = s, best_angle = a;
      }
      const pruning::Decision d = pruning::decide(c, k.stats, o);
      ASSERT_EQ(static_cast<int64_t>(d.removed.size()), n) << n;
      for (int64_t i = 0; i < n; ++i) EXPECT_EQ(d.removed[i].layer, best + i) << "span of " << n;
      EXPECT_EQ(d.after.n_layers(), c.n_layers() - n);
    }
  }
}

TEST(Depth, SlebEqualsABruteForceSearchOverThePhysicallySmallerModels) {
  const ModelConfig c = six_layers();
  model::Decoder m = model_of(c);
  const at::Tensor samples = samples_of(c);
  pruning::PruneOptions o = layer_options(Criterion::sleb, 3.5, c);
  o.keep_layers = {0, -1};
  const pruning::Statistics stats = pruning::sleb_search(m, samples, o);
  std::set<int64_t> gone;
  std::vector<int64_t> order;
  std::vector<double> nll;
  for (int phase = 0; phase < 3; ++phase) {
    int64_t best = -1;
    double best_nll = 0;
    for (int64_t l = 1; l + 1 < c.n_layers(); ++l) {
      if (gone.count(l)) continue;
      std::set<int64_t> with = gone;
      with.insert(l);
      const double v = nll_per_token(without_layers(m, with), samples);
      if (best < 0 || v < best_nll) best = l, best_nll = v;
    }
    gone.insert(best);
    order.push_back(best);
    nll.push_back(best_nll);
  }
  EXPECT_EQ(stats.sleb_order, order);
  ASSERT_EQ(stats.sleb_nll.size(), nll.size());
  for (size_t i = 0; i < nll.size(); ++i) EXPECT_NEAR(stats.sleb_nll[i], nll[i], 1e-9 * nll[i]) << i;
  EXPECT_NEAR(nll_per_token(m, samples), nll_per_token(model_of(c), samples), 0) << "the search left layers skipped";
  // The decision takes exactly those layers; a bigger budget than the search's is refused, a
  // smaller one takes the first of them.
  const pruning::Decision d = pruning::decide(c, stats, o);
  std::set<int64_t> removed;
  for (const pruning::Group& g : d.removed) removed.insert(g.layer);
  EXPECT_EQ(removed, gone);
  pruning::PruneOptions more = o;
  more.ratio *= 1.3;
  EXPECT_THROW((void)pruning::decide(c, stats, more), Error);
  const pruning::Decision two = pruning::decide(c, stats, layer_options(Criterion::sleb, 2.5, c));
  EXPECT_EQ((std::set<int64_t>{two.removed[0].layer, two.removed[1].layer}), (std::set<int64_t>{order[0], order[1]}));
}

TEST(Depth, LayerCriteriaRefuseOtherScopesAndBudgetsBelowOneLayer) {
  const ModelConfig c = six_layers();
  for (Criterion k : {Criterion::block_influence, Criterion::angular, Criterion::sleb}) {
    pruning::PruneOptions o = layer_options(k, 1.5, c);
    o.scope = "per_layer";
    EXPECT_THROW(pruning::validate(o, c), Error) << pruning::criterion_name(k);
  }
  model::Decoder m = model_of(c);
  const at::Tensor samples = samples_of(c);
  const pruning::Statistics stats = residual_stats(m, samples);
  EXPECT_THROW((void)pruning::decide(c, stats, layer_options(Criterion::angular, 0.5, c)), Error);
  EXPECT_THROW((void)pruning::decide(c, pruning::Statistics{}, layer_options(Criterion::block_influence, 1.5, c)),
               Error);
  // A search that finds no layer within the budget leaves an empty order, which no decision takes.
  const pruning::Statistics none = pruning::sleb_search(m, samples, layer_options(Criterion::sleb, 0.5, c));
  EXPECT_TRUE(none.sleb_order.empty());
}
