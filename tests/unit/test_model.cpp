// Decoder: shapes, the KV cache, per-layer widths, the perplexity protocol.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <cmath>

#include "runtime/core/check.h"
#include "runtime/eval/generate.h"
#include "runtime/eval/perplexity.h"
#include "runtime/eval/speed.h"
#include "runtime/model/decoder.h"

using namespace secateur;
using model::Family;
using model::ModelConfig;

namespace {

model::NamedTensors random_weights(const ModelConfig& c, uint64_t seed) {
  return model::Decoder::with_random_weights(c, seed).named_tensors();
}

ModelConfig uneven_llama() {
  auto c = ModelConfig::make(Family::llama, 97, 48, 4, 6, 3, 64);
  c.head_dim = 8;
  c.n_heads = {6, 4, 2, 0};       // pruned layers: fewer heads, one with none at all
  c.n_kv_heads = {3, 2, 1, 0};
  c.d_ff = {64, 40, 0, 24};       // and one with no MLP
  c.rope_theta = 10000.0;
  c.max_positions = 256;
  return c;
}

double max_rel(const at::Tensor& a, const at::Tensor& b) {
  return ((a - b).abs().max() / b.abs().max()).item<double>();
}

}  // namespace

TEST(Decoder, MissingOrMisshapenWeightIsNamed) {
  const auto c = uneven_llama();
  auto w = random_weights(c, 1);
  w.erase(w.begin() + 3);
  try {
    model::Decoder m(c, w);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("missing weight"));
  }
  auto w2 = random_weights(c, 1);
  w2[0].second = at::zeros({5, 5});
  EXPECT_THROW(model::Decoder(c, w2), Error);
}

TEST(Decoder, UnevenLayersRunAndParamsAreCounted) {
  const auto c = uneven_llama();
  const auto w = random_weights(c, 2);
  int64_t numel = 0;
  for (const auto& [n, t] : w) numel += t.numel();
  EXPECT_EQ(c.n_params(), numel);
  const model::Decoder m(c, w);
  at::NoGradGuard ng;
  const at::Tensor ids = at::randint(c.vocab_size, {2, 9}, at::kLong);
  const at::Tensor logits = m.logits(ids);
  EXPECT_EQ(logits.sizes().vec(), (std::vector<int64_t>{2, 9, c.vocab_size}));
  EXPECT_TRUE(logits.isfinite().all().item<bool>());
}

TEST(Decoder, CausalityLaterTokensDoNotChangeEarlierLogits) {
  for (Family f : {Family::llama, Family::gpt2}) {
    auto c = f == Family::llama ? uneven_llama() : ModelConfig::make(Family::gpt2, 80, 32, 2, 4, 4, 48);
    c.max_positions = 64;
    const model::Decoder m(c, random_weights(c, 3));
    at::NoGradGuard ng;
    at::Tensor ids = at::randint(c.vocab_size, {1, 12}, at::kLong);
    const at::Tensor a = m.logits(ids);
    ids.index_put_({0, 11}, (ids.index({0, 11}) + 1) % c.vocab_size);
    const at::Tensor b = m.logits(ids);
    EXPECT_TRUE(at::allclose(a.narrow(1, 0, 11), b.narrow(1, 0, 11), 1e-5, 1e-6)) << model::family_name(f);
    EXPECT_FALSE(at::allclose(a.narrow(1, 11, 1), b.narrow(1, 11, 1))) << model::family_name(f);
  }
}

TEST(Decoder, KvCacheStepsReproduceTheFullForward) {
  for (Family f : {Family::llama, Family::gpt2}) {
    auto c = f == Family::llama ? uneven_llama() : ModelConfig::make(Family::gpt2, 80, 32, 2, 4, 4, 48);
    c.max_positions = 64;
    const model::Decoder m(c, random_weights(c, 4));
    at::NoGradGuard ng;
    const at::Tensor ids = at::randint(c.vocab_size, {2, 10}, at::kLong);
    const at::Tensor full = m.logits(ids);
    model::KVCache cache;
    std::vector<at::Tensor> parts = {m.logits(ids.narrow(1, 0, 4), &cache), m.logits(ids.narrow(1, 4, 3), &cache)};
    for (int64_t t = 7; t < 10; ++t) parts.push_back(m.logits(ids.narrow(1, t, 1), &cache));
    EXPECT_EQ(cache.length, 10);
    EXPECT_LE(max_rel(at::cat(parts, 1), full), 1e-5) << model::family_name(f);
  }
}

// Activation checkpointing (a layer's forward again in the backward) gives every weight the
// gradient of one whole backward, in float64, each accumulated exactly once (a post-accumulate hook
// counts: the statistics hooks rely on it), the tied embedding's two parts (lookup, head) together.
TEST(Decoder, CheckpointedBackwardGivesEveryGradientOnce) {
  struct Count : torch::autograd::PostAccumulateGradHook {
    explicit Count(int* n) : n_(n) {}
    void operator()(const torch::autograd::Variable&) override { ++*n_; }
    int* n_;
  };
  ModelConfig untied = uneven_llama(), tied = uneven_llama();
  tied.tied_embeddings = true;
  ModelConfig gpt2 = ModelConfig::make(Family::gpt2, 91, 32, 2, 4, 4, 40);
  gpt2.max_positions = 32;
  for (const ModelConfig& c : {untied, tied, gpt2}) {
    model::Decoder m = model::Decoder::with_random_weights(c, 3);
    m.to(at::kCPU, at::kDouble);
    at::manual_seed(5);
    const at::Tensor ids = at::randint(c.vocab_size, {3, 9}, at::kLong);
    const std::vector<at::Tensor*> params = m.parameters();
    for (at::Tensor* p : params) p->set_requires_grad(true);
    const at::Tensor loss = m.loss_sum(ids);
    (loss * 0.5).backward();
    std::vector<at::Tensor> ref;
    for (at::Tensor* p : params) {
      ref.push_back(p->grad().defined() ? p->grad().clone() : at::Tensor());
      p->mutable_grad().reset();
    }
    std::vector<int> counts(params.size(), 0);
    for (size_t i = 0; i < params.size(); ++i) {
      torch::autograd::impl::set_post_acc_grad_hooks(*params[i], std::make_unique<Count>(&counts[i]));
    }
    EXPECT_NEAR(m.backward_checkpointed(ids, 0.5), loss.item<double>(), 1e-12 * loss.item<double>());
    for (size_t i = 0; i < params.size(); ++i) {
      if (!ref[i].defined()) {
        EXPECT_FALSE(params[i]->grad().defined());
        continue;
      }
      ASSERT_TRUE(params[i]->grad().defined()) << "parameter " << i << " (tied " << c.tied_embeddings << ")";
      const bool zero = ref[i].abs().max().item<double>() < 1e-9;   // a key bias: zero but for rounding
      EXPECT_LE(zero ? (params[i]->grad() - ref[i]).abs().max().item<double>() : max_rel(params[i]->grad(), ref[i]),
                1e-12) << "parameter " << i;
      EXPECT_EQ(counts[i], 1) << "parameter " << i << " (tied " << c.tied_embeddings << ")";
    }
  }
}

TEST(Decoder, BfloatForwardStaysCloseToFloat) {
  const auto c = uneven_llama();
  model::Decoder m(c, random_weights(c, 5));
  at::NoGradGuard ng;
  const at::Tensor ids = at::randint(c.vocab_size, {1, 16}, at::kLong);
  const at::Tensor ref = m.logits(ids);
  m.to(at::kCPU, at::kBFloat16);
  EXPECT_EQ(m.dtype(), at::kBFloat16);
  EXPECT_LE(max_rel(m.logits(ids).to(at::kFloat), ref), 5e-2);
}

TEST(Perplexity, ProtocolIsExpOfMeanNllOverFullWindows) {
  const auto c = uneven_llama();
  const model::Decoder m(c, random_weights(c, 6));
  std::vector<int32_t> ids(70);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>((i * 7 + 3) % c.vocab_size);
  const auto r = eval::perplexity(m, ids, 16, 3);      // 4 full windows; the 6-token tail is dropped
  EXPECT_EQ(r.windows, 4);
  EXPECT_EQ(r.predictions, 4 * 15);
  // The same number by hand: log-softmax of each window's logits at the next token.
  at::NoGradGuard ng;
  double nll = 0;
  for (int w = 0; w < 4; ++w) {
    std::vector<int64_t> win(ids.begin() + 16 * w, ids.begin() + 16 * (w + 1));
    const at::Tensor t = at::tensor(win, at::kLong).view({1, 16});
    const at::Tensor lp = at::log_softmax(m.logits(t)[0].to(at::kDouble), -1);
    for (int i = 0; i < 15; ++i) nll -= lp[i][win[i + 1]].item<double>();
  }
  EXPECT_NEAR(r.nll, nll, 1e-6 * nll);
  EXPECT_NEAR(r.ppl, std::exp(nll / 60), 1e-6 * r.ppl);
  EXPECT_THROW(eval::perplexity(m, std::vector<int32_t>(10, 1), 16, 1), Error);
}

TEST(Generate, GreedyMatchesArgmaxOfFullForwardAndSamplingIsSeeded) {
  const auto c = uneven_llama();
  const model::Decoder m(c, random_weights(c, 7));
  const std::vector<int32_t> prompt = {5, 17, 33, 2};
  eval::GenerateOptions opt;
  opt.max_new_tokens = 6;
  const auto g = eval::generate(m, prompt, opt);
  ASSERT_EQ(g.ids.size(), 6u);
  std::vector<int64_t> seq(prompt.begin(), prompt.end());
  at::NoGradGuard ng;
  for (int32_t id : g.ids) {             // recompute without the cache
    const at::Tensor lg = m.logits(at::tensor(seq, at::kLong).view({1, -1}));
    EXPECT_EQ(lg[0][-1].argmax().item<int64_t>(), id);
    seq.push_back(id);
  }
  opt.greedy = false;
  opt.seed = 11;
  EXPECT_EQ(eval::generate(m, prompt, opt).ids, eval::generate(m, prompt, opt).ids);
}

TEST(Speed, MacsPerTokenCountEveryMatrixOnceAndAttentionOverTheContext) {
  auto c = model::ModelConfig::make(model::Family::llama, 100, 16, 2, 4, 2, 24);
  c.head_dim = 4;
  c.d_ff = {24, 0};                                      // a layer whose MLP was pruned away
  // layer: q 16x16, k and v 16x8, o 16x16, MLP 3 x 16 x d_ff, attention 2 x 16 x context; head 16x100
  const double per_layer = 16 * 16 + 2 * 16 * 8 + 16 * 16 + 2 * 16 * 10;
  EXPECT_DOUBLE_EQ(eval::macs_per_token(c, 10), 2 * per_layer + 3 * 16 * 24 + 16 * 100);
  const model::Decoder m = model::Decoder::with_random_weights(c, 1);
  eval::SpeedOptions o;
  o.prompt_tokens = 8;
  o.decode_tokens = 4;
  o.iters = 1;
  const auto r = eval::measure_speed(m, o);
  EXPECT_GT(r.prefill_tokens_per_second, 0);
  EXPECT_GT(r.decode_tokens_per_second, 0);
  EXPECT_EQ(r.params, c.n_params());
}
