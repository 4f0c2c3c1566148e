// Tensor- and data-parallel parity, run under mpirun with 2 and 4 ranks:
//   TP=N vs TP=1: logits and summed NLL of SmolLM2 (3 kv-groups: uneven at TP=2, an empty
//   attention shard at TP=4), tiny GPT-2 logits, and the gradients of every shard of a tiny
//   LLaMA against the matching slice of the unsharded model's gradients;
//   DP=N vs DP=1: bucketed gradient all-reduce of per-rank batch shares equals the full batch.
// Every rank also computes the TP=1 reference itself, so each comparison is local.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include <cstdlib>

#include "parallel/data_parallel.h"
#include "parallel/grid.h"
#include "runtime/core/log.h"
#include "runtime/io/checkpoint.h"
#include "runtime/model/decoder.h"

using namespace secateur;
using model::Family;
using model::ModelConfig;

namespace {

parallel::Grid* g_grid = nullptr;

double max_rel(const at::Tensor& a, const at::Tensor& b) {
  return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item<double>();
}

model::NamedTensors shard_of(const model::NamedTensors& full, const ModelConfig& c, const model::ShardPlan& plan) {
  model::NamedTensors out;
  for (const auto& [name, t] : full) {
    const auto s = plan.slice_of(name, c);
    out.emplace_back(name, s.dim < 0 ? t.clone() : t.narrow(s.dim, s.range.begin, s.range.size()).clone());
  }
  return out;
}

ModelConfig tiny_llama() {
  auto c = ModelConfig::make(Family::llama, 103, 48, 3, 8, 4, 30);
  c.head_dim = 6;
  c.tied_embeddings = false;
  c.attention_bias = c.mlp_bias = true;
  c.n_heads = {8, 4, 2};          // uneven layers, as after pruning
  c.n_kv_heads = {4, 2, 1};
  c.d_ff = {30, 7, 0};
  return c;
}

}  // namespace

TEST(TensorParallel, SmolLM2LogitsAndNllMatchTp1) {
  const char* dir = std::getenv("SECATEUR_HF_MODEL");
  if (!dir) GTEST_SKIP() << "SECATEUR_HF_MODEL not set";
  parallel::Comm& tp = g_grid->tp();
  const model::Decoder sharded = io::load_decoder(dir, at::kCPU, at::kFloat, &tp);
  const model::Decoder full = io::load_decoder(dir, at::kCPU, at::kFloat);
  EXPECT_EQ(sharded.local_config().d_ff[0], model::split_range(1536, tp.rank(), tp.size()).size());
  at::manual_seed(3);
  const at::Tensor ids = at::randint(49152, {2, 48}, at::kLong);
  at::NoGradGuard ng;
  EXPECT_LE(max_rel(sharded.logits(ids), full.logits(ids)), 1e-5);
  const auto [a, n] = sharded.nll(ids);
  const auto [b, m] = full.nll(ids);
  EXPECT_EQ(n, m);
  EXPECT_NEAR(a, b, 1e-5 * b);
}

TEST(TensorParallel, TinyGpt2LogitsMatchTp1) {
  parallel::Comm& tp = g_grid->tp();
  auto c = ModelConfig::make(Family::gpt2, 91, 32, 2, 4, 4, 40);
  c.max_positions = 32;
  const model::Decoder full = model::Decoder::with_random_weights(c, 5);
  const auto plan = model::ShardPlan::make(c, tp.rank(), tp.size());
  const model::Decoder sharded(c, shard_of(full.named_tensors(), c, plan), &tp);
  at::NoGradGuard ng;
  const at::Tensor ids = at::randint(c.vocab_size, {2, 12}, at::kLong);
  EXPECT_LE(max_rel(sharded.logits(ids), full.logits(ids)), 1e-5);
}

void check_shard_gradients(const ModelConfig& c) {
  parallel::Comm& tp = g_grid->tp();
  model::Decoder full = model::Decoder::with_random_weights(c, 7);
  const auto plan = model::ShardPlan::make(c, tp.rank(), tp.size());
  model::Decoder sharded(c, shard_of(full.named_tensors(), c, plan), &tp);
  for (model::Decoder* m : {&full, &sharded}) {
    for (at::Tensor* p : m->parameters()) p->set_requires_grad(true);
  }
  at::manual_seed(11);
  const at::Tensor ids = at::randint(c.vocab_size, {2, 10}, at::kLong);
  const at::Tensor lf = full.loss_sum(ids), ls = sharded.loss_sum(ids);
  EXPECT_NEAR(ls.item<double>(), lf.item<double>(), 1e-5 * lf.item<double>());
  lf.backward();
  ls.backward();
  const auto full_named = full.named_tensors();
  std::map<std::string, at::Tensor> full_grad;
  for (const auto& [n, t] : full_named) full_grad[n] = t.grad();
  int compared = 0;
  for (const auto& [name, t] : sharded.named_tensors()) {
    if (t.numel() == 0) continue;
    if (!t.grad().defined()) {   // only weights nothing depends on (e.g. a norm before an empty MLP)
      EXPECT_FALSE(full_grad[name].defined()) << name;
      continue;
    }
    const auto s = plan.slice_of(name, c);
    const at::Tensor ref = s.dim < 0 ? full_grad[name] : full_grad[name].narrow(s.dim, s.range.begin, s.range.size());
    EXPECT_LE(max_rel(t.grad(), ref), 1e-4) << name << " on tp rank " << tp.rank();
    ++compared;
  }
  EXPECT_GT(compared, 20);
}

TEST(TensorParallel, ShardGradientsMatchSlicesOfFullGradients) {
  auto uniform = tiny_llama();
  uniform.n_heads.assign(3, 8);
  uniform.n_kv_heads.assign(3, 4);
  uniform.d_ff.assign(3, 30);
  check_shard_gradients(uniform);
}

TEST(TensorParallel, UnevenAndEmptyShardGradientsMatch) { check_shard_gradients(tiny_llama()); }

TEST(DataParallel, BucketedGradientAllReduceEqualsFullBatch) {
  parallel::Comm& world = g_grid->world();
  const auto c = tiny_llama();
  model::Decoder full = model::Decoder::with_random_weights(c, 9);
  model::Decoder mine = model::Decoder::with_random_weights(c, 9);
  for (model::Decoder* m : {&full, &mine}) {
    for (at::Tensor* p : m->parameters()) p->set_requires_grad(true);
  }
  at::manual_seed(13);
  const at::Tensor batch = at::randint(c.vocab_size, {5, 9}, at::kLong);   // 5 rows: uneven over 2 or 4 ranks
  full.loss_sum(batch).backward();
  const auto [b, e] = parallel::dp_share(batch.size(0), world);
  if (e > b) {
    mine.loss_sum(batch.narrow(0, b, e - b)).backward();
  } else {
    mine.loss_sum(batch.narrow(0, 0, 1)).mul(0).backward();              // no rows: zero gradients
  }
  parallel::all_reduce_gradients(mine.parameters(), world, parallel::ReduceOp::sum, /*bucket_bytes=*/4096);
  const auto ref = full.named_tensors();
  const auto got = mine.named_tensors();
  for (size_t i = 0; i < ref.size(); ++i) {
    if (!ref[i].second.grad().defined()) {
      EXPECT_FALSE(got[i].second.grad().defined()) << ref[i].first;
      continue;
    }
    EXPECT_LE(max_rel(got[i].second.grad(), ref[i].second.grad()), 1e-5) << ref[i].first;
  }
}

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  const int world = log::rank_from_env().second;
  auto grid = parallel::Grid::init(&argc, &argv, /*tp=*/world);   // TP over the whole world
  g_grid = grid.get();
  if (grid->rank() != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  int failed = RUN_ALL_TESTS() != 0;
  failed = static_cast<int>(grid->world().all_reduce_int(failed, parallel::ReduceOp::max));
  grid->finalize();
  return failed;
}
