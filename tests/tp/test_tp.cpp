// Tensor- and data-parallel parity under mpirun (CPU, MPI backend). The grid's TP size comes
// from SECATEUR_TEST_TP (default: the whole world), so one binary covers TP=2, TP=4 (SmolLM2's
// 3 kv-groups leave one rank without attention) and TP=2 x DP=2.
// The reference is always the unsharded model on the whole batch, computed by every rank
// itself, so each comparison is local. Errors are max|a - b| / max|ref|. Tolerances: fp32
// logits and loss 1e-5; fp32 gradients 1e-5 on the small random models and 1e-4 through
// SmolLM2's 30 layers (measured worst ~5e-5: summation order differs once the sums are split
// over ranks); float64 gradients 1e-10 on the random models, which shows the split is exact.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <map>

#include "parallel/data_parallel.h"
#include "parallel/tensor_parallel/mappings.h"
#include "parallel/tensor_parallel/vocab_parallel.h"
#include "parallel/grid.h"
#include "tests/mpi_test_main.h"
#include "runtime/core/log.h"
#include "runtime/io/checkpoint.h"
#include "runtime/model/decoder.h"

using namespace secateur;
using model::Family;
using model::ModelConfig;

namespace {

parallel::Grid* g_grid = nullptr;
constexpr double kTol = 1e-5;       // fp32 logits, loss; fp32 gradients of the small models
constexpr double kTolDeep = 1e-4;   // fp32 gradients through SmolLM2's 30 layers
constexpr double kTolExact = 1e-10; // float64 gradients

double max_rel(const at::Tensor& a, const at::Tensor& b) {
  return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item<double>();
}

model::NamedTensors shard_of(const model::NamedTensors& full, const ModelConfig& c, const model::ShardPlan& plan) {
  model::NamedTensors out;
  for (const auto& [name, t] : full) {
    const auto s = plan.slice_of(name, c);
    out.emplace_back(name, s.dim < 0 ? t.detach().clone() : t.detach().narrow(s.dim, s.range.begin, s.range.size()).clone());
  }
  return out;
}

ModelConfig tiny_llama(bool uneven) {
  auto c = ModelConfig::make(Family::llama, 103, 48, 3, 8, 4, 30);
  c.head_dim = 6;
  c.tied_embeddings = false;
  c.attention_bias = c.mlp_bias = true;
  if (uneven) {                   // as after pruning: layers differ, one has no MLP at all
    c.n_heads = {8, 4, 2};
    c.n_kv_heads = {4, 2, 1};
    c.d_ff = {30, 7, 0};
  }
  return c;
}

ModelConfig tiny_qwen2() {         // q/k/v biases and no o bias, from its spec; GQA 2:1
  auto c = ModelConfig::make(Family::llama, 97, 40, 2, 4, 2, 24);
  c.arch = "qwen2";
  c.head_dim = 10;
  c.rope_theta = 1e6;
  return c;
}

ModelConfig tiny_gpt2() {
  auto c = ModelConfig::make(Family::gpt2, 91, 32, 2, 4, 4, 40);
  c.max_positions = 32;
  return c;
}

// TP x DP training step against the unsharded model on the whole batch: this rank's TP shard
// runs its DP share of the batch; gradients are all-reduced over DP; then loss and every
// gradient of the shard must equal the matching slice of the reference.
void check_step(model::Decoder& full, const model::NamedTensors& full_weights, const at::Tensor& batch,
                double grad_tol) {
  parallel::Comm& tp = g_grid->tp();
  parallel::Comm& dp = g_grid->dp();
  const ModelConfig& c = full.config();
  at::manual_seed(0);
  const auto plan = model::ShardPlan::make(c, tp.rank(), tp.size());
  model::Decoder shard(c, shard_of(full_weights, c, plan), &tp);
  for (model::Decoder* m : {&full, &shard}) {
    for (at::Tensor* p : m->parameters()) p->set_requires_grad(true);
  }
  const at::Tensor ref_loss = full.loss_sum(batch);
  ref_loss.backward();
  const auto [b, e] = parallel::dp_share(batch.size(0), dp);
  ASSERT_GT(e, b) << "every DP rank needs a row";
  at::Tensor loss = shard.loss_sum(batch.narrow(0, b, e - b));
  loss.backward();
  parallel::all_reduce_gradients(shard.parameters(), dp, parallel::ReduceOp::sum, /*bucket_bytes=*/1 << 20);
  at::Tensor total = loss.detach().clone();
  dp.all_reduce(total, parallel::ReduceOp::sum);
  EXPECT_LE(std::abs(total.item<double>() - ref_loss.item<double>()) / ref_loss.item<double>(), std::min(kTol, grad_tol));

  std::map<std::string, at::Tensor> ref_grad;
  for (const auto& [n, t] : full.named_tensors()) ref_grad[n] = t.grad();
  int compared = 0;
  double worst = 0;
  for (const auto& [name, t] : shard.named_tensors()) {
    if (!ref_grad[name].defined()) {   // nothing depends on it (a norm before an MLP of width 0)
      EXPECT_FALSE(t.grad().defined()) << name;
      continue;
    }
    if (t.numel() == 0) continue;      // an empty shard
    ASSERT_TRUE(t.grad().defined()) << name;
    const auto s = plan.slice_of(name, c);
    const at::Tensor ref = s.dim < 0 ? ref_grad[name] : ref_grad[name].narrow(s.dim, s.range.begin, s.range.size());
    // Some gradients are zero in exact arithmetic (a key bias: softmax ignores a shift shared by all
    // keys), so their relative error is noise over noise; those are held to an absolute bound.
    const double scale = ref.abs().max().item<double>();
    const double err = scale > 1e-6 ? max_rel(t.grad(), ref) : (t.grad() - ref).abs().max().item<double>();
    worst = std::max(worst, err);
    EXPECT_LE(err, grad_tol) << name << " on rank " << g_grid->rank();
    ++compared;
  }
  EXPECT_GT(compared, 10);
  if (g_grid->rank() == 0) {
    std::printf("  %s: %d gradients compared on rank 0, worst relative error %.2e (tolerance %.0e)\n",
                c10::toString(batch.scalar_type()), compared, worst, grad_tol);
  }
}

}  // namespace

TEST(Parallel, SmolLM2LogitsLossAndEveryGradientMatchTheUnshardedModel) {
  const char* dir = std::getenv("SECATEUR_HF_MODEL");
  if (!dir) GTEST_SKIP() << "SECATEUR_HF_MODEL not set";
  parallel::Comm& tp = g_grid->tp();
  const model::Decoder sharded = io::load_decoder(dir, at::kCPU, at::kFloat, &tp);
  model::Decoder full = io::load_decoder(dir, at::kCPU, at::kFloat);
  EXPECT_EQ(sharded.local_config().d_ff[0], model::split_range(full.config().d_ff[0], tp.rank(), tp.size()).size());
  at::manual_seed(3);
  const at::Tensor batch = at::randint(full.config().vocab_size, {4, 24}, at::kLong);
  {
    at::NoGradGuard ng;
    EXPECT_LE(max_rel(sharded.logits(batch), full.logits(batch)), kTol);
  }
  check_step(full, full.named_tensors(), batch, kTolDeep);
}

// fp32 at 1e-5, then the same step in float64 at 1e-10.
void check_both_precisions(const ModelConfig& c, uint64_t seed, const at::Tensor& batch) {
  for (at::ScalarType dt : {at::kFloat, at::kDouble}) {
    model::Decoder full = model::Decoder::with_random_weights(c, seed);
    full.to(at::kCPU, dt);
    check_step(full, full.named_tensors(), batch, dt == at::kFloat ? kTol : kTolExact);
  }
}

TEST(Parallel, RandomLlamaUniformLayersMatch) {
  at::manual_seed(11);
  check_both_precisions(tiny_llama(false), 7, at::randint(103, {4, 10}, at::kLong));
}

TEST(Parallel, RandomLlamaUnevenAndEmptyShardsMatch) {
  at::manual_seed(12);
  check_both_precisions(tiny_llama(true), 8, at::randint(103, {5, 9}, at::kLong));   // 5 rows: uneven DP shares
}

TEST(Parallel, RandomQwen2LogitsAndGradientsMatch) {
  at::manual_seed(14);
  check_both_precisions(tiny_qwen2(), 9, at::randint(97, {4, 11}, at::kLong));
}

// The real Qwen2.5-Coder-0.5B read from its GGUF file, sharded: logits and loss equal the whole
// model's (its 24 layers' gradients are the SmolLM2 test's business; this one is about qwen2's
// sharded load: biases sliced with their heads, 2 kv-groups over the ranks, the untied head).
TEST(Parallel, Qwen2LogitsAndLossMatchTheUnshardedModel) {
  const char* path = std::getenv("SECATEUR_QWEN_GGUF");
  if (!path) GTEST_SKIP() << "SECATEUR_QWEN_GGUF not set";
  parallel::Comm& tp = g_grid->tp();
  const model::Decoder sharded = io::load_decoder(path, at::kCPU, at::kFloat, &tp);
  const model::Decoder full = io::load_decoder(path, at::kCPU, at::kFloat);
  ASSERT_EQ(full.config().arch, "qwen2");
  at::manual_seed(4);
  const at::Tensor batch = at::randint(full.config().vocab_size, {2, 16}, at::kLong);
  at::NoGradGuard ng;
  EXPECT_LE(max_rel(sharded.logits(batch), full.logits(batch)), kTol);
  const double a = sharded.loss_sum(batch).item<double>(), b = full.loss_sum(batch).item<double>();
  EXPECT_NEAR(a, b, 1e-5 * std::abs(b));
}

// The LM head's loss taken chunk by chunk with its gradients made in the forward (what a large
// vocabulary's calibration and training use) against autograd through the plain cross-entropy
// of the whole vocabulary's logits, in float64: each rank holds its vocabulary rows (11 over 2 or
// 4 ranks: uneven), chunks of 1, 3 and all rows, with and without per-token weights, and an
// upstream gradient of 2.
TEST(Parallel, ChunkedLinearCrossEntropyMatchesThePlainLossAndGradients) {
  parallel::Comm& tp = g_grid->tp();
  at::manual_seed(21);
  const int64_t n = 7, d = 5, vocab = 11;
  const auto f64 = at::TensorOptions().dtype(at::kDouble);
  const at::Tensor h0 = at::randn({n, d}, f64), w0 = at::randn({vocab, d}, f64), per = at::rand({n}, f64);
  const at::Tensor target = at::randint(vocab, {n}, at::kLong);
  const parallel::Range mine = parallel::split_range(vocab, tp.rank(), tp.size());
  for (const bool weighted : {false, true}) {
    for (const int64_t rows : {int64_t{1}, int64_t{3}, n}) {
      const at::Tensor h = h0.clone().requires_grad_(), w = w0.clone().requires_grad_();
      const at::Tensor ce = at::cross_entropy_loss(at::linear(h, w), target, {}, at::Reduction::None);
      const at::Tensor ref = (weighted ? ce * per : ce).sum();
      (2.0 * ref).backward();
      const at::Tensor hs = h0.clone().requires_grad_();
      const at::Tensor ws = w0.narrow(0, mine.begin, mine.size()).clone().requires_grad_();
      const at::Tensor loss = parallel::vocab_parallel_linear_cross_entropy(
          parallel::copy_to_tp(hs, tp), ws, target, weighted ? per : at::Tensor(), mine, tp, rows);
      (2.0 * loss).backward();
      EXPECT_NEAR(loss.item<double>(), ref.item<double>(), 1e-12 * ref.item<double>()) << rows << " rows";
      EXPECT_LE(max_rel(hs.grad(), h.grad()), kTolExact) << rows << " rows, weighted " << weighted;
      if (mine.size() > 0) {
        EXPECT_LE(max_rel(ws.grad(), w.grad().narrow(0, mine.begin, mine.size())), kTolExact) << rows << " rows";
      }
      at::NoGradGuard no_grad;   // without gradients: the loss alone
      const at::Tensor plain = parallel::vocab_parallel_linear_cross_entropy(
          hs, ws, target, weighted ? per : at::Tensor(), mine, tp, rows);
      EXPECT_NEAR(plain.item<double>(), ref.item<double>(), 1e-12 * ref.item<double>());
    }
  }
}

TEST(Parallel, RandomGpt2LogitsAndGradientsMatch) {
  model::Decoder full = model::Decoder::with_random_weights(tiny_gpt2(), 5);
  parallel::Comm& tp = g_grid->tp();
  const auto c = full.config();
  const model::Decoder sharded(c, shard_of(full.named_tensors(), c, model::ShardPlan::make(c, tp.rank(), tp.size())), &tp);
  at::manual_seed(13);
  const at::Tensor batch = at::randint(c.vocab_size, {4, 12}, at::kLong);
  {
    at::NoGradGuard ng;
    EXPECT_LE(max_rel(sharded.logits(batch), full.logits(batch)), kTol);
  }
  check_both_precisions(c, 5, batch);
}

int main(int argc, char** argv) {
  const char* tp_env = std::getenv("SECATEUR_TEST_TP");
  return tests::run_on_grid(argc, argv, tp_env ? std::atoi(tp_env) : log::rank_from_env().second, g_grid);
}
