// Training-time pruning (pruning/movement.h, pruning/sparse.h, pruning/redundancy.h) and whole-layer
// decisions (pruning/depth.h), under mpirun -np 2: SECATEUR_TEST_TP=1 gives DP = 2,
// =2 gives TP = 2. Each comparison is local: the same computation on one rank (no comms, the whole
// model) is the reference, run by every rank itself.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <map>

#include "parallel/grid.h"
#include "pruning/apply.h"
#include "pruning/decision.h"
#include "pruning/depth.h"
#include "pruning/movement.h"
#include "pruning/redundancy.h"
#include "pruning/sparse.h"
#include "pruning/stats.h"
#include "runtime/core/check.h"
#include "runtime/model/decoder.h"
#include "runtime/train/lora.h"
#include "runtime/train/trainer.h"
#include "tests/mpi_test_main.h"
#include "tests/train_fixtures.h"

using namespace secateur;
using model::ModelConfig;

namespace {

parallel::Grid* g_grid = nullptr;

ModelConfig tiny_llama() { return tests::tiny_llama({30, 8, 14}); }

std::vector<int32_t> token_stream() { return tests::token_stream(2000); }

// The short training both training-time pruners run in these tests.
train::TrainOptions short_training(int64_t steps) {
  train::TrainOptions t;
  t.steps = steps;
  t.batch = 4;
  t.micro_batch = 1;
  t.seq_len = 16;
  t.lr = 3e-3;
  t.seed = 5;
  return t;
}

train::Grid3 grid3(bool on_grid) {
  return on_grid ? train::Grid3{&g_grid->dp(), &g_grid->tp(), &g_grid->world()} : train::Grid3{};
}

}  // namespace

TEST(TopV, GlobalKeepsExactlyTheScheduledCountWithDeterministicTies) {
  // Layer 0: 4 neurons, layer 1: 3 (all tied at the lowest score), layer 2: 5 with ties.
  const std::vector<at::Tensor> s = {at::tensor({0.5, 0.9, 0.5, 0.1}, at::kFloat), at::tensor({0.0, 0.0, 0.0}, at::kFloat),
                                     at::tensor({0.5, 0.7, 0.5, 0.5, 0.2}, at::kFloat)};
  for (double v : {0.0, 0.25, 0.5, 0.58, 0.75, 1.0}) {
    const auto m = pruning::top_v_masks(s, v, /*global=*/true);
    int64_t kept = 0;
    for (const auto& x : m) kept += x.sum().item<int64_t>();
    EXPECT_EQ(kept, static_cast<int64_t>(std::floor(v * 12 + 1e-9))) << "v " << v;
  }
  // v = 0.5: 6 kept = 0.9, 0.7, then the four 0.5s, lowest (layer, index) first: (0,0), (0,2), (2,0), (2,2).
  const auto m = pruning::top_v_masks(s, 0.5, true);
  EXPECT_TRUE(at::equal(m[0], at::tensor({1.f, 1.f, 1.f, 0.f})));
  EXPECT_TRUE(at::equal(m[1], at::zeros({3})));                  // a whole layer goes
  EXPECT_TRUE(at::equal(m[2], at::tensor({1.f, 1.f, 1.f, 0.f, 0.f})));
  // Local: floor(v · d_ff) in every layer, the ties again by index.
  const auto local = pruning::top_v_masks(s, 0.5, false);
  EXPECT_TRUE(at::equal(local[0], at::tensor({1.f, 1.f, 0.f, 0.f})));
  EXPECT_TRUE(at::equal(local[1], at::tensor({1.f, 0.f, 0.f})));
  EXPECT_TRUE(at::equal(local[2], at::tensor({1.f, 1.f, 0.f, 0.f, 0.f})));
}

TEST(Schedule, CubicWithWarmupAndCooldown) {
  // T = 100, W = 10: v = 1 up to step 10, v_f from step 71 on, cubic between.
  EXPECT_DOUBLE_EQ(pruning::cubic_schedule(0, 100, 10, 1.0, 0.5), 1.0);
  EXPECT_DOUBLE_EQ(pruning::cubic_schedule(10, 100, 10, 1.0, 0.5), 1.0);
  EXPECT_NEAR(pruning::cubic_schedule(40, 100, 10, 1.0, 0.5), 0.5 + 0.5 * 0.125, 1e-12);   // c = 1/2
  EXPECT_DOUBLE_EQ(pruning::cubic_schedule(70, 100, 10, 1.0, 0.5), 0.5);
  EXPECT_DOUBLE_EQ(pruning::cubic_schedule(99, 100, 10, 1.0, 0.5), 0.5);
  double last = 1.0;
  for (int64_t t = 0; t < 100; ++t) {
    const double v = pruning::cubic_schedule(t, 100, 10, 1.0, 0.5);
    EXPECT_LE(v, last);
    last = v;
  }
}

// The straight-through gradient of a neuron's score is Σ G ⊙ W over its gate row, up row and down
// column, G the gradient of the masked weights: computed by hand on a whole model whose masked
// weights are leaves. On the grid each TP rank's gradient is its neurons' part, summed over TP.
TEST(Movement, StraightThroughScoreGradientIsSumOfGradTimesWeight) {
  const ModelConfig c = tiny_llama();
  model::Decoder grid_model = model::Decoder::with_random_weights(c, 3, &g_grid->tp());
  model::Decoder whole = model::Decoder::with_random_weights(c, 3);
  grid_model.to(at::kCPU, at::kDouble);
  whole.to(at::kCPU, at::kDouble);
  at::manual_seed(5);
  const at::Tensor ids = at::randint(c.vocab_size, {2, 10}, at::kLong);
  std::vector<at::Tensor> scores, hard;
  for (int64_t l = 0; l < c.n_layers(); ++l) {
    scores.push_back(at::randn({c.d_ff[l]}, at::kDouble).requires_grad_(true));
    hard.push_back((at::rand({c.d_ff[l]}) < 0.7).to(at::kDouble));
    grid_model.set_mlp_mask(l, hard[l] + (scores[l] - scores[l].detach()));
  }
  grid_model.loss_sum(ids).backward();
  // By hand: the masked weights as leaves of an unmasked model.
  model::NamedTensors masked;
  std::map<std::string, at::Tensor> original;
  for (auto [name, t] : whole.named_tensors()) {
    original[name] = t;
    for (int64_t l = 0; l < c.n_layers(); ++l) {
      const std::string p = model::layer_prefix(c, l) + "mlp.";
      if (name == p + "gate_proj.weight" || name == p + "up_proj.weight") t = t * hard[l].unsqueeze(1);
      if (name == p + "down_proj.weight") t = t * hard[l].unsqueeze(0);
    }
    masked.emplace_back(name, t.detach().clone().requires_grad_(true));
  }
  model::Decoder reference(c, masked);
  reference.loss_sum(ids).backward();
  std::map<std::string, at::Tensor> grad;
  for (const auto& [name, t] : masked) grad[name] = t.grad();
  for (int64_t l = 0; l < c.n_layers(); ++l) {
    const std::string p = model::layer_prefix(c, l) + "mlp.";
    const auto gw = [&](const std::string& n, int dim) { return (grad[p + n] * original[p + n]).sum(dim); };
    const at::Tensor want = gw("gate_proj.weight", 1) + gw("up_proj.weight", 1) + gw("down_proj.weight", 0);
    at::Tensor got = scores[l].grad().clone();
    if (g_grid->tp_size() > 1) g_grid->tp().all_reduce(got, parallel::ReduceOp::sum);
    EXPECT_LE((got - want).abs().max().item<double>(), 1e-9 * want.abs().max().item<double>()) << "layer " << l;
    EXPECT_GT(want.abs().max().item<double>(), 1e-6);
  }
}

TEST(Gum, RunningCosineEqualsDirectComputation) {
  at::manual_seed(8);
  const int64_t d_ff = 12;
  const double beta = 0.7;
  const model::Range rows{3, 9};
  pruning::CosineStats full(d_ff, rows), sampled(d_ff, rows, {1, 4, 5, 11});
  at::Tensor c_run, n_run;
  for (int step = 0; step < 3; ++step) {
    at::Tensor c_step = at::zeros({d_ff, d_ff}, at::kDouble), n_step = at::zeros({d_ff}, at::kDouble);
    for (int mb = 0; mb < 2; ++mb) {                               // micro-batches of one step add up
      const at::Tensor h = at::randn({7, d_ff}, at::kDouble).relu();
      full.add(h.narrow(1, rows.begin, rows.size()), h);
      sampled.add(h.narrow(1, rows.begin, rows.size()), h);
      c_step += h.t().matmul(h);
      n_step += h.square().sum(0);
    }
    full.commit(beta, nullptr);
    sampled.commit(beta, nullptr);
    c_run = step == 0 ? beta * c_step : (1 - beta) * c_run + beta * c_step;
    n_run = step == 0 ? beta * n_step : (1 - beta) * n_run + beta * n_step;
  }
  at::Tensor cos = c_run / (n_run.sqrt().unsqueeze(1) * n_run.sqrt().unsqueeze(0) + 1e-6);
  cos.fill_diagonal_(0);
  const at::Tensor want = cos.narrow(0, rows.begin, rows.size());
  EXPECT_LE((full.cosine() - want).abs().max().item<double>(), 1e-12);
  EXPECT_LE((full.abs_cos_sum() - want.abs().sum(1)).abs().max().item<double>(), 1e-12);
  const at::Tensor cols = at::tensor({1, 4, 5, 11}, at::kLong);
  EXPECT_LE((sampled.cosine() - want.index_select(1, cols)).abs().max().item<double>(), 1e-12);
  EXPECT_LE((sampled.abs_cos_sum() - want.index_select(1, cols).abs().sum(1) * 3.0).abs().max().item<double>(), 1e-12);
}

namespace {

struct GumRun {
  std::vector<double> losses;
  std::vector<at::Tensor> mult;
  std::vector<pruning::Group> removed;
  model::ModelConfig pruned;
};

// A short GUM run with distillation-free full fine-tuning; on the grid or on this rank alone.
GumRun gum_run(bool on_grid, pruning::GradualMethod method = pruning::GradualMethod::gum) {
  const ModelConfig c = tiny_llama();
  parallel::Comm* tp = on_grid ? &g_grid->tp() : nullptr;
  model::Decoder m = model::Decoder::with_random_weights(c, 3, tp);
  m.to(at::kCPU, at::kDouble);
  pruning::GradualOptions o;
  o.method = method;
  o.keep = 0.4;
  o.lambda = 0.5;
  o.lambda_u = 1.0;
  o.beta = 0.6;
  train::TrainOptions t = short_training(12);
  pruning::GradualPruner pruner(m, o, t.steps, on_grid ? &g_grid->dp() : nullptr);
  std::vector<train::Trainable> params = train::all_weights(m);
  const auto scores = pruner.scores();
  for (size_t l = 0; l < scores.size(); ++l) params.push_back({"s" + std::to_string(l), scores[l], false, true, 1e-2, false});
  t.hooks.before_step = [&](int64_t s) { pruner.before_step(s); };
  t.hooks.after_gradients = [&](int64_t s) { pruner.after_gradients(s); };
  t.hooks.before_eval = [&] { pruner.before_eval(); };
  GumRun r;
  r.losses = train::train(m, params, token_stream(), t, grid3(on_grid)).losses;
  r.mult = pruner.multipliers();
  r.removed = pruner.final_removal();
  r.pruned = pruning::apply(c, m.named_tensors(), r.removed, on_grid ? &m.plan() : nullptr).config;
  return r;
}

}  // namespace

// DP = 2 and TP = 2 against one rank: the loss curve, the redundancy multipliers from the cosine
// statistics (summed over DP, row blocks over TP) and the neurons removed.
TEST(Gum, StatisticsAndDecisionOnTheGridEqualOneRank) {
  const GumRun grid = gum_run(true), one = gum_run(false);
  ASSERT_EQ(grid.losses.size(), one.losses.size());
  for (size_t i = 0; i < one.losses.size(); ++i) EXPECT_NEAR(grid.losses[i] / one.losses[i], 1.0, 1e-10) << i;
  double worst = 0, biggest = 0;
  for (size_t l = 0; l < one.mult.size(); ++l) {
    worst = std::max(worst, (grid.mult[l] - one.mult[l]).abs().max().item<double>());
    biggest = std::max(biggest, one.mult[l].abs().max().item<double>());
  }
  EXPECT_GT(biggest, 0.0);
  EXPECT_LE(worst, 1e-5 * biggest);
  ASSERT_EQ(grid.removed.size(), one.removed.size());
  for (size_t i = 0; i < one.removed.size(); ++i) {
    EXPECT_EQ(grid.removed[i].layer, one.removed[i].layer);
    EXPECT_EQ(grid.removed[i].index, one.removed[i].index);
  }
  int64_t kept = 0;
  for (int64_t f : one.pruned.d_ff) kept += f;
  EXPECT_EQ(kept, static_cast<int64_t>(std::floor(0.4 * (30 + 8 + 14))));
  if (g_grid->rank() == 0) {
    std::printf("gum on dp %d x tp %d: multipliers worst abs diff %.2e (max %.3f), kept widths %ld/%ld/%ld\n",
                g_grid->dp_size(), g_grid->tp_size(), worst, biggest, static_cast<long>(one.pruned.d_ff[0]),
                static_cast<long>(one.pruned.d_ff[1]), static_cast<long>(one.pruned.d_ff[2]));
  }
}

// A layer that loses every neuron: the model pruned to MLP width 0 there computes what the masked
// model computed.
TEST(Gum, MlpOfWidthZeroRunsAndMatchesTheMask) {
  const ModelConfig c = tiny_llama();
  model::Decoder m = model::Decoder::with_random_weights(c, 3);
  m.to(at::kCPU, at::kDouble);
  at::NoGradGuard no_grad;
  std::vector<pruning::Group> remove;
  const pruning::GroupMaker make(c);
  for (int64_t i = 0; i < c.d_ff[1]; ++i) remove.push_back(make(pruning::GroupKind::neuron, 1, i));
  remove.push_back(make(pruning::GroupKind::neuron, 0, 3));
  at::Tensor m0 = at::ones({c.d_ff[0]}, at::kDouble), m1 = at::zeros({c.d_ff[1]}, at::kDouble);
  m0[3] = 0;
  m.set_mlp_mask(0, m0);
  m.set_mlp_mask(1, m1);
  const at::Tensor ids = at::randint(c.vocab_size, {2, 7}, at::kLong);
  const at::Tensor masked = m.logits(ids);
  m.clear_mlp_masks();
  const pruning::Pruned p = pruning::apply(c, m.named_tensors(), remove);
  ASSERT_EQ(p.config.d_ff[1], 0);
  const model::Decoder small(p.config, p.tensors);
  EXPECT_LE((small.logits(ids) - masked).abs().max().item<double>(), 1e-10);
}

// R² from the Gram matrix equals a least-squares regression on the activations themselves; a dead
// neuron gets 0.
TEST(Report, ReconstructabilityEqualsLeastSquares) {
  at::manual_seed(4);
  at::Tensor H = at::randn({300, 7}, at::kDouble);
  H.select(1, 5).copy_(0.5 * H.select(1, 0) + 0.2 * H.select(1, 1) + 0.05 * at::randn({300}, at::kDouble));
  H.select(1, 6).zero_();
  const at::Tensor r2 = pruning::reconstructability(H.t().matmul(H), 1e-10);
  for (int64_t i = 0; i < 6; ++i) {
    std::vector<int64_t> others;
    for (int64_t j = 0; j < 6; ++j) if (j != i) others.push_back(j);   // the dead neuron adds nothing
    const at::Tensor X = H.index_select(1, at::tensor(others, at::kLong)), y = H.select(1, i).unsqueeze(1);
    const at::Tensor beta = std::get<0>(at::linalg_lstsq(X, y));
    const double want = 1 - (y - X.matmul(beta)).square().sum().item<double>() / y.square().sum().item<double>();
    EXPECT_NEAR(r2[i].item<double>(), std::max(want, 0.0), 1e-6) << "neuron " << i;
  }
  EXPECT_GT(r2[5].item<double>(), 0.9);
  EXPECT_EQ(r2[6].item<double>(), 0.0);
}

// The report on the grid (batches split over DP, rows over TP) equals the report on one rank.
TEST(Report, GridEqualsOneRank) {
  const ModelConfig c = tiny_llama();
  model::Decoder grid_model = model::Decoder::with_random_weights(c, 3, &g_grid->tp());
  model::Decoder whole = model::Decoder::with_random_weights(c, 3);
  grid_model.to(at::kCPU, at::kDouble);
  whole.to(at::kCPU, at::kDouble);
  at::manual_seed(6);
  const at::Tensor samples = at::randint(c.vocab_size, {8, 12}, at::kLong);
  pruning::RedundancyOptions o;
  o.micro_batch = 2;
  const nlohmann::json a = pruning::redundancy_report(grid_model, samples, o, &g_grid->dp());
  const nlohmann::json b = pruning::redundancy_report(whole, samples, o, nullptr);
  EXPECT_GT(b["sensitivity_sum"].get<double>(), 0.0);
  for (size_t l = 0; l < b["layers"].size(); ++l) {
    for (const char* key : {"sensitivity_sum", "unique", "unique_0.9", "r2_above_0.9", "r2_above_0.99",
                            "similar_also_reconstructable"}) {
      const double x = a["layers"][l][key].get<double>(), y = b["layers"][l][key].get<double>();
      EXPECT_NEAR(x, y, 1e-9 * std::max(1.0, std::abs(y))) << "layer " << l << " " << key;
    }
  }
}

// The RPP step after the optimiser: each pruned matrix becomes sign(w)·max(|w| − η·γ/(|w| + ε), 0);
// embeddings, norms and the LM head are untouched.
TEST(Sparse, ProximalStepIsTheWeightedSoftThreshold) {
  const ModelConfig c = tiny_llama();
  model::Decoder m = model::Decoder::with_random_weights(c, 3, &g_grid->tp());
  m.to(at::kCPU, at::kDouble);
  pruning::SparseOptions o;
  o.gamma = 0.5;
  o.epsilon = 1e-3;
  o.prune_at = 1.0;
  pruning::SparsePruner p(m, o, 10);
  EXPECT_EQ(p.tensors().size(), 7u * 3u);
  std::map<std::string, at::Tensor> before;
  for (const auto& [n, t] : m.named_tensors()) before[n] = t.clone();
  p.after_update(0, 0.01);
  int64_t zeros = 0;
  for (const auto& [n, t] : m.named_tensors()) {
    const at::Tensor w = before[n];
    const bool pruned = n.find("_proj.weight") != std::string::npos;
    // Closed form, element by element: w − t above t, w + t below −t, 0 between.
    const at::Tensor thr = 0.01 * 0.5 / (w.abs() + 1e-3);
    const at::Tensor want = pruned ? at::where(w > thr, w - thr, at::where(w < -thr, w + thr, at::zeros_like(w))) : w;
    EXPECT_LE((t - want).abs().max().item<double>(), 1e-15) << n;   // 1/(|w|+ε)·η·γ vs η·γ/(|w|+ε): rounding
    if (pruned) zeros += (t == 0).sum().item<int64_t>();
  }
  EXPECT_GT(zeros, 0);
}

namespace {

struct SparseRun {
  std::map<std::string, at::Tensor> masks, weights;
  double sparsity = 0;
};

// The pruner's masks, weights (copies) and achieved sparsity.
SparseRun collected(const pruning::SparsePruner& p) {
  SparseRun r;
  for (size_t i = 0; i < p.tensors().size(); ++i) {
    r.masks[p.tensors()[i].first] = p.masks()[i];
    r.weights[p.tensors()[i].first] = p.tensors()[i].second->clone();
  }
  r.sparsity = p.sparsity(false)["sparsity"].get<double>();
  return r;
}

SparseRun sparse_run(bool on_grid, pruning::SparseMethod method, const std::string& scope, double threshold = -1) {
  const ModelConfig c = tiny_llama();
  model::Decoder m = model::Decoder::with_random_weights(c, 3, on_grid ? &g_grid->tp() : nullptr);
  m.to(at::kCPU, at::kDouble);
  pruning::SparseOptions o;
  o.method = method;
  o.scope = scope;
  o.threshold = threshold;
  o.sparsity = 0.6;
  o.gamma = 0.05;
  o.reweight_every = 2;
  o.rounds = 2;
  train::TrainOptions t = short_training(8);
  pruning::SparsePruner p(m, o, t.steps);
  t.hooks.after_gradients = [&](int64_t s) { p.after_gradients(s); };
  t.hooks.after_update = [&](int64_t s, double lr) { p.after_update(s, lr); };
  (void)train::train(m, train::all_weights(m), token_stream(), t, grid3(on_grid));
  return collected(p);
}

}  // namespace

// After the hard prune the masked weights stay exactly zero through the remaining training steps,
// the target sparsity is met, and DP = 2 / TP = 2 choose the same mask as one rank.
TEST(Sparse, MasksHoldThroughTrainingAndTheGridPrunesAlike) {
  const ModelConfig c = tiny_llama();
  const auto plan = model::ShardPlan::make(c, g_grid->tp().rank(), g_grid->tp().size());
  struct Case {
    pruning::SparseMethod method;
    std::string scope;
    double threshold;
  };
  const std::vector<Case> cases = {{pruning::SparseMethod::rpp, "global", -1}, {pruning::SparseMethod::imp, "global", -1},
                                   {pruning::SparseMethod::rpp, "per_layer", -1}, {pruning::SparseMethod::imp, "per_tensor", -1},
                                   {pruning::SparseMethod::rpp, "global", 0.0}};
  for (const Case& k : cases) {
    const std::string what = std::string(k.method == pruning::SparseMethod::rpp ? "rpp " : "imp ") + k.scope +
                             (k.threshold >= 0 ? " threshold" : "");
    const SparseRun grid = sparse_run(true, k.method, k.scope, k.threshold);
    const SparseRun one = sparse_run(false, k.method, k.scope, k.threshold);
    int64_t zeros = 0, total = 0, differ = 0;
    for (const auto& [n, mask] : grid.masks) {
      EXPECT_TRUE(at::equal(grid.weights.at(n) * (1 - mask), at::zeros_like(mask))) << n << ": a masked weight moved";
      const auto cut = plan.slice_of(n, c);
      const at::Tensor ref = cut.dim < 0 ? one.masks.at(n) : one.masks.at(n).narrow(cut.dim, cut.range.begin, cut.range.size());
      differ += (mask != ref).sum().item<int64_t>();
      zeros += (one.masks.at(n) == 0).sum().item<int64_t>();
      total += one.masks.at(n).numel();
    }
    EXPECT_EQ(differ, 0) << what;
    EXPECT_NEAR(grid.sparsity, one.sparsity, 1e-12) << what;
    if (k.threshold >= 0) {                                     // exactly the zeros the proximal steps made
      EXPECT_GT(one.sparsity, 0.0) << what;
      EXPECT_LT(one.sparsity, 0.6) << what;
      continue;
    }
    if (k.scope == "global") EXPECT_EQ(zeros, static_cast<int64_t>(std::floor(0.6 * static_cast<double>(total)))) << what;
    EXPECT_GE(one.sparsity, 0.6 - 1e-3) << what;
  }
}

namespace {

// Wanda on the grid (or on one rank): the masks and the weights before pruning, whole per tensor on one rank.
SparseRun wanda_run(bool on_grid, const std::string& pattern, std::map<std::string, at::Tensor>* dense = nullptr,
                    pruning::Statistics* stats_out = nullptr) {
  const ModelConfig c = tiny_llama();
  model::Decoder m = model::Decoder::with_random_weights(c, 3, on_grid ? &g_grid->tp() : nullptr);
  m.to(at::kCPU, at::kDouble);
  pruning::SparseOptions o;
  o.method = pruning::SparseMethod::wanda;
  o.pattern = pattern;
  o.sparsity = pattern == "2:4" ? 0.5 : 0.6;
  if (pattern == "2:4") o.targets = {"q", "k", "v", "o", "gate", "up"};   // d_ff 30, 8, 14: not all multiples of 4
  at::manual_seed(8);
  const at::Tensor samples = at::randint(c.vocab_size, {4, 9}, at::kLong);
  pruning::CalibrationOptions calib;
  calib.first_order = false;
  calib.activations = true;
  const pruning::Statistics stats = pruning::collect_statistics(m, samples, calib, on_grid ? &g_grid->dp() : nullptr);
  pruning::SparsePruner p(m, o, 1);
  if (dense) {
    for (const auto& [n, t] : p.tensors()) (*dense)[n] = t->clone();
  }
  if (stats_out) *stats_out = stats;
  p.prune_wanda(stats);
  return collected(p);
}

}  // namespace

// Wanda: in every output row the lowest |W_ij|·‖x_j‖ go, as many as the sparsity says (2:4: the two
// lowest of every four inputs), the masked weights are zero, and DP = 2 / TP = 2 choose one rank's mask.
TEST(Sparse, WandaRemovesTheLowestActivationWeightedWeightsOfEveryRowOnTheGridAsOnOneRank) {
  const ModelConfig c = tiny_llama();
  const auto plan = model::ShardPlan::make(c, g_grid->tp().rank(), g_grid->tp().size());
  for (const std::string pattern : {"unstructured", "2:4"}) {
    std::map<std::string, at::Tensor> dense;
    pruning::Statistics stats;
    const SparseRun one = wanda_run(false, pattern, &dense, &stats);
    const SparseRun grid = wanda_run(true, pattern);
    for (const auto& [n, mask] : one.masks) {
      const at::Tensor score = dense.at(n).abs() * stats.weights.at(n).act[1].sqrt();   // [out, in]
      const int64_t in = score.size(1);
      if (pattern == "2:4") {
        const at::Tensor m4 = mask.view({mask.size(0), in / 4, 4}), s4 = score.view({score.size(0), in / 4, 4});
        EXPECT_TRUE(at::equal(m4.sum(2), at::full({mask.size(0), in / 4}, 2.0, at::kDouble))) << n;
        const at::Tensor worst_kept = at::where(m4 > 0, s4, at::full_like(s4, 1e300)).amin(2);
        const at::Tensor best_gone = at::where(m4 > 0, at::full_like(s4, -1.0), s4).amax(2);
        EXPECT_TRUE((best_gone <= worst_kept).all().item<bool>()) << n;
      } else {
        EXPECT_TRUE(at::equal(mask.sum(1), at::full({mask.size(0)}, static_cast<double>(in - static_cast<int64_t>(0.6 * in)), at::kDouble))) << n;
        const at::Tensor worst_kept = at::where(mask > 0, score, at::full_like(score, 1e300)).amin(1);
        const at::Tensor best_gone = at::where(mask > 0, at::full_like(score, -1.0), score).amax(1);
        EXPECT_TRUE((best_gone <= worst_kept).all().item<bool>()) << n;
      }
      const auto cut = plan.slice_of(n, c);
      const at::Tensor ref = cut.dim < 0 ? mask : mask.narrow(cut.dim, cut.range.begin, cut.range.size());
      EXPECT_TRUE(at::equal(grid.masks.at(n), ref)) << pattern << " " << n;
    }
    EXPECT_NEAR(grid.sparsity, one.sparsity, 1e-12) << pattern;
    EXPECT_GE(one.sparsity, pattern == "2:4" ? 0.5 : 0.55) << pattern;
  }
}

// Whole layers (block influence, angular spans, SLEB's search) on the grid: the residual stream's
// distances summed over DP (the same on every TP rank), the NLL of every candidate summed over DP,
// and the decisions, equal to one rank's.
TEST(Depth, LayerDecisionsOnTheGridEqualOneRank) {
  auto c = ModelConfig::make(model::Family::llama, 103, 48, 6, 8, 4, 20);
  c.head_dim = 6;
  c.tied_embeddings = false;
  at::manual_seed(12);
  const at::Tensor samples = at::randint(c.vocab_size, {11, 9}, at::kLong);
  const double layer = static_cast<double>(c.n_params() - model::without(c, {{pruning::GroupKind::layer, 0, 0}}).n_params());
  pruning::PruneOptions o;
  o.scope = "layer";
  o.ratio = 2.5 * layer / static_cast<double>(c.n_params());
  o.keep_layers = {0, -1};
  pruning::CalibrationOptions calib;
  calib.first_order = false;
  calib.residuals = true;
  const auto run = [&](bool on_grid) {
    model::Decoder m = model::Decoder::with_random_weights(c, 6, on_grid ? &g_grid->tp() : nullptr);
    m.to(at::kCPU, at::kDouble);
    parallel::Comm* dp = on_grid ? &g_grid->dp() : nullptr;
    pruning::Statistics s = pruning::collect_statistics(m, samples, calib, dp);
    pruning::PruneOptions sleb = o;
    sleb.criterion = pruning::Criterion::sleb;
    const pruning::Statistics searched = pruning::sleb_search(m, samples, sleb, dp);
    s.sleb_order = searched.sleb_order;
    s.sleb_nll = searched.sleb_nll;
    s.sleb_ratio = searched.sleb_ratio;
    return s;
  };
  const pruning::Statistics one = run(false), grid = run(true);
  for (auto m : {&pruning::Statistics::residual_cosine, &pruning::Statistics::residual_angle}) {
    const at::Tensor a = one.*m, b = grid.*m;
    EXPECT_LE((a - b).abs().max().item<double>(), 1e-9 * a.abs().max().item<double>());
  }
  EXPECT_EQ(grid.sleb_order, one.sleb_order);
  ASSERT_EQ(one.sleb_order.size(), 2u);
  for (size_t i = 0; i < one.sleb_nll.size(); ++i) EXPECT_NEAR(grid.sleb_nll[i], one.sleb_nll[i], 1e-9 * one.sleb_nll[i]);
  for (pruning::Criterion k : {pruning::Criterion::block_influence, pruning::Criterion::angular, pruning::Criterion::sleb}) {
    o.criterion = k;
    const pruning::Decision a = pruning::decide(c, one, o), b = pruning::decide(c, grid, o);
    EXPECT_EQ(a.hash, b.hash) << pruning::criterion_name(k);
    EXPECT_EQ(a.removed.size(), 2u) << pruning::criterion_name(k);
  }
  if (g_grid->rank() == 0) {
    std::printf("depth on dp %d x tp %d: SLEB removed layers %ld, %ld\n", g_grid->dp_size(), g_grid->tp_size(),
                static_cast<long>(one.sleb_order[0]), static_cast<long>(one.sleb_order[1]));
  }
}

TEST(Sparse, BadOptionsAreRefused) {
  pruning::SparseOptions o;
  o.gamma = -1;
  EXPECT_THROW(o.validate(), Error);
  o = {};
  o.epsilon = 0;
  EXPECT_THROW(o.validate(), Error);
  o = {};
  o.sparsity = 1.0;
  EXPECT_THROW(o.validate(), Error);
  o = {};
  o.sparsity = -0.1;
  EXPECT_THROW(o.validate(), Error);
  o = {};
  o.pattern = "2:4";                    // needs wanda
  EXPECT_THROW(o.validate(), Error);
  o.method = pruning::SparseMethod::wanda;
  o.sparsity = 0.6;                     // 2:4 is 50%
  EXPECT_THROW(o.validate(), Error);
  o.sparsity = 0.5;
  EXPECT_NO_THROW(o.validate());
}

int main(int argc, char** argv) {
  const char* tp_env = std::getenv("SECATEUR_TEST_TP");
  return tests::run_on_grid(argc, argv, tp_env ? std::atoi(tp_env) : 1, g_grid);
}
