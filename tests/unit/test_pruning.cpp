// Groups and their physical removal: removing a group must equal zeroing every one of its
// coupled slices in the dense model (logits <= 1e-5); hidden channels change the norms'
// statistics, and the exact relation is tested instead (see HiddenChannels below).
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <map>
#include <set>
#include <nlohmann/json.hpp>

#include "pruning/apply.h"
#include "pruning/decision.h"
#include "pruning/score.h"
#include "pruning/stats.h"
#include "pruning/group.h"
#include "runtime/core/check.h"
#include "runtime/io/hf_config.h"

using namespace secateur;
using model::Family;
using model::ModelConfig;
using pruning::Group;
using pruning::GroupKind;

namespace {

ModelConfig gqa_llama() {
  auto c = ModelConfig::make(Family::llama, 61, 40, 3, 8, 4, 24);
  c.head_dim = 4;
  c.tied_embeddings = false;
  c.attention_bias = c.mlp_bias = true;
  return c;
}

ModelConfig small_gpt2() {
  auto c = ModelConfig::make(Family::gpt2, 57, 24, 3, 4, 4, 32);
  c.max_positions = 32;
  return c;
}

// The dense weights with every slice of the groups set to zero.
model::NamedTensors zeroed(const model::NamedTensors& w, const std::vector<Group>& groups) {
  std::map<std::string, at::Tensor> m;
  for (const auto& [n, t] : w) m[n] = t.clone();
  for (const Group& g : groups) {
    for (const auto& s : g.slices) {
      if (s.dim < 0) m[s.tensor].zero_();
      else m[s.tensor].narrow(s.dim, s.begin, s.end - s.begin).zero_();
    }
  }
  model::NamedTensors out;
  for (const auto& [n, t] : w) out.emplace_back(n, m[n]);
  return out;
}

double max_rel(const at::Tensor& a, const at::Tensor& b) {
  return ((a - b).abs().max() / b.abs().max()).item<double>();
}

void expect_removal_equals_zeroing(const ModelConfig& c, const std::vector<Group>& groups) {
  const auto dense = model::Decoder::with_random_weights(c, 21).named_tensors();
  const pruning::Pruned p = pruning::apply(c, dense, groups);
  const model::Decoder small(p.config, p.tensors);
  const model::Decoder masked(c, zeroed(dense, groups));
  at::NoGradGuard ng;
  at::manual_seed(2);
  const at::Tensor ids = at::randint(c.vocab_size, {2, 11}, at::kLong);
  EXPECT_LE(max_rel(small.logits(ids), masked.logits(ids)), 1e-5) << pruning::kind_name(groups[0].kind);
  EXPECT_LT(p.config.n_params(), c.n_params());
}

}  // namespace

TEST(Groups, CouplingOfALlamaNeuronHeadAndKvGroup) {
  const auto c = gqa_llama();
  const Group n = pruning::make_group(c, GroupKind::neuron, 1, 7);
  EXPECT_EQ(n.slices.size(), 5u);   // gate row + bias, up row + bias, down column
  const Group kv = pruning::make_group(c, GroupKind::kv_group, 2, 1);
  bool q_rows = false;
  for (const auto& s : kv.slices) {
    if (s.tensor == "model.layers.2.self_attn.q_proj.weight") q_rows = s.dim == 0 && s.begin == 8 && s.end == 16;
  }
  EXPECT_TRUE(q_rows) << "kv-group 1 of 4 (2 query heads each, head_dim 4) owns q rows [8, 16)";
  EXPECT_EQ(pruning::enumerate_groups(c, GroupKind::query_head).size(), 24u);
  EXPECT_THROW(pruning::make_group(c, GroupKind::neuron, 3, 0), Error);
  EXPECT_THROW(pruning::parse_kind("channel"), Error);
}

TEST(Apply, RemovingNeuronsEqualsZeroingThem) {
  for (const auto& c : {gqa_llama(), small_gpt2()}) {
    expect_removal_equals_zeroing(c, {pruning::make_group(c, GroupKind::neuron, 0, 3),
                                      pruning::make_group(c, GroupKind::neuron, 0, 4),
                                      pruning::make_group(c, GroupKind::neuron, 2, 0)});
  }
}

TEST(Apply, RemovingQueryHeadsEqualsZeroingThem) {
  const auto c = gqa_llama();           // one head from each of the 4 kv-groups keeps GQA valid
  std::vector<Group> g;
  for (int64_t h : {1, 2, 5, 6}) g.push_back(pruning::make_group(c, GroupKind::query_head, 1, h));
  expect_removal_equals_zeroing(c, g);
  const auto p = pruning::apply(c, model::Decoder::with_random_weights(c, 1).named_tensors(), g);
  EXPECT_EQ(p.config.n_heads[1], 4);
  EXPECT_EQ(p.config.n_kv_heads[1], 4);
  const auto gpt = small_gpt2();
  expect_removal_equals_zeroing(gpt, {pruning::make_group(gpt, GroupKind::query_head, 2, 1)});
}

TEST(Apply, RemovingKvGroupsEqualsZeroingThem) {
  const auto c = gqa_llama();
  expect_removal_equals_zeroing(c, {pruning::make_group(c, GroupKind::kv_group, 0, 3),
                                    pruning::make_group(c, GroupKind::kv_group, 2, 0)});
}

TEST(Apply, RemovingALayerEqualsZeroingIt) {
  for (const auto& c : {gqa_llama(), small_gpt2()}) {
    expect_removal_equals_zeroing(c, {pruning::make_group(c, GroupKind::layer, 1, 0)});
  }
}

TEST(Apply, UnevenQueryHeadsPerGroupAreRefused) {
  const auto c = gqa_llama();
  try {
    pruning::apply(c, model::Decoder::with_random_weights(c, 1).named_tensors(),
                   {pruning::make_group(c, GroupKind::query_head, 1, 0)});
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("unevenly across kv-groups"));
  }
}

// RMSNorm over the d - k kept channels equals RMSNorm over all d channels with the removed ones
// at zero, once eps is scaled by (d - k) / d and every norm weight by sqrt((d - k) / d):
//   w x / sqrt(S / (d-k) + eps)  ==  w sqrt((d-k)/d) x / sqrt(S / d + eps (d-k)/d).
TEST(Apply, HiddenChannelsEqualZeroingWithRescaledNorms) {
  auto c = gqa_llama();
  c.norm_eps = 1e-3;                    // large enough that getting eps wrong would show
  std::vector<Group> g;
  for (int64_t ch : {0, 7, 8, 39}) g.push_back(pruning::make_group(c, GroupKind::hidden_channel, -1, ch));
  const auto dense = model::Decoder::with_random_weights(c, 21).named_tensors();
  const pruning::Pruned p = pruning::apply(c, dense, g);
  EXPECT_EQ(p.config.hidden, 36);
  const double keep = 36.0 / 40.0;
  auto z = zeroed(dense, g);
  for (auto& [n, t] : z) {
    if (n.find("norm") != std::string::npos) t = t * std::sqrt(keep);
  }
  ModelConfig zc = c;
  zc.norm_eps = c.norm_eps * keep;
  const model::Decoder small(p.config, p.tensors), masked(zc, z);
  at::NoGradGuard ng;
  const at::Tensor ids = at::randint(c.vocab_size, {2, 9}, at::kLong);
  EXPECT_LE(max_rel(small.logits(ids), masked.logits(ids)), 1e-5);
}

TEST(Apply, PerLayerWidthsRoundTripThroughHfConfig) {
  const auto c = gqa_llama();
  const auto p = pruning::apply(c, model::Decoder::with_random_weights(c, 1).named_tensors(),
                                {pruning::make_group(c, GroupKind::kv_group, 0, 1),
                                 pruning::make_group(c, GroupKind::neuron, 2, 5)});
  const auto back = io::config_from_hf(io::config_to_hf(p.config, "float32"), "test");
  EXPECT_EQ(back.n_heads, p.config.n_heads);
  EXPECT_EQ(back.n_kv_heads, p.config.n_kv_heads);
  EXPECT_EQ(back.d_ff, p.config.d_ff);
  EXPECT_FALSE(back.uniform());
}

// ---- statistics, criteria, decision ---------------------------------------------------------

namespace {

// Brute force: the full gradient of the mean CE over all samples, by autograd, in float64.
std::map<std::string, at::Tensor> full_gradients(const ModelConfig& c, const at::Tensor& samples) {
  model::Decoder m = model::Decoder::with_random_weights(c, 31);
  m.to(at::kCPU, at::kDouble);
  for (at::Tensor* p : m.parameters()) p->set_requires_grad(true);
  (m.loss_sum(samples) / static_cast<double>(samples.size(0) * (samples.size(1) - 1))).backward();
  std::map<std::string, at::Tensor> g;
  for (const auto& [n, t] : m.named_tensors()) g[n] = t.grad();
  return g;
}

}  // namespace

TEST(Statistics, FirstOrderAndFisherEqualBruteForce) {
  const auto c = gqa_llama();
  at::manual_seed(4);
  const at::Tensor samples = at::randint(c.vocab_size, {3, 8}, at::kLong);
  model::Decoder m = model::Decoder::with_random_weights(c, 31);
  m.to(at::kCPU, at::kDouble);
  const auto stats = pruning::collect_statistics(m, samples, {true, true});
  const auto g = full_gradients(c, samples);
  const auto weights = m.named_tensors();
  // The model is left as it was: no gradients held, nothing requires grad.
  for (const auto& [n, t] : weights) {
    EXPECT_FALSE(t.requires_grad()) << n;
    EXPECT_FALSE(t.grad().defined()) << n;
  }
  for (const auto& [n, w] : weights) {
    const pruning::WeightStats& s = stats.weights.at(n);
    const at::Tensor wg = w * g.at(n);
    const at::Tensor rows = w.dim() == 2 ? wg.abs().sum(1) : wg.abs();
    EXPECT_TRUE(at::allclose(s.abs_wg[0], rows, 1e-9, 1e-14)) << n;
    if (w.dim() == 2) {
      EXPECT_TRUE(at::allclose(s.wg[1], wg.sum(0), 1e-9, 1e-14)) << n;
    }
  }
  // Fisher: mean over samples of the squared per-sample gradient (of that sample's mean CE).
  const std::string name = "model.layers.1.mlp.up_proj.weight";
  at::Tensor fisher = at::zeros_like(stats.weights.at(name).w2f[0]);
  for (int64_t i = 0; i < 3; ++i) {
    const at::Tensor gi = full_gradients(c, samples.narrow(0, i, 1)).at(name);
    at::Tensor wt;
    for (const auto& [n, t] : weights) {
      if (n == name) wt = t;
    }
    fisher += (wt * wt * gi * gi).sum(1) / 3.0;
  }
  EXPECT_TRUE(at::allclose(stats.weights.at(name).w2f[0], fisher, 1e-9, 1e-14));
}

TEST(Statistics, MixedAndActivationEqualBruteForce) {
  const auto c = gqa_llama();
  at::manual_seed(4);
  const at::Tensor samples = at::randint(c.vocab_size, {3, 8}, at::kLong);
  model::Decoder m = model::Decoder::with_random_weights(c, 31);
  m.to(at::kCPU, at::kDouble);
  pruning::CalibrationOptions opt;
  opt.mixed = opt.activations = true;
  const auto stats = pruning::collect_statistics(m, samples, opt);
  std::map<std::string, at::Tensor> w;
  for (const auto& [n, t] : m.named_tensors()) w[n] = t;
  // mix: Σ_j |W⊙g − ½ W²⊙F| per row, g of the batch, F the mean squared per-sample gradient.
  const std::string name = "model.layers.1.mlp.up_proj.weight";
  const at::Tensor g = full_gradients(c, samples).at(name);
  at::Tensor fisher = at::zeros_like(g);
  for (int64_t i = 0; i < 3; ++i) fisher += full_gradients(c, samples.narrow(0, i, 1)).at(name).square() / 3.0;
  const at::Tensor want = (w[name] * g - 0.5 * w[name].square() * fisher).abs().sum(1);
  EXPECT_TRUE(at::allclose(stats.weights.at(name).mix[0], want, 1e-9, 1e-14));
  // act: Σ_t x² per input column; layer 0's attention input is the normed embedding.
  const at::Tensor x = at::embedding(w["model.embed_tokens.weight"], samples).reshape({-1, c.hidden});
  const at::Tensor normed = x * at::rsqrt(x.square().mean(-1, true) + c.norm_eps) *
                            w["model.layers.0.input_layernorm.weight"];
  const auto& s0 = stats.weights.at("model.layers.0.self_attn.q_proj.weight");
  EXPECT_TRUE(at::allclose(s0.act[1], normed.square().sum(0), 1e-9, 1e-14));
  EXPECT_TRUE(at::equal(stats.weights.at("model.layers.0.self_attn.v_proj.weight").act[1], s0.act[1]));
  EXPECT_EQ(stats.weights.at("model.layers.2.mlp.down_proj.weight").act[1].size(0), c.d_ff[2]);
  EXPECT_FALSE(stats.weights.at("model.layers.2.mlp.down_proj.weight").act[0].defined());   // rows carry none
  // The activation score of a neuron is the L2 norm of its output over the calibration tokens.
  const auto groups = pruning::enumerate_groups(c, GroupKind::neuron);
  const auto a = pruning::score_groups(groups, stats, pruning::Criterion::activation, pruning::Aggregate::sum, 0);
  EXPECT_NEAR(a[0], std::sqrt(stats.weights.at("model.layers.0.mlp.down_proj.weight").act[1][0].item<double>()), 1e-12);
}

TEST(Apply, TpShardsPruneToTheirPlaceInTheWholeSmallerModel) {
  const auto c = gqa_llama();
  const auto dense = model::Decoder::with_random_weights(c, 3).named_tensors();
  const std::vector<Group> remove = {
      pruning::make_group(c, GroupKind::neuron, 0, 0), pruning::make_group(c, GroupKind::neuron, 0, 13),
      pruning::make_group(c, GroupKind::neuron, 2, 23), pruning::make_group(c, GroupKind::kv_group, 1, 1),
      pruning::make_group(c, GroupKind::hidden_channel, -1, 7)};
  const pruning::Pruned whole = pruning::apply(c, dense, remove);
  std::map<std::string, at::Tensor> want(whole.tensors.begin(), whole.tensors.end());
  for (int size : {2, 3}) {
    std::map<std::string, std::pair<int, int64_t>> covered;   // sharded tensor -> (dim, indices placed)
    for (int r = 0; r < size; ++r) {
      const auto plan = model::ShardPlan::make(c, r, size);
      model::NamedTensors local;
      for (const auto& [n, t] : dense) {
        const auto cut = plan.slice_of(n, c);
        local.emplace_back(n, cut.dim < 0 ? t : t.narrow(cut.dim, cut.range.begin, cut.range.size()));
      }
      const pruning::Pruned part = pruning::apply(c, local, remove, &plan);
      EXPECT_EQ(part.config.n_params(), whole.config.n_params());
      for (size_t i = 0; i < part.tensors.size(); ++i) {
        const auto& [n, t] = part.tensors[i];
        const auto& place = part.placement[i];
        const at::Tensor expect =
            place.dim < 0 ? want.at(n) : want.at(n).narrow(place.dim, place.range.begin, place.range.size());
        EXPECT_TRUE(at::equal(t, expect)) << n << " rank " << r << " of " << size;
        if (place.dim >= 0) covered[n] = {place.dim, covered[n].second + place.range.size()};
      }
    }
    for (const auto& [n, k] : covered) EXPECT_EQ(k.second, want.at(n).size(k.first)) << n;   // tiled exactly
  }
}

TEST(Score, CriteriaRankGroupsAsTheirFormulasSay) {
  const auto c = gqa_llama();
  model::Decoder m = model::Decoder::with_random_weights(c, 5);
  const auto stats = pruning::collect_statistics(m, at::randint(c.vocab_size, {2, 6}, at::kLong), {true, false});
  const auto groups = pruning::enumerate_groups(c, GroupKind::neuron);
  const auto l1 = pruning::score_groups(groups, stats, pruning::Criterion::l1, pruning::Aggregate::sum, 0);
  // Neuron 0 of layer 0 by hand: |gate row| + |up row| + |down column| (biases are slices too).
  std::map<std::string, at::Tensor> w;
  for (const auto& [n, t] : m.named_tensors()) w[n] = t;
  const std::string p = "model.layers.0.mlp.";
  const double by_hand = (w[p + "gate_proj.weight"][0].abs().sum() + w[p + "gate_proj.bias"][0].abs() +
                          w[p + "up_proj.weight"][0].abs().sum() + w[p + "up_proj.bias"][0].abs() +
                          w[p + "down_proj.weight"].select(1, 0).abs().sum())
                             .item<double>();
  EXPECT_NEAR(l1[0], by_hand, 1e-5 * by_hand);
  const auto mx = pruning::score_groups(groups, stats, pruning::Criterion::l1, pruning::Aggregate::max, 0);
  EXPECT_LT(mx[0], l1[0]);
  const auto r1 = pruning::score_groups(groups, stats, pruning::Criterion::random, pruning::Aggregate::sum, 7);
  EXPECT_EQ(r1, pruning::score_groups(groups, stats, pruning::Criterion::random, pruning::Aggregate::sum, 7));
  EXPECT_NE(r1, pruning::score_groups(groups, stats, pruning::Criterion::random, pruning::Aggregate::sum, 8));
  EXPECT_THROW(pruning::score_groups(groups, stats, pruning::Criterion::taylor_element2, pruning::Aggregate::sum, 0),
               Error);   // no Fisher pass was run
}

TEST(Decision, PerLayerRemovesTheLowestAndReachesTheRatio) {
  auto c = gqa_llama();
  c.n_heads.assign(3, 8);
  model::Decoder m = model::Decoder::with_random_weights(c, 5);
  const auto stats = pruning::collect_statistics(m, at::randint(c.vocab_size, {2, 6}, at::kLong), {false, false});
  pruning::PruneOptions opt;
  opt.criterion = pruning::Criterion::l2;
  opt.ratio = 0.2;
  opt.keep_layers = {0};
  const auto d = pruning::decide(c, stats, opt);
  EXPECT_LE(d.achieved_ratio, 0.2);
  EXPECT_GT(d.achieved_ratio, 0.15);
  EXPECT_EQ(d.after.d_ff[0], c.d_ff[0]);            // kept dense
  EXPECT_EQ(d.after.d_ff[1], d.after.d_ff[2]);      // the same in every pruned layer
  const auto pruned = pruning::apply(c, m.named_tensors(), d.removed);
  EXPECT_EQ(pruned.config.n_params(), d.params_after);
  // The removed neurons of layer 1 are the lowest by L2.
  const auto neurons = pruning::enumerate_groups(c, GroupKind::neuron);
  const auto s = pruning::score_groups(neurons, stats, pruning::Criterion::l2, pruning::Aggregate::sum, 0);
  double worst_kept = 1e300, best_removed = -1;
  std::set<int64_t> gone;
  for (const auto& g : d.removed) {
    if (g.kind == GroupKind::neuron && g.layer == 1) gone.insert(g.index);
  }
  for (size_t i = 0; i < neurons.size(); ++i) {
    if (neurons[i].layer != 1) continue;
    (gone.count(neurons[i].index) ? best_removed : worst_kept) =
        gone.count(neurons[i].index) ? std::max(best_removed, s[i]) : std::min(worst_kept, s[i]);
  }
  EXPECT_LE(best_removed, worst_kept);
  // query_head mode keeps GQA: the same number of query heads left in every group.
  auto c3 = c;                       // 3 query heads per kv-group
  c3.n_heads.assign(3, 12);
  model::Decoder m3 = model::Decoder::with_random_weights(c3, 6);
  const auto stats3 = pruning::collect_statistics(m3, at::randint(c.vocab_size, {2, 6}, at::kLong), {false, false});
  opt.attention = "query_head";
  opt.mlp = false;
  opt.keep_layers = {};
  opt.ratio = 0.2;                    // one query head of each group in every layer, not two
  const auto q = pruning::decide(c3, stats3, opt);
  EXPECT_EQ(q.after.n_heads, (std::vector<int64_t>{8, 8, 8}));
  EXPECT_EQ(q.after.n_kv_heads, c3.n_kv_heads);
  EXPECT_NO_THROW(pruning::apply(c3, m3.named_tensors(), q.removed));
  // global keeps min_keep of each kind in every layer.
  opt.attention = "kv_group";
  opt.mlp = true;
  opt.keep_layers = {0};
  opt.scope = "global";
  opt.ratio = 0.18;
  const auto gl = pruning::decide(c, stats, opt);
  for (int64_t l = 1; l < 3; ++l) EXPECT_GE(gl.after.d_ff[l], 3);
  EXPECT_NE(gl.hash, d.hash);
}

TEST(Decision, ChannelAndLayerScopesTakeTheLowestWithinTheBudget) {
  const auto c = gqa_llama();
  model::Decoder m = model::Decoder::with_random_weights(c, 5);
  const auto stats = pruning::collect_statistics(m, at::randint(c.vocab_size, {2, 6}, at::kLong), {true, false});
  pruning::PruneOptions opt;
  opt.keep_layers = {};
  opt.scope = "channel";
  opt.ratio = 0.25;
  const auto ch = pruning::decide(c, stats, opt);
  const auto channels = pruning::enumerate_groups(c, GroupKind::hidden_channel);
  const auto s = pruning::score_groups(channels, stats, opt.criterion, opt.aggregate, 0);
  std::set<int64_t> gone;
  for (const auto& g : ch.removed) {
    EXPECT_EQ(g.kind, GroupKind::hidden_channel);
    gone.insert(g.index);
  }
  EXPECT_EQ(ch.after.hidden, c.hidden - static_cast<int64_t>(gone.size()));
  const double per_channel = static_cast<double>(c.n_params() - ch.params_after) / static_cast<double>(gone.size());
  EXPECT_LE(ch.achieved_ratio, 0.25);
  EXPECT_GT(ch.achieved_ratio, 0.25 - per_channel / c.n_params());   // one more channel would not fit
  double worst_kept = 1e300, best_removed = -1;
  for (size_t i = 0; i < channels.size(); ++i) {
    if (gone.count(channels[i].index)) best_removed = std::max(best_removed, s[i]);
    else worst_kept = std::min(worst_kept, s[i]);
  }
  EXPECT_LE(best_removed, worst_kept);
  EXPECT_EQ(pruning::apply(c, m.named_tensors(), ch.removed).config.n_params(), ch.params_after);
  EXPECT_EQ(ch.to_json(opt)["removed_hidden_channels"].size(), gone.size());
  // layer: whole layers, never a kept one, never all of them.
  opt.scope = "layer";
  opt.keep_layers = {1};
  opt.ratio = 0.6;
  const auto ly = pruning::decide(c, stats, opt);
  EXPECT_EQ(ly.removed.size(), 2u);
  for (const auto& g : ly.removed) EXPECT_NE(g.layer, 1);
  EXPECT_EQ(ly.after.n_layers(), 1);
  EXPECT_EQ(pruning::apply(c, m.named_tensors(), ly.removed).config.n_params(), ly.params_after);
  EXPECT_TRUE(ly.to_json(opt)["layers"][0]["removed"].get<bool>());
  opt.ratio = 0.3;                                             // one layer is 27% of this model
  EXPECT_EQ(pruning::decide(c, stats, opt).removed.size(), 1u);
}

TEST(Decision, RoundToKeepsMultiplesAndTheLowestStillGo) {
  auto c = gqa_llama();
  c.d_ff.assign(3, 40);
  c.hidden = 48;
  model::Decoder m = model::Decoder::with_random_weights(c, 5);
  const auto stats = pruning::collect_statistics(m, at::randint(c.vocab_size, {2, 6}, at::kLong), {false, false});
  pruning::PruneOptions opt;
  opt.criterion = pruning::Criterion::l2;
  opt.keep_layers = {0};
  opt.attention = "none";
  const auto neurons = pruning::enumerate_groups(c, GroupKind::neuron);
  const auto s = pruning::score_groups(neurons, stats, opt.criterion, opt.aggregate, 0);
  for (const char* scope : {"per_layer", "global"}) {
    opt.scope = scope;
    opt.round_to = 1;
    opt.ratio = 0.1;
    const auto free = pruning::decide(c, stats, opt);
    opt.round_to = 8;
    const auto d = pruning::decide(c, stats, opt);
    EXPECT_EQ(d.after.d_ff[0], 40) << scope;                 // the dense layer stays as it is
    EXPECT_NE(d.after.d_ff, free.after.d_ff) << scope;       // (the budget alone gives no multiples here)
    for (int64_t l = 1; l < 3; ++l) {
      EXPECT_EQ(d.after.d_ff[l] % 8, 0) << scope << " layer " << l;
      EXPECT_LE(std::abs(d.after.d_ff[l] - free.after.d_ff[l]), 4) << scope << ": the nearest multiple";
      std::set<int64_t> gone;                                 // still the lowest-scored of the layer
      for (const auto& g : d.removed) {
        if (g.layer == l) gone.insert(g.index);
      }
      double best_removed = -1e300, worst_kept = 1e300;
      for (size_t i = 0; i < neurons.size(); ++i) {
        if (neurons[i].layer != l) continue;
        double& bound = gone.count(neurons[i].index) ? best_removed : worst_kept;
        bound = gone.count(neurons[i].index) ? std::max(bound, s[i]) : std::min(bound, s[i]);
      }
      EXPECT_LE(best_removed, worst_kept) << scope;
    }
  }
  opt.scope = "channel";                                      // the hidden size under channel
  opt.keep_layers = {};
  opt.ratio = 0.25;
  EXPECT_EQ(pruning::decide(c, stats, opt).after.hidden % 8, 0);
  opt.round_to = 0;
  EXPECT_THROW(pruning::decide(c, stats, opt), Error);
}

TEST(Decision, BadOptionsAreRefusedNamingTheKey) {
  const auto c = gqa_llama();
  const pruning::Statistics none;
  const auto err = [&](const std::function<void(pruning::PruneOptions&)>& edit) {
    pruning::PruneOptions o;
    o.criterion = pruning::Criterion::random;
    edit(o);
    try {
      pruning::decide(c, none, o);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("<no error>");
  };
  EXPECT_THAT(err([](auto& o) { o.ratio = 1.0; }), ::testing::HasSubstr("'prune.ratio' = 1 must be in [0, 1)"));
  EXPECT_THAT(err([](auto& o) { o.ratio = -0.1; }), ::testing::HasSubstr("'prune.ratio'"));
  EXPECT_THAT(err([](auto& o) { o.scope = "layerwise"; }), ::testing::HasSubstr("'prune.scope'"));
  EXPECT_THAT(err([](auto& o) { o.keep_layers = {7}; }), ::testing::HasSubstr("'prune.keep_layers' has layer 7"));
  EXPECT_THAT(err([](auto& o) { o.ratio = 0.95; }), ::testing::HasSubstr("would empty a layer"));
  EXPECT_THAT(err([](auto& o) {
                o.scope = "uniform";
                o.keep_layers = {0};
              }),
              ::testing::HasSubstr("must be empty with scope uniform"));
  EXPECT_THAT(err([](auto& o) {
                o.scope = "channel";
                o.keep_layers = {0};
              }),
              ::testing::HasSubstr("must be empty with scope channel"));
  EXPECT_THAT(err([](auto& o) {
                o.scope = "layer";
                o.ratio = 0.01;
              }),
              ::testing::HasSubstr("nothing would be removed"));
  EXPECT_THROW(pruning::parse_criterion("taylor"), Error);
}
