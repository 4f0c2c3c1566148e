// Recovery training on the grid, under mpirun -np 2: SECATEUR_TEST_TP=1 gives DP = 2, =2 gives
// TP = 2. The reference is the same training on one rank (no comms, the unsharded model), run by
// every rank itself, so each comparison is local: the loss of every step, and after training
// each rank's weights against the same slice of the reference's. float64 shows the split is
// exact (1e-10); float32 is held to 1e-5 relative on the loss curve (the issue's bound).
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>

#include "parallel/grid.h"
#include "tests/mpi_test_main.h"
#include "tests/train_fixtures.h"
#include "runtime/core/log.h"
#include "runtime/core/check.h"
#include "runtime/model/decoder.h"
#include "runtime/model/memory.h"
#include "runtime/text/tokenizer.h"
#include "runtime/train/data.h"
#include "runtime/train/lora.h"
#include "runtime/train/trainer.h"

using namespace secateur;
using model::ModelConfig;

namespace {

parallel::Grid* g_grid = nullptr;

// Uneven heads, as after pruning.
ModelConfig tiny_llama() {
  auto c = tests::tiny_llama();
  c.n_heads = {8, 4, 8};
  c.n_kv_heads = {4, 2, 4};
  return c;
}

using tests::token_stream;

train::TrainOptions options() {
  train::TrainOptions o;
  o.steps = 20;
  o.batch = 4;
  o.micro_batch = 1;
  o.seq_len = 16;
  o.lr = 3e-3;
  o.weight_decay = 0.01;
  o.warmup_steps = 3;
  o.seed = 5;
  return o;
}

// The stream with a seeded target mask (~60% of tokens), as instruction data has.
train::TrainData masked_stream() {
  train::TrainData d(token_stream());
  at::manual_seed(23);
  const at::Tensor keep = at::rand({static_cast<int64_t>(d.tokens.size())}) < 0.6;
  for (int64_t i = 0; i < keep.numel(); ++i) d.predict.push_back(keep[i].item<bool>() ? 1 : 0);
  return d;
}

struct Run {
  std::vector<double> losses;
  std::vector<std::pair<int64_t, double>> heldout;
  std::map<std::string, at::Tensor> weights;
};

// Trains a fresh copy of the model: sharded on the grid, or whole on this rank alone. masked:
// targets masked, a held-out tenth evaluated every 10 steps, and hidden-state distillation.
Run run(bool on_grid, bool lora, at::ScalarType dtype, bool distill, bool masked = false) {
  const ModelConfig c = tiny_llama();
  parallel::Comm* tp = on_grid ? &g_grid->tp() : nullptr;
  model::Decoder m = model::Decoder::with_random_weights(c, 3, tp);
  m.to(at::kCPU, dtype);
  train::LoraOptions lo;
  lo.rank = 4;
  lo.dropout = 0.1;
  lo.seed = 9;
  const auto params = lora ? train::add_lora(m, lo) : train::all_weights(m);
  train::Grid3 g;
  if (on_grid) g = {&g_grid->dp(), &g_grid->tp(), &g_grid->world()};
  model::Decoder teacher = model::Decoder::with_random_weights(c, 4, tp);   // another model, same vocabulary
  teacher.to(at::kCPU, dtype);
  train::TrainOptions o = options();
  if (distill) o.teacher = &teacher;
  const auto [data, heldout] = train::split_heldout(masked ? masked_stream() : token_stream(), o.seq_len, masked ? 0.1 : 0);
  if (masked) {
    o.heldout = &heldout;
    o.eval_every = 10;
    o.kd_hidden = 0.5;
  }
  Run r;
  const train::TrainResult tr = train::train(m, params, data, o, g);
  r.losses = tr.losses;
  r.heldout = tr.heldout;
  if (lora) train::merge_lora(m);
  for (const auto& [n, t] : m.named_tensors()) r.weights[n] = t;
  return r;
}

void expect_same(bool lora, at::ScalarType dtype, double tol, bool distill = false, bool masked = false) {
  const Run grid = run(true, lora, dtype, distill, masked), one = run(false, lora, dtype, distill, masked);
  ASSERT_EQ(grid.losses.size(), one.losses.size());
  double worst = 0;
  for (size_t i = 0; i < one.losses.size(); ++i) worst = std::max(worst, std::abs(grid.losses[i] / one.losses[i] - 1));
  ASSERT_EQ(grid.heldout.size(), masked ? 3u : 0u);               // before, after 10 steps, after 20
  ASSERT_EQ(grid.heldout.size(), one.heldout.size());
  for (size_t i = 0; i < one.heldout.size(); ++i) {
    EXPECT_EQ(grid.heldout[i].first, one.heldout[i].first);
    worst = std::max(worst, std::abs(grid.heldout[i].second / one.heldout[i].second - 1));
  }
  if (masked) {
    EXPECT_LT(one.heldout.back().second, one.heldout.front().second);   // it generalises
  }
  EXPECT_LE(worst, tol) << "loss curve";
  EXPECT_LT(one.losses.back(), one.losses.front());               // it learns
  const auto plan = model::ShardPlan::make(tiny_llama(), g_grid->tp().rank(), g_grid->tp().size());
  double worst_w = 0;
  for (const auto& [n, w] : grid.weights) {
    const auto cut = plan.slice_of(n, tiny_llama());
    const at::Tensor ref = cut.dim < 0 ? one.weights.at(n) : one.weights.at(n).narrow(cut.dim, cut.range.begin, cut.range.size());
    if (ref.numel() == 0) continue;
    worst_w = std::max(worst_w, ((w - ref).abs().max() / ref.abs().max()).item<double>());
  }
  EXPECT_LE(worst_w, dtype == at::kDouble ? tol : 1e-3) << "weights after training";
  if (g_grid->rank() == 0) {
    std::printf("%s%s%s %s on dp %d x tp %d: loss curve worst rel %.2e, weights worst rel %.2e\n",
                lora ? "LoRA" : "full", distill ? " + KD" : "", masked ? " (masked targets, held-out, hidden MSE)" : "",
                dtype == at::kDouble ? "float64" : "float32", g_grid->dp_size(), g_grid->tp_size(), worst, worst_w);
  }
}

}  // namespace

TEST(Lora, FreshAdaptersChangeNothingAndMergingEqualsTheAdapters) {
  const ModelConfig c = tiny_llama();
  model::Decoder m = model::Decoder::with_random_weights(c, 3, &g_grid->tp());
  at::NoGradGuard no_grad;
  const at::Tensor ids = at::randint(c.vocab_size, {2, 9}, at::kLong);
  const at::Tensor dense = m.logits(ids);
  train::LoraOptions lo;
  lo.rank = 3;
  const auto params = train::add_lora(m, lo);
  EXPECT_EQ(params.size(), 2u * 7u * 3u);
  EXPECT_TRUE(at::equal(m.logits(ids), dense));                  // B = 0
  for (const auto& p : params) p.tensor->normal_(0, 0.1);        // some trained adapters
  const at::Tensor adapted = m.logits(ids);
  EXPECT_GT((adapted - dense).abs().max().item<double>(), 1e-3);
  train::merge_lora(m);
  EXPECT_LE(((m.logits(ids) - adapted).abs().max() / adapted.abs().max()).item<double>(), 1e-5);
  int64_t whole = 0;                                             // A [r, in] + B [out, r] per projection
  for (int64_t l = 0; l < c.n_layers(); ++l) {
    const int64_t q = c.n_heads[l] * c.head_dim, kv = c.n_kv_heads[l] * c.head_dim, d = c.hidden, f = c.d_ff[l];
    whole += 3 * ((d + q) + 2 * (d + kv) + (q + d) + 2 * (d + f) + (f + d));
  }
  EXPECT_EQ(train::lora_parameter_count(c, lo), whole);
}

// The memory model (runtime/model/memory.h) counts what this rank holds: its weight shards, its
// adapters (with their gradients and AdamW moments, four copies) and, in full fine-tuning, the
// weights' two moments and their gradients.
TEST(MemoryModel, CountsThisRanksWeightsAdaptersAndOptimiserState) {
  const ModelConfig c = tiny_llama();
  model::Decoder m = model::Decoder::with_random_weights(c, 3, &g_grid->tp());
  double weights = 0, adapters = 0;
  for (const at::Tensor* p : m.parameters()) weights += static_cast<double>(p->nbytes());
  train::LoraOptions lo;
  lo.rank = 3;
  for (const auto& p : train::add_lora(m, lo)) adapters += static_cast<double>(p.tensor->nbytes());
  model::RecoveryInputs in;
  in.tp = g_grid->tp_size();
  in.dtype_bytes = 4;
  in.lora_rank = 3;
  const model::RecoveryEstimate lora = model::estimate_recovery_memory(c, in).at(g_grid->tp_rank());
  EXPECT_DOUBLE_EQ(lora.weights, weights);
  EXPECT_DOUBLE_EQ(lora.state, 4 * adapters);
  in.full = true;
  const model::RecoveryEstimate full = model::estimate_recovery_memory(c, in).at(g_grid->tp_rank());
  EXPECT_DOUBLE_EQ(full.state, 2 * weights);
  EXPECT_DOUBLE_EQ(full.gradients, weights);
  model::MemoryInputs prune;
  prune.tp = g_grid->tp_size();
  prune.dtype_bytes = 4;
  EXPECT_DOUBLE_EQ(model::estimate_prune_memory(c, prune).at(g_grid->tp_rank()).weights, weights);
}

// A student and a teacher of one vocabulary, sharded on the grid's TP, in float64.
struct Pair {
  ModelConfig c = tiny_llama();
  model::Decoder s = model::Decoder::with_random_weights(c, 3, &g_grid->tp());
  model::Decoder t = model::Decoder::with_random_weights(c, 4, &g_grid->tp());
  Pair() {
    s.to(at::kCPU, at::kDouble);
    t.to(at::kCPU, at::kDouble);
  }
};

TEST(Distill, LossIsAlphaT2KlPlusCrossEntropy) {
  Pair pair;
  auto& [c, s, t] = pair;
  at::NoGradGuard no_grad;
  at::manual_seed(1);
  const at::Tensor ids = at::randint(c.vocab_size, {2, 9}, at::kLong);
  const model::Decoder::Distill kd{&t, 0.3, 2.0};
  // By hand on the gathered logits of positions 0..T-2.
  const at::Tensor zs = s.logits(ids).narrow(1, 0, 8).reshape({-1, c.vocab_size});
  const at::Tensor zt = t.logits(ids).narrow(1, 0, 8).reshape({-1, c.vocab_size});
  const at::Tensor log_ps = at::log_softmax(zs / 2.0, -1), log_pt = at::log_softmax(zt / 2.0, -1);
  const double kl = (log_pt.exp() * (log_pt - log_ps)).sum().item<double>();
  const double ce = at::cross_entropy_loss(zs, ids.narrow(1, 1, 8).reshape({-1}), {}, at::Reduction::Sum).item<double>();
  EXPECT_NEAR(s.loss_sum(ids, &kd).item<double>(), 0.3 * 4.0 * kl + 0.7 * ce, 1e-9 * ce);
  EXPECT_NEAR(s.loss_sum(ids).item<double>(), ce, 1e-9 * ce);
}

// Only the masked positions count: the sum equals the per-token loss picked by hand, for CE and
// for distillation with the hidden-state term (TP: vocabulary-parallel, the hidden term once).
TEST(Distill, TargetMaskAndHiddenStateTerm) {
  Pair pair;
  auto& [c, s, t] = pair;
  at::NoGradGuard no_grad;
  at::manual_seed(2);
  const at::Tensor ids = at::randint(c.vocab_size, {2, 9}, at::kLong);
  const at::Tensor predict = at::rand({2, 9}) < 0.5;
  const at::Tensor w = predict.narrow(1, 1, 8).reshape({-1}).to(at::kDouble);
  const at::Tensor zs = s.logits(ids).narrow(1, 0, 8).reshape({-1, c.vocab_size});
  const at::Tensor zt = t.logits(ids).narrow(1, 0, 8).reshape({-1, c.vocab_size});
  const at::Tensor ce = at::cross_entropy_loss(zs, ids.narrow(1, 1, 8).reshape({-1}), {}, at::Reduction::None);
  EXPECT_NEAR(s.loss_sum(ids, nullptr, predict).item<double>(), (ce * w).sum().item<double>(), 1e-9);
  const at::Tensor log_ps = at::log_softmax(zs / 2.0, -1), log_pt = at::log_softmax(zt / 2.0, -1);
  const at::Tensor kl = (log_pt.exp() * (log_pt - log_ps)).sum(-1);
  const at::Tensor mse = (s.hidden_states(ids) - t.hidden_states(ids)).narrow(1, 0, 8).square().mean(-1).reshape({-1});
  const model::Decoder::Distill kd{&t, 0.3, 2.0, 0.7};
  const double want = ((0.3 * 4.0 * kl + 0.7 * ce + 0.7 * mse) * w).sum().item<double>();
  EXPECT_NEAR(s.loss_sum(ids, &kd, predict).item<double>(), want, 1e-9 * want);
}

// A byte-level tokenizer (ids 0..255 = bytes) with EOS 256 and BOS 257 prepended.
text::Tokenizer byte_tokenizer() {
  text::TokenizerSpec spec;
  for (int b = 0; b < 256; ++b) spec.tokens.push_back(text::byte_to_unicode(static_cast<uint8_t>(b)));
  spec.tokens.push_back("<eos>");
  spec.tokens.push_back("<bos>");
  spec.token_types.assign(256, text::token_normal);
  spec.token_types.push_back(text::token_control);
  spec.token_types.push_back(text::token_control);
  spec.eos_id = 256;
  spec.bos_id = 257;
  spec.add_bos = true;
  return text::Tokenizer(spec);
}

TEST(Data, InstructionsArePackedWholeWithThePromptMaskedOut) {
  namespace fs = std::filesystem;
  const fs::path file = fs::temp_directory_path() / fmt::format("secateur-alpaca-{}-{}.jsonl", getpid(), g_grid->rank());
  const std::vector<std::pair<std::string, std::string>> examples = {
      {"Name a colour.", "Red."}, {"Add the numbers.", "Five."}, {"Say yes.", "Yes."}};
  {
    std::ofstream f(file);
    f << R"({"instruction": "Name a colour.", "output": "Red."})" << "\n\n";
    f << R"({"instruction": "Add the numbers.", "input": "2 and 3", "output": "Five."})" << "\n";
    f << R"({"instruction": "Say yes.", "input": "", "output": "Yes."})" << "\n";
  }
  const text::Tokenizer tok = byte_tokenizer();
  const int64_t seq_len = 300;   // the first two examples (~100 and ~200 bytes) do not fit together
  const train::TrainData d = train::instruction_data(file.string(), tok, seq_len);
  ASSERT_EQ(d.tokens.size(), d.predict.size());
  ASSERT_EQ(d.tokens.size() % seq_len, 0u);
  // Walk the sequences: every example starts at BOS, its prompt (BOS included) is no target, its
  // response and EOS are; what follows the last example of a sequence is EOS padding, no target.
  size_t i = 0, found = 0;
  std::vector<int64_t> starts;
  while (i < d.tokens.size()) {
    if (d.tokens[i] != 257) {                                    // padding to the end of the sequence
      EXPECT_EQ(d.tokens[i], 256);
      EXPECT_EQ(d.predict[i], 0);
      ++i;
      continue;
    }
    ASSERT_LT(found, examples.size());
    starts.push_back(static_cast<int64_t>(i));
    const std::string input = found == 1 ? "2 and 3" : "";
    const std::string prompt = train::alpaca_prompt(examples[found].first, input);
    const std::string response = examples[found].second;
    const std::string all = prompt + response;
    ASSERT_LE(i + 1 + all.size() + 1, d.tokens.size());
    for (size_t k = 0; k < 1 + prompt.size(); ++k) EXPECT_EQ(d.predict[i + k], 0) << "prompt token " << k;
    for (size_t k = 0; k < all.size(); ++k) EXPECT_EQ(d.tokens[i + 1 + k], static_cast<uint8_t>(all[k]));
    for (size_t k = 1 + prompt.size(); k < 1 + all.size() + 1; ++k) EXPECT_EQ(d.predict[i + k], 1) << "response " << k;
    EXPECT_EQ(d.tokens[i + 1 + all.size()], 256);
    EXPECT_EQ((i + all.size() + 1) / seq_len, i / seq_len) << "an example was split across sequences";
    i += 1 + all.size() + 1;
    ++found;
  }
  EXPECT_EQ(found, examples.size());
  EXPECT_EQ(starts[1] % seq_len, 0);                             // it did not fit behind the first
  EXPECT_EQ(d.targets(0, seq_len), static_cast<int64_t>(std::string("Red.").size()) + 1);
  // Held-out: the last sequence, whole.
  const auto [train_part, held] = train::split_heldout(d, seq_len, 0.1);
  EXPECT_EQ(held.tokens.size(), static_cast<size_t>(seq_len));
  EXPECT_EQ(train_part.tokens.size() + held.tokens.size(), d.tokens.size());
  EXPECT_TRUE(std::equal(held.predict.begin(), held.predict.end(), d.predict.end() - seq_len));
  // Bad lines are named by file and line.
  {
    std::ofstream f(file);
    f << R"({"instruction": "a", "output": "b"})" << "\n" << R"({"instruction": "a"})" << "\n";
  }
  const auto error_of = [&](int64_t len) -> std::string {
    try {
      (void)train::instruction_data(file.string(), tok, len);
    } catch (const Error& e) {
      return e.what();
    }
    return "(no error)";
  };
  EXPECT_NE(error_of(seq_len).find(file.string() + ":2: no 'output' string"), std::string::npos) << error_of(seq_len);
  { std::ofstream(file) << "{\"instruction\": \n"; }
  EXPECT_NE(error_of(seq_len).find(":1: not JSON"), std::string::npos) << error_of(seq_len);
  fs::remove(file);
  EXPECT_THROW((void)train::split_heldout(d, seq_len, 1.0), Error);
}

TEST(Schedule, WarmupThenCosineOrLinear) {
  train::TrainOptions o;
  o.lr = 1.0;
  o.steps = 12;
  o.warmup_steps = 2;
  EXPECT_DOUBLE_EQ(train::learning_rate(o, 0), 0.5);
  EXPECT_DOUBLE_EQ(train::learning_rate(o, 1), 1.0);
  EXPECT_DOUBLE_EQ(train::learning_rate(o, 2), 1.0);             // cosine starts at the peak
  EXPECT_NEAR(train::learning_rate(o, 7), 0.5, 1e-12);           // half-way through the decay
  o.schedule = "linear";
  EXPECT_NEAR(train::learning_rate(o, 7), 0.5, 1e-12);
  EXPECT_NEAR(train::learning_rate(o, 11), 0.1, 1e-12);
}

TEST(TrainParity, FullFineTuningFloat64IsExact) { expect_same(false, at::kDouble, 1e-10); }
TEST(TrainParity, FullFineTuningFloat32) { expect_same(false, at::kFloat, 1e-5); }
TEST(TrainParity, LoraWithDropoutFloat64IsExact) { expect_same(true, at::kDouble, 1e-10); }
TEST(TrainParity, LoraWithDropoutFloat32) { expect_same(true, at::kFloat, 1e-5); }
TEST(TrainParity, DistillationFloat64IsExact) { expect_same(false, at::kDouble, 1e-10, true); }
TEST(TrainParity, LoraDistillationFloat32) { expect_same(true, at::kFloat, 1e-5, true); }
TEST(TrainParity, MaskedTargetsHeldOutAndHiddenDistillationFloat64IsExact) {
  expect_same(false, at::kDouble, 1e-10, true, true);
}

int main(int argc, char** argv) {
  const char* tp_env = std::getenv("SECATEUR_TEST_TP");
  return tests::run_on_grid(argc, argv, tp_env ? std::atoi(tp_env) : 1, g_grid);
}
