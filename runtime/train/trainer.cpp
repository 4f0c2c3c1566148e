#include "runtime/train/trainer.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <map>
#include <numeric>
#include <random>
#include <regex>

#include "parallel/collectives.h"
#include "parallel/data_parallel.h"
#include "runtime/config/choices.h"
#include "runtime/core/check.h"
#include "runtime/core/log.h"
#include "runtime/io/atomic_file.h"
#include "runtime/io/safetensors.h"

namespace secateur::train {

namespace fs = std::filesystem;

namespace {

using parallel::barrier;
using parallel::rank_of;
using parallel::size_of;

struct Moments {
  std::vector<at::Tensor> m, v;
};

std::string step_name(int64_t step) { return fmt::format("step-{:06d}", step); }

// Sequence order of one epoch: a seeded permutation of [0, n).
std::vector<int64_t> epoch_order(int64_t n, uint64_t seed, int64_t epoch) {
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::mt19937_64 rng(seed * 7919 + static_cast<uint64_t>(epoch));
  std::shuffle(order.begin(), order.end(), rng);
  return order;
}

void save_checkpoint(const TrainOptions& opt, const Grid3& g, int64_t step, const std::vector<Trainable>& params,
                     const Moments& mom) {
  const fs::path final_dir = fs::path(opt.checkpoint_dir) / step_name(step);
  const fs::path tmp = fs::path(final_dir.string() + ".partial");
  if (rank_of(g.world) == 0) {
    fs::remove_all(tmp);
    fs::create_directories(tmp);
  }
  barrier(g.world);
  const std::map<std::string, std::string> meta = {{"step", std::to_string(step)},
                                                   {"dp", std::to_string(size_of(g.dp))},
                                                   {"tp", std::to_string(size_of(g.tp))}};
  if (rank_of(g.dp) == 0) {
    std::vector<std::pair<std::string, at::Tensor>> t;
    for (const Trainable& p : params) t.emplace_back(p.name, p.tensor->detach().cpu());
    io::write_safetensors((tmp / fmt::format("trainable-tp{}.safetensors", rank_of(g.tp))).string(), t, meta);
  }
  std::vector<std::pair<std::string, at::Tensor>> s;
  for (size_t i = 0; i < params.size(); ++i) {
    s.emplace_back(params[i].name + ".exp_avg", mom.m[i].cpu());
    s.emplace_back(params[i].name + ".exp_avg_sq", mom.v[i].cpu());
  }
  io::write_safetensors((tmp / fmt::format("optim-rank{}.safetensors", rank_of(g.world))).string(), s, meta);
  if (opt.hooks.save_state) {
    io::write_safetensors((tmp / fmt::format("state-rank{}.safetensors", rank_of(g.world))).string(),
                          opt.hooks.save_state(), meta);
  }
  barrier(g.world);
  if (rank_of(g.world) == 0) {                    // the DONE marker last, then the name
    io::write_file_atomic((tmp / "DONE").string(), nlohmann::json{{"step", step}}.dump() + "\n");
    fs::remove_all(final_dir);
    fs::rename(tmp, final_dir);
  }
  barrier(g.world);
}

// Why a checkpoint directory cannot be resumed from, or "" if it can.
std::string incomplete(const fs::path& dir, int64_t step, const Grid3& g, bool with_state) {
  if (!fs::exists(dir / "DONE")) return "no DONE marker";
  std::vector<fs::path> files;
  for (int t = 0; t < size_of(g.tp); ++t) files.push_back(dir / fmt::format("trainable-tp{}.safetensors", t));
  for (int r = 0; r < size_of(g.world); ++r) {
    files.push_back(dir / fmt::format("optim-rank{}.safetensors", r));
    if (with_state) files.push_back(dir / fmt::format("state-rank{}.safetensors", r));
  }
  for (const fs::path& f : files) {
    try {
      const io::SafetensorsFile file(f.string());
      const auto& meta = file.metadata();
      if (meta.count("step") == 0 || meta.at("step") != std::to_string(step)) return f.filename().string() + ": wrong step";
      if (meta.at("dp") != std::to_string(size_of(g.dp)) || meta.at("tp") != std::to_string(size_of(g.tp))) {
        return fmt::format("written on a DP {} x TP {} grid, this run is {} x {}", meta.at("dp"), meta.at("tp"),
                           size_of(g.dp), size_of(g.tp));
      }
    } catch (const Error& e) {
      return e.what();
    }
  }
  return "";
}

// Loads the newest complete checkpoint; returns its step, or 0 when there is none at all.
int64_t resume(const TrainOptions& opt, const Grid3& g, const std::vector<Trainable>& params, Moments& mom) {
  std::vector<std::pair<int64_t, fs::path>> found;
  static const std::regex name_re(R"(step-(\d+))");
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(opt.checkpoint_dir, ec)) {
    std::smatch m;
    const std::string n = e.path().filename().string();
    if (e.is_directory() && std::regex_match(n, m, name_re)) found.emplace_back(std::stoll(m[1]), e.path());
  }
  std::sort(found.rbegin(), found.rend());
  std::vector<std::string> skipped;
  for (const auto& [step, dir] : found) {
    const std::string why = incomplete(dir, step, g, static_cast<bool>(opt.hooks.load_state));
    if (!why.empty()) {
      skipped.push_back(fmt::format("{}: {}", dir.filename().string(), why));
      spdlog::warn("[train] checkpoint {} is incomplete ({}): skipped", dir.string(), why);
      continue;
    }
    const io::SafetensorsFile w((dir / fmt::format("trainable-tp{}.safetensors", rank_of(g.tp))).string());
    const io::SafetensorsFile o((dir / fmt::format("optim-rank{}.safetensors", rank_of(g.world))).string());
    at::NoGradGuard no_grad;
    for (size_t i = 0; i < params.size(); ++i) {
      const auto load = [&](const io::SafetensorsFile& f, const std::string& name, at::Tensor& into) {
        const at::Tensor t = f.tensor(name);
        SECATEUR_CHECK(t.sizes() == into.sizes(), "[train] {}: '{}' has shape [{}], the model needs [{}]", f.path(),
                       name, fmt::join(t.sizes(), ", "), fmt::join(into.sizes(), ", "));
        into.copy_(t);
      };
      load(w, params[i].name, *params[i].tensor);
      load(o, params[i].name + ".exp_avg", mom.m[i]);
      load(o, params[i].name + ".exp_avg_sq", mom.v[i]);
    }
    if (opt.hooks.load_state) {
      const io::SafetensorsFile st((dir / fmt::format("state-rank{}.safetensors", rank_of(g.world))).string());
      model::NamedTensors state;
      for (const std::string& name : st.names()) state.emplace_back(name, st.tensor(name).clone());
      opt.hooks.load_state(state);
    }
    spdlog::info("[train] resumed from {} (step {})", dir.string(), step);
    return step;
  }
  SECATEUR_CHECK(found.empty(), "[train] {}: no complete checkpoint to resume from ({})", opt.checkpoint_dir,
                 fmt::join(skipped, "; "));
  return 0;
}

// The ids [n, seq_len] of sequences `seqs`, and their target mask (undefined when every token counts).
std::pair<at::Tensor, at::Tensor> batch_of(const TrainData& data, const std::vector<int64_t>& seqs, int64_t seq_len,
                                           at::Device device) {
  std::vector<int64_t> flat;
  std::vector<uint8_t> mask;
  for (const int64_t s : seqs) {
    flat.insert(flat.end(), data.tokens.begin() + s * seq_len, data.tokens.begin() + (s + 1) * seq_len);
    if (!data.predict.empty()) {
      mask.insert(mask.end(), data.predict.begin() + s * seq_len, data.predict.begin() + (s + 1) * seq_len);
    }
  }
  const int64_t n = static_cast<int64_t>(seqs.size());
  const at::Tensor ids = at::tensor(flat, at::kLong).view({n, seq_len}).to(device);
  if (mask.empty()) return {ids, at::Tensor()};
  return {ids, at::tensor(at::ArrayRef<uint8_t>(mask), at::kByte).to(at::kBool).view({n, seq_len}).to(device)};
}

}  // namespace

double heldout_loss(const model::Decoder& model, const TrainData& data, int64_t seq_len, int64_t micro_batch,
                    const Grid3& g) {
  at::NoGradGuard no_grad;
  const parallel::Range mine = parallel::dp_share(data.sequences(seq_len), g.dp);
  double sum = 0, count = 0;
  for (int64_t first = mine.begin; first < mine.end; first += micro_batch) {
    std::vector<int64_t> seqs;
    for (int64_t s = first; s < std::min(first + micro_batch, mine.end); ++s) seqs.push_back(s);
    const auto [ids, predict] = batch_of(data, seqs, seq_len, model.device());
    sum += model.loss_sum(ids, nullptr, predict).item<double>();
    for (const int64_t s : seqs) count += static_cast<double>(data.targets(s, seq_len));
  }
  sum = parallel::sum(g.dp, sum);
  count = parallel::sum(g.dp, count);
  SECATEUR_CHECK(count > 0, "[train] the held-out set has no target tokens");
  return sum / count;
}

double learning_rate(const TrainOptions& opt, int64_t step) {
  if (step < opt.warmup_steps) return opt.lr * static_cast<double>(step + 1) / static_cast<double>(opt.warmup_steps);
  const double span = static_cast<double>(std::max<int64_t>(opt.steps - opt.warmup_steps, 1));
  const double t = static_cast<double>(step - opt.warmup_steps) / span;   // in [0, 1)
  if (opt.schedule == "cosine") return opt.lr * 0.5 * (1.0 + std::cos(M_PI * t));
  if (opt.schedule == "linear") return opt.lr * (1.0 - t);
  return opt.lr;
}

namespace {

void validate(const TrainOptions& opt, const TrainData& data, int64_t n_seq, int dp) {
  SECATEUR_CHECK(opt.seq_len > 1 && n_seq >= opt.batch, "[config] training needs 'recover.batch' = {} sequences of "
                 "'recover.seq_len' = {} tokens, the data has {} tokens", opt.batch, opt.seq_len, data.tokens.size());
  SECATEUR_CHECK(data.predict.empty() || data.predict.size() == data.tokens.size(),
                 "[train] the target mask has {} entries for {} tokens", data.predict.size(), data.tokens.size());
  SECATEUR_CHECK(opt.batch % dp == 0, "[config] 'recover.batch' = {} must be a multiple of the {} DP ranks",
                 opt.batch, dp);
  SECATEUR_CHECK(opt.micro_batch > 0 && opt.steps > 0 && opt.lr > 0, "[config] 'recover.micro_batch', "
                 "'recover.steps' and 'recover.lr' must be > 0");
  config::check_choice(config::choices::recover_schedule, "recover.schedule", opt.schedule);
  SECATEUR_CHECK(!opt.teacher || (opt.kd_alpha >= 0 && opt.kd_alpha <= 1 && opt.kd_temperature > 0 &&
                                  opt.kd_hidden >= 0),
                 "[config] 'recover.kd_alpha' = {} must be in [0, 1], 'recover.kd_temperature' = {} > 0 and "
                 "'recover.kd_hidden' = {} >= 0", opt.kd_alpha, opt.kd_temperature, opt.kd_hidden);
  SECATEUR_CHECK(opt.eval_every >= 0, "[config] 'recover.eval_every' = {} must be >= 0", opt.eval_every);
}

// Sequence k of the stream of epochs, each epoch shuffled once (the last two epochs' orders kept).
class EpochStream {
 public:
  EpochStream(int64_t n_seq, uint64_t seed) : n_seq_(n_seq), seed_(seed) {}
  int64_t operator[](int64_t k) {
    const int64_t epoch = k / n_seq_;
    if (orders_.count(epoch) == 0) {
      orders_.erase(orders_.begin(), orders_.lower_bound(epoch - 1));
      orders_[epoch] = epoch_order(n_seq_, seed_, epoch);
    }
    return orders_[epoch][k % n_seq_];
  }

 private:
  int64_t n_seq_;
  uint64_t seed_;
  std::map<int64_t, std::vector<int64_t>> orders_;
};

// Forward and backward of this rank's share of step `step`'s sequences, normalised by the target
// tokens of the whole global batch; returns this rank's part of the loss.
double accumulate_gradients(model::Decoder& model, const TrainData& data, const TrainOptions& opt, int64_t step,
                            parallel::Range share, EpochStream& sequence) {
  const model::Decoder::Distill kd{opt.teacher, opt.kd_alpha, opt.kd_temperature, opt.kd_hidden};
  double targets = 0;                             // the global batch's, counted alike on every rank
  for (int64_t i = 0; i < opt.batch; ++i) {
    targets += static_cast<double>(data.targets(sequence[step * opt.batch + i], opt.seq_len));
  }
  const double norm_by = std::max(targets, 1.0);
  double loss_sum = 0;
  for (int64_t mb = share.begin; mb < share.end; mb += opt.micro_batch) {
    std::vector<int64_t> seqs;
    for (int64_t i = mb; i < std::min(opt.micro_batch + mb, share.end); ++i) seqs.push_back(sequence[step * opt.batch + i]);
    const auto [ids, predict] = batch_of(data, seqs, opt.seq_len, model.device());
    model.set_training(true, (opt.seed * 1000003ull + step) * 65537ull + mb);
    const at::Tensor loss = model.loss_sum(ids, opt.teacher ? &kd : nullptr, predict) / norm_by;
    loss.backward();
    loss_sum += loss.item<double>();
  }
  model.set_training(false);
  return loss_sum;
}

// Global gradient norm: TP shards summed over TP, replicated tensors counted once. Squares are
// summed in float64, 16M elements at a time: a float64 copy of a whole embedding's gradient would
// be the step's largest allocation (4 x a bf16 one, twice over with its square).
double gradient_norm(const std::vector<Trainable>& params, parallel::Group tp) {
  constexpr int64_t kChunk = int64_t{1} << 24;
  double sharded_sq = 0, replicated_sq = 0;
  for (const Trainable& p : params) {
    const at::Tensor g = p.tensor->grad().reshape({-1});
    double sq = 0;
    for (int64_t i = 0; i < g.numel(); i += kChunk) {
      sq += g.narrow(0, i, std::min(kChunk, g.numel() - i)).to(at::kDouble).square().sum().item<double>();
    }
    (p.sharded ? sharded_sq : replicated_sq) += sq;
  }
  sharded_sq = parallel::sum(tp, sharded_sq);
  return std::sqrt(sharded_sq + replicated_sq);
}

// AdamW as torch.optim.AdamW computes it, with the gradients scaled by coef (clipping); under
// NoGradGuard.
void adamw_update(const std::vector<Trainable>& params, Moments& mom, const TrainOptions& opt, int64_t step, double lr,
                  double coef) {
  const double bc1 = 1.0 - std::pow(opt.beta1, static_cast<double>(step + 1));
  const double bc2 = 1.0 - std::pow(opt.beta2, static_cast<double>(step + 1));
  for (size_t i = 0; i < params.size(); ++i) {
    at::Tensor& p = *params[i].tensor;
    at::Tensor grad = p.grad();
    if (coef != 1.0) grad = grad * coef;
    const double lr_p = params[i].lr > 0 ? lr * params[i].lr / opt.lr : lr;
    if (params[i].decay) p.mul_(1.0 - lr_p * opt.weight_decay);
    mom.m[i].mul_(opt.beta1).add_(grad, 1.0 - opt.beta1);
    mom.v[i].mul_(opt.beta2).addcmul_(grad, grad, 1.0 - opt.beta2);
    const at::Tensor denom = (mom.v[i].sqrt() / std::sqrt(bc2)).add_(opt.eps);
    p.addcdiv_(mom.m[i], denom, -lr_p / bc1);
  }
}

}  // namespace

TrainResult train(model::Decoder& model, const std::vector<Trainable>& params, const TrainData& data,
                  const TrainOptions& opt, const Grid3& g, const std::function<void(const nlohmann::json&)>& metric) {
  const int64_t n_seq = opt.seq_len > 0 ? data.sequences(opt.seq_len) : 0;
  validate(opt, data, n_seq, size_of(g.dp));
  Moments mom;
  std::vector<at::Tensor*> tensors, partial;
  for (const Trainable& p : params) {
    mom.m.push_back(at::zeros_like(*p.tensor));
    mom.v.push_back(at::zeros_like(*p.tensor));
    p.tensor->set_requires_grad(true);
    tensors.push_back(p.tensor);
    if (p.partial_grad) partial.push_back(p.tensor);
  }
  TrainResult r;
  if (opt.resume && !opt.checkpoint_dir.empty()) r.first_step = resume(opt, g, params, mom);
  const parallel::Range share = parallel::dp_share(opt.batch, g.dp);   // equal shares: batch % dp == 0
  const auto evaluate = [&](int64_t done) {
    if (!opt.heldout) return;
    model.set_training(false);
    if (opt.hooks.before_eval) opt.hooks.before_eval();
    const double loss = heldout_loss(model, *opt.heldout, opt.seq_len, opt.micro_batch, g);
    r.heldout.emplace_back(done, loss);
    spdlog::info("held-out after {} steps: loss {:.4f}, perplexity {:.3f}", done, loss, std::exp(loss));
    if (metric) metric({{"stage", "train_eval"}, {"step", done}, {"heldout_loss", loss}, {"heldout_ppl", std::exp(loss)}});
  };
  EpochStream sequence(n_seq, opt.seed);
  evaluate(r.first_step);
  const double tokens_per_step = static_cast<double>(opt.batch * (opt.seq_len - 1));
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t step = r.first_step; step < opt.steps; ++step) {
    const auto ts = std::chrono::steady_clock::now();
    for (at::Tensor* t : tensors) t->mutable_grad().reset();
    if (opt.hooks.before_step) opt.hooks.before_step(step);
    double loss_sum = accumulate_gradients(model, data, opt, step, share, sequence);
    for (at::Tensor* t : tensors) {               // a tensor no gradient reached still joins the sums
      if (!t->grad().defined()) t->mutable_grad() = at::zeros_like(*t);
    }
    if (g.dp && size_of(g.dp) > 1) {
      parallel::all_reduce_gradients(tensors, *g.dp, parallel::ReduceOp::sum);
      loss_sum = parallel::sum(g.dp, loss_sum);
    }
    if (g.tp && !partial.empty()) parallel::all_reduce_gradients(partial, *g.tp, parallel::ReduceOp::sum);
    if (opt.hooks.after_gradients) opt.hooks.after_gradients(step);
    const double norm = gradient_norm(params, g.tp);
    const double coef = opt.clip > 0 && norm > opt.clip ? opt.clip / (norm + 1e-6) : 1.0;
    const double lr = learning_rate(opt, step);
    {
      at::NoGradGuard no_grad;                    // the update and what follows it (masks, thresholds)
      adamw_update(params, mom, opt, step, lr, coef);
      if (opt.hooks.after_update) opt.hooks.after_update(step, lr);
    }
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - ts).count();
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const int64_t done = step + 1 - r.first_step;
    r.losses.push_back(loss_sum);
    r.last_loss = loss_sum;
    spdlog::info("step {}/{}: loss {:.4f}, lr {:.3g}, grad norm {:.3g}, {:.0f} tok/s, ETA {:.0f} s", step + 1,
                 opt.steps, loss_sum, lr, norm, tokens_per_step / secs,
                 elapsed / static_cast<double>(done) * static_cast<double>(opt.steps - step - 1));
    if (metric) {
      metric({{"stage", "train_step"}, {"step", step + 1}, {"loss", loss_sum}, {"lr", lr}, {"grad_norm", norm},
              {"tokens_per_second", tokens_per_step / secs}});
    }
    if (opt.eval_every > 0 && (step + 1) % opt.eval_every == 0 && step + 1 != opt.steps) evaluate(step + 1);
    const bool last = step + 1 == opt.steps;
    if (!opt.checkpoint_dir.empty() && (last || (opt.save_every > 0 && (step + 1) % opt.save_every == 0))) {
      save_checkpoint(opt, g, step + 1, params, mom);
    }
  }
  for (at::Tensor* t : tensors) {
    t->mutable_grad().reset();
    t->set_requires_grad(false);
  }
  r.steps = opt.steps - r.first_step;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.tokens_per_second = r.seconds > 0 ? tokens_per_step * static_cast<double>(r.steps) / r.seconds : 0;
  if (r.steps > 0) evaluate(opt.steps);
  return r;
}

}  // namespace secateur::train
