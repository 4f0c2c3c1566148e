#include "pruning/movement.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/grad_mode.h>
#include <fmt/ranges.h>

#include <cmath>
#include <map>

#include "parallel/collectives.h"
#include "runtime/config/choices.h"
#include "runtime/core/check.h"
#include "runtime/core/log.h"

namespace secateur::pruning {

namespace {

bool learned(GradualMethod m) {
  return m == GradualMethod::movement || m == GradualMethod::movement_soft || m == GradualMethod::gum;
}

int64_t kept_count(double v, int64_t n) {
  return std::min<int64_t>(n, static_cast<int64_t>(std::floor(v * static_cast<double>(n) + 1e-9)));
}

// 1 at the k highest entries of a 1-D tensor, ties to the lower index (a stable descending sort).
at::Tensor top_k_mask(const at::Tensor& scores, int64_t k) {
  at::Tensor mask = at::zeros({scores.numel()}, at::kFloat);
  if (k <= 0) return mask;
  const at::Tensor order = std::get<1>(scores.to(at::kDouble).sort(/*stable=*/true, /*dim=*/0, /*descending=*/true));
  return mask.index_fill_(0, order.narrow(0, 0, k), 1.0);
}

}  // namespace

static_assert(std::size(config::choices::gum_method) == static_cast<size_t>(GradualMethod::gum) + 1);

const char* gradual_name(GradualMethod m) { return config::choice_name(config::choices::gum_method, m); }

GradualMethod parse_gradual(const std::string& name) {
  return config::parse_choice<GradualMethod>(config::choices::gum_method, "gum.method", name);
}

void GradualOptions::validate() const {
  SECATEUR_CHECK(keep > 0 && keep <= 1, "[config] 'gum.keep' = {} must be in (0, 1]", keep);
  SECATEUR_CHECK(warmup >= 0 && warmup < 0.25, "[config] 'gum.warmup' = {} must be in [0, 0.25) (the schedule "
                 "spends 4 x warmup of the steps in warm-up and cool-down)", warmup);
  SECATEUR_CHECK(mask_lr > 0, "[config] 'gum.mask_lr' = {} must be > 0", mask_lr);
  SECATEUR_CHECK(lambda >= 0 && lambda_u >= 0, "[config] 'gum.lambda' = {} and 'gum.lambda_u' = {} must be >= 0",
                 lambda, lambda_u);
  SECATEUR_CHECK(lambda > 0 || (method != GradualMethod::gum && method != GradualMethod::movement_soft),
                 "[config] 'gum.method' = {} needs 'gum.lambda' > 0 (its l1 term carries {})", gradual_name(method),
                 method == GradualMethod::gum ? "the uniqueness multiplier" : "the pressure on the scores");
  SECATEUR_CHECK(beta > 0 && beta <= 1, "[config] 'gum.beta' = {} must be in (0, 1]", beta);
  SECATEUR_CHECK(soft_threshold > 0 && soft_threshold < 1, "[config] 'gum.soft_threshold' = {} must be in (0, 1)",
                 soft_threshold);
  SECATEUR_CHECK(partners >= 0, "[config] 'gum.partners' = {} must be >= 0", partners);
}

double cubic_schedule(int64_t step, int64_t total, int64_t warmup_steps, double initial, double final_value) {
  const int64_t t_i = warmup_steps, t_c = 3 * warmup_steps;
  if (step <= t_i) return initial;
  if (step > total - t_c) return final_value;
  const double c = 1.0 - static_cast<double>(step - t_i) / static_cast<double>(total - (t_i + t_c));
  return final_value + (initial - final_value) * c * c * c;
}

std::vector<at::Tensor> top_v_masks(const std::vector<at::Tensor>& scores, double v, bool global) {
  std::vector<at::Tensor> masks;
  if (!global) {
    for (const at::Tensor& s : scores) masks.push_back(top_k_mask(s, kept_count(v, s.numel())));
    return masks;
  }
  std::vector<at::Tensor> flat;
  for (const at::Tensor& s : scores) flat.push_back(s.reshape({-1}).to(at::kDouble));
  const at::Tensor all = at::cat(flat);
  const at::Tensor mask = top_k_mask(all, kept_count(v, all.numel()));
  int64_t at = 0;
  for (const at::Tensor& s : scores) {
    masks.push_back(mask.narrow(0, at, s.numel()).clone());
    at += s.numel();
  }
  return masks;
}

// ---- CosineStats ----

CosineStats::CosineStats(int64_t d_ff, model::Range rows, std::vector<int64_t> partners)
    : d_ff_(d_ff), rows_(rows), partners_(std::move(partners)) {
  if (!partners_.empty()) partner_index_ = at::tensor(partners_, at::kLong);
}

void CosineStats::add(const at::Tensor& h_rows, const at::Tensor& h_all) {
  if (partner_index_.defined() && partner_index_.device() != h_all.device()) partner_index_ = partner_index_.to(h_all.device());
  const at::Tensor cols = partner_index_.defined() ? h_all.index_select(1, partner_index_) : h_all;
  const at::Tensor c = at::matmul(h_rows.t(), cols);
  const at::Tensor n = h_all.square().sum(0);
  c_cur_ = c_cur_.defined() ? c_cur_.add_(c) : c;
  n_cur_ = n_cur_.defined() ? n_cur_.add_(n) : n;
}

void CosineStats::commit(double beta, parallel::Comm* dp) {
  if (!c_cur_.defined()) return;
  parallel::sum(dp, c_cur_);
  parallel::sum(dp, n_cur_);
  if (!c_run_.defined()) {
    c_run_ = c_cur_ * beta;
    n_run_ = n_cur_ * beta;
  } else {
    c_run_.mul_(1.0 - beta).add_(c_cur_, beta);
    n_run_.mul_(1.0 - beta).add_(n_cur_, beta);
  }
  c_cur_ = at::Tensor();
  n_cur_ = at::Tensor();
}

at::Tensor CosineStats::cosine() const {
  SECATEUR_CHECK(c_run_.defined(), "[pruning] no cosine statistics collected yet");
  const at::Tensor root = n_run_.sqrt();
  const at::Tensor r = root.narrow(0, rows_.begin, rows_.size());
  const at::Tensor c = partner_index_.defined() ? root.index_select(0, partner_index_) : root;
  at::Tensor cos = c_run_ / (r.unsqueeze(1) * c.unsqueeze(0) + 1e-6);
  // A neuron with itself: zero.
  const auto ids = at::TensorOptions(c_run_.device()).dtype(at::kLong);
  const at::Tensor row_ids = at::arange(rows_.begin, rows_.end, ids).unsqueeze(1);
  const at::Tensor col_ids = partner_index_.defined() ? partner_index_ : at::arange(d_ff_, ids);
  return cos.masked_fill_(row_ids == col_ids.unsqueeze(0), 0.0);
}

at::Tensor CosineStats::abs_cos_sum() const {
  const at::Tensor s = cosine().abs().sum(1);
  return partners_.empty() ? s : s * (static_cast<double>(d_ff_) / static_cast<double>(partners_.size()));
}

int64_t CosineStats::bytes() const {
  const int64_t cols = partners_.empty() ? d_ff_ : static_cast<int64_t>(partners_.size());
  return (rows_.size() * cols + d_ff_) * 4 * 2;   // running and current sums, float32 (float64 models: twice)
}

void CosineStats::set_running(const at::Tensor& gram, const at::Tensor& norms, const std::string& where) {
  const int64_t cols = partners_.empty() ? d_ff_ : static_cast<int64_t>(partners_.size());
  SECATEUR_CHECK(gram.dim() == 2 && gram.size(0) == rows_.size() && gram.size(1) == cols && norms.dim() == 1 &&
                 norms.size(0) == d_ff_, "[gum] {}: statistics of shape [{}] and [{}], this layer needs [{}, {}] and [{}]",
                 where, fmt::join(gram.sizes(), ", "), fmt::join(norms.sizes(), ", "), rows_.size(), cols, d_ff_);
  c_run_ = gram;
  n_run_ = norms;
}

// ---- GradualPruner ----

GradualPruner::GradualPruner(model::Decoder& model, GradualOptions opt, int64_t total_steps, parallel::Comm* dp)
    : model_(model), opt_(opt), total_(total_steps), dp_(dp) {
  opt_.validate();
  const model::ModelConfig& c = model_.config();
  warmup_steps_ = static_cast<int64_t>(opt_.warmup * static_cast<double>(total_));
  SECATEUR_CHECK(total_ - 4 * warmup_steps_ > 0, "[config] {} steps leave no room for the cubic schedule after "
                 "{} warm-up and {} cool-down steps ('gum.warmup' = {})", total_, warmup_steps_, 3 * warmup_steps_,
                 opt_.warmup);
  const parallel::Group tp = model_.tp();
  for (int64_t l = 0; l < c.n_layers(); ++l) {
    const model::Range rows = model_.plan().layers[l].neurons;
    SECATEUR_CHECK(c.d_ff[l] == 0 || rows.size() > 0, "[pruning] layer {} has {} MLP neurons, fewer than the {} TP "
                   "ranks: training-time pruning needs some on every rank", l, c.d_ff[l], tp.size());
    at::Tensor s = at::zeros({c.d_ff[l]}, at::kFloat);
    if (opt_.method == GradualMethod::random) {
      auto gen = at::make_generator<at::CPUGeneratorImpl>(opt_.seed * 1000003ull + static_cast<uint64_t>(l));
      s = at::rand({c.d_ff[l]}, gen, at::kFloat);
    }
    scores_.push_back(s.to(model_.device()));
    mult_.push_back(at::zeros({c.d_ff[l]}, at::kFloat));
    if (opt_.method == GradualMethod::gum) {
      std::vector<int64_t> partners;
      if (opt_.partners > 0 && opt_.partners < c.d_ff[l]) {
        auto gen = at::make_generator<at::CPUGeneratorImpl>(opt_.seed * 7919ull + static_cast<uint64_t>(l));
        const at::Tensor pick = std::get<0>(at::randperm(c.d_ff[l], gen, at::kLong).narrow(0, 0, opt_.partners).sort());
        partners.assign(pick.data_ptr<int64_t>(), pick.data_ptr<int64_t>() + pick.numel());
      }
      stats_.emplace_back(c.d_ff[l], rows, std::move(partners));
    }
  }
  if (opt_.method == GradualMethod::gum) {
    int64_t bytes = 0;
    for (const CosineStats& st : stats_) bytes = std::max(bytes, st.bytes());
    spdlog::info("[gum] cosine statistics: up to {:.1f} MiB per layer on this rank ({})", bytes / 1048576.0,
                 opt_.partners > 0 ? fmt::format("{} sampled partners", opt_.partners) : "the full Gram matrix");
    model_.set_observer([this, tp](int64_t layer, model::Decoder::Tap tap, const at::Tensor& input) {
      if (!collecting_ || tap != model::Decoder::Tap::mlp_hidden) return;
      // On the activations' device (the TP comm moves that kind of tensor), float32 at least.
      const at::Tensor h = input.detach().reshape({-1, input.size(-1)}).to(at::promote_types(input.scalar_type(), at::kFloat));
      stats_[layer].add(h, parallel::gather(tp, h, 1));
    });
  }
}

std::vector<at::Tensor*> GradualPruner::scores() {
  std::vector<at::Tensor*> out;
  if (!learned(opt_.method)) return out;
  for (at::Tensor& s : scores_) out.push_back(&s);
  return out;
}

double GradualPruner::kept_fraction(int64_t step) const {
  return cubic_schedule(step, total_, warmup_steps_, 1.0, opt_.keep);
}

std::vector<at::Tensor> GradualPruner::current_scores() const {
  if (opt_.method != GradualMethod::magnitude) {
    std::vector<at::Tensor> out;
    for (const at::Tensor& s : scores_) out.push_back(s.detach().to(at::kFloat).cpu());
    return out;
  }
  // ‖(gate row, up row, down column)‖₂ of each neuron, from this rank's shards, summed over TP.
  at::NoGradGuard no_grad;
  const model::ModelConfig& c = model_.config();
  std::map<std::string, at::Tensor> w;
  for (const auto& [name, t] : model_.named_tensors()) w[name] = t;
  std::vector<at::Tensor> out;
  for (int64_t l = 0; l < c.n_layers(); ++l) {
    at::Tensor sq = at::zeros({c.d_ff[l]}, at::TensorOptions(model_.device()).dtype(at::kDouble));
    const model::Range rows = model_.plan().layers[l].neurons;
    if (rows.size() > 0) {
      const auto energy = [&](model::Proj p, int dim) {
        return w.at(model::proj_weight(c, l, p)).to(at::kDouble).square().sum(dim);
      };
      at::Tensor local = energy(model::Proj::up, 1) + energy(model::Proj::down, 0);
      if (model::proj_spec(c, model::Proj::gate)) local = local + energy(model::Proj::gate, 1);
      sq.narrow(0, rows.begin, rows.size()).copy_(local);
    }
    parallel::sum(model_.tp(), sq);
    out.push_back(sq.sqrt().to(at::kFloat).cpu());
  }
  return out;
}

std::vector<at::Tensor> GradualPruner::masks_for(int64_t step, bool final) const {
  const std::vector<at::Tensor> s = current_scores();
  if (opt_.method == GradualMethod::movement_soft) {
    const double tau = final ? opt_.soft_threshold : cubic_schedule(step, total_, warmup_steps_, 0.0, opt_.soft_threshold);
    std::vector<at::Tensor> masks;
    for (const at::Tensor& x : s) masks.push_back((x.sigmoid() > tau).to(at::kFloat));
    return masks;
  }
  return top_v_masks(s, final ? opt_.keep : kept_fraction(step), opt_.global);
}

void GradualPruner::set_masks(const std::vector<at::Tensor>& hard) {
  last_masks_ = hard;
  for (size_t l = 0; l < hard.size(); ++l) {
    at::Tensor m = hard[l].to(model_.device());
    // Straight-through: the value is the hard mask, the gradient flows to the score unchanged.
    if (learned(opt_.method) && scores_[l].requires_grad()) m = m + (scores_[l] - scores_[l].detach());
    model_.set_mlp_mask(static_cast<int64_t>(l), m);
  }
}

void GradualPruner::before_step(int64_t step) {
  stepped_ = true;
  set_masks(masks_for(step, false));
  collecting_ = opt_.method == GradualMethod::gum;
}

void GradualPruner::after_gradients(int64_t step) {
  collecting_ = false;
  at::NoGradGuard no_grad;
  // The ℓ1 term λ · mean_l mean_i σ(S_li)(1 + mult_li), added to the scores' gradients after the
  // sums over DP and TP (it is the same on every rank): with this step's mult, from earlier steps.
  if (learned(opt_.method) && opt_.lambda > 0) {
    int64_t layers = 0;
    for (const at::Tensor& s : scores_) layers += s.numel() > 0 ? 1 : 0;
    for (size_t l = 0; l < scores_.size(); ++l) {
      at::Tensor& s = scores_[l];
      if (s.numel() == 0 || !s.grad().defined()) continue;
      const at::Tensor sig = s.detach().sigmoid();
      const at::Tensor g = sig * (1 - sig) * (1 + mult_[l].to(s.device())) *
                           (opt_.lambda / static_cast<double>(layers * s.numel()));
      s.mutable_grad().add_(g.to(s.grad().scalar_type()));
    }
  }
  if (opt_.method != GradualMethod::gum) return;
  const double v = kept_fraction(step);
  const parallel::Group tp = model_.tp();
  for (size_t l = 0; l < stats_.size(); ++l) {
    stats_[l].commit(opt_.beta, dp_);
    if (stats_[l].empty()) continue;
    at::Tensor r = stats_[l].abs_cos_sum() / (static_cast<double>(scores_[l].numel()) * v);   // this rank's rows
    r = parallel::gather(tp, r);
    mult_[l] = r.to(at::kFloat).cpu() * opt_.lambda_u;
  }
}

void GradualPruner::before_eval() {
  collecting_ = false;
  if (!stepped_ && learned(opt_.method)) {             // untrained scores all tie: the dense model
    model_.clear_mlp_masks();
    return;
  }
  set_masks(masks_for(total_, true));
}

model::NamedTensors GradualPruner::state() const {
  model::NamedTensors s = {{"stepped", at::full({1}, int64_t{stepped_}, at::kLong)}};
  for (size_t l = 0; l < mult_.size(); ++l) s.emplace_back(fmt::format("mult.{}", l), mult_[l]);
  for (size_t l = 0; l < stats_.size(); ++l) {
    if (stats_[l].empty()) continue;
    s.emplace_back(fmt::format("gram.{}", l), stats_[l].gram_rows().cpu());
    s.emplace_back(fmt::format("norms.{}", l), stats_[l].norms().cpu());
  }
  return s;
}

void GradualPruner::restore(const model::NamedTensors& state) {
  std::map<std::string, at::Tensor> s(state.begin(), state.end());
  const auto get = [&](const std::string& name) {
    const auto it = s.find(name);
    SECATEUR_CHECK(it != s.end(), "[gum] the checkpoint's pruner state has no '{}' (another gum.method or model?)", name);
    return it->second;
  };
  stepped_ = get("stepped").item<int64_t>() != 0;
  for (size_t l = 0; l < mult_.size(); ++l) {
    const at::Tensor m = get(fmt::format("mult.{}", l));
    SECATEUR_CHECK(m.sizes() == mult_[l].sizes(), "[gum] the checkpoint's 'mult.{}' has {} entries, layer {} has {} "
                   "neurons", l, m.numel(), l, mult_[l].numel());
    mult_[l] = m;
  }
  for (size_t l = 0; l < stats_.size(); ++l) {
    const std::string gram = fmt::format("gram.{}", l);
    if (s.count(gram) == 0) continue;
    const at::Device device = model_.device();
    stats_[l].set_running(s.at(gram).to(device), get(fmt::format("norms.{}", l)).to(device), gram);
  }
}

std::vector<Group> GradualPruner::final_removal() {
  const std::vector<at::Tensor> masks = masks_for(total_, true);
  set_masks(masks);
  model_.clear_mlp_masks();
  model_.set_observer(nullptr);
  const GroupMaker make(model_.config());
  std::vector<Group> remove;
  for (size_t l = 0; l < masks.size(); ++l) {
    const at::Tensor gone = (masks[l] == 0).nonzero().reshape({-1});
    for (int64_t i = 0; i < gone.numel(); ++i) {
      remove.push_back(make(GroupKind::neuron, static_cast<int64_t>(l), gone[i].item<int64_t>()));
    }
  }
  return remove;
}

nlohmann::json GradualPruner::summary() const {
  nlohmann::json layers = nlohmann::json::array();
  int64_t kept = 0, total = 0;
  for (size_t l = 0; l < last_masks_.size(); ++l) {
    const int64_t k = last_masks_[l].sum().item<int64_t>();
    nlohmann::json j = {{"layer", l}, {"neurons", last_masks_[l].numel()}, {"kept", k}};
    if (opt_.method == GradualMethod::gum && opt_.lambda_u > 0) {
      j["mean_redundancy"] = mult_[l].numel() ? mult_[l].mean().item<double>() / opt_.lambda_u : 0.0;
    }
    layers.push_back(j);
    kept += k;
    total += last_masks_[l].numel();
  }
  return {{"method", gradual_name(opt_.method)}, {"ranking", opt_.global ? "global" : "local"},
          {"keep_target", opt_.keep}, {"kept", kept}, {"neurons", total},
          {"kept_fraction", total ? static_cast<double>(kept) / static_cast<double>(total) : 0.0},
          {"layers", layers}};
}

}  // namespace secateur::pruning
