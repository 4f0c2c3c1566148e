// Groups and their physical removal: removing a group must equal zeroing every one of its
// coupled slices in the dense model (logits <= 1e-5); hidden channels change the norms'
// statistics, and the exact relation is tested instead (see HiddenChannels below).
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <nlohmann/json.hpp>

#include "pruning/apply.h"
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
