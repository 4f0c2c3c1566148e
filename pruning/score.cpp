#include "pruning/score.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <limits>
#include <map>
#include <random>

#include "runtime/config/choices.h"
#include "runtime/core/check.h"

namespace secateur::pruning {

static_assert(std::size(config::choices::criterion) == static_cast<size_t>(Criterion::sleb) + 1);
static_assert(std::size(config::choices::aggregate) == static_cast<size_t>(Aggregate::last) + 1);

const char* criterion_name(Criterion c) { return config::choice_name(config::choices::criterion, c); }

Criterion parse_criterion(const std::string& name) {
  return config::parse_choice<Criterion>(config::choices::criterion, "prune.criterion", name);
}

Aggregate parse_aggregate(const std::string& name) {
  return config::parse_choice<Aggregate>(config::choices::aggregate, "prune.aggregate", name);
}

bool standardised(Criterion c) { return c == Criterion::flap; }
bool scores_projection_inputs(Criterion c) { return c == Criterion::flap || c == Criterion::wanda_sp; }
bool scores_layers_only(Criterion c) {
  return c == Criterion::block_influence || c == Criterion::angular || c == Criterion::sleb;
}

CalibrationOptions calibration_for(Criterion c, Compensation compensation) {
  CalibrationOptions o;
  o.first_order = c == Criterion::taylor_element1 || c == Criterion::taylor_vector;
  o.fisher = c == Criterion::taylor_element2;
  o.mixed = c == Criterion::taylor_mixed;
  o.activations = c == Criterion::activation || scores_projection_inputs(c) || compensation != Compensation::none;
  o.gram = compensation == Compensation::least_squares;
  o.residuals = c == Criterion::block_influence || c == Criterion::angular;
  return o;
}

std::string calibration_needs(Criterion c, Compensation compensation, bool model_wide) {
  if (c == Criterion::sleb) return "sleb";   // a search of its own (pruning/depth.h), not a calibration pass
  const CalibrationOptions o = calibration_for(c, compensation);
  std::string out;
  for (const auto& [on, name] : {std::pair{o.first_order, "first_order"}, std::pair{o.fisher, "fisher"},
                                 std::pair{o.mixed, "mixed"}, std::pair{o.activations, "activations"},
                                 std::pair{o.gram, "gram"}, std::pair{o.residuals, "residuals"}}) {
    if (on) out += (out.empty() ? "" : ",") + std::string(name);
  }
  if (!model_wide && (o.first_order || o.fisher || o.mixed)) out += ",layers_only";
  return out;
}

namespace {

// wanda_sp and flap: the per-column metric of an output projection's input (whole model, float64),
// computed once per tensor. attention: FLAP squares the metric of o_proj's columns.
class ProjectionMetric {
 public:
  ProjectionMetric(const Statistics& stats, Criterion c) : stats_(stats), c_(c) {}

  const at::Tensor& operator()(const std::string& tensor, bool attention) {
    auto [it, fresh] = cache_.try_emplace(tensor);
    if (!fresh) return it->second;
    const WeightStats& ws = stats_.weights.at(tensor);
    SECATEUR_CHECK(ws.act[1].defined() && ws.l1[1].defined() && ws.l1[0].defined(), "[pruning/score] criterion {} "
                   "has no activation statistics for '{}' (was calibration run?)", criterion_name(c_), tensor);
    if (c_ == Criterion::wanda_sp) {                          // mean_i |W_ij| · ‖x_j‖
      it->second = ws.l1[1] / static_cast<double>(ws.l1[0].size(0)) * ws.act[1].sqrt();
      return it->second;
    }
    SECATEUR_CHECK(ws.act_sum[1].defined() && stats_.tokens > 0, "[pruning/score] criterion flap needs the "
                   "activations' sums for '{}' (statistics of an older `secateur score`? score again)", tensor);
    const double n = static_cast<double>(stats_.tokens);
    const at::Tensor mean = ws.act_sum[1] / n;
    const at::Tensor variance = (ws.act[1] / n - mean * mean).clamp_min(0.0);
    at::Tensor s = variance * ws.l2[1];                         // WIFV
    if (attention) s = s * s;
    const at::Tensor sd = s.std();                              // unbiased, as FLAP
    it->second = (s - s.mean()) / (sd.item<double>() > 0 ? sd : at::ones_like(sd));
    return it->second;
  }

 private:
  const Statistics& stats_;
  Criterion c_;
  std::map<std::string, at::Tensor> cache_;
};

// A unit's score from the input columns (dim 1) of its output projection: the sum of wanda_sp's
// metric over them, the mean of flap's.
double projection_score(const Group& g, ProjectionMetric& metric, Criterion c) {
  SECATEUR_CHECK(g.kind == GroupKind::neuron || g.kind == GroupKind::query_head || g.kind == GroupKind::kv_group,
                 "[pruning/score] criterion {} scores neurons and attention units, not a {}", criterion_name(c),
                 kind_name(g.kind));
  const bool attention = g.kind != GroupKind::neuron;
  double total = 0;
  int64_t columns = 0;
  for (const Slice& s : g.slices) {
    if (s.dim != 1) continue;
    total += metric(s.tensor, attention).narrow(0, s.begin, s.end - s.begin).sum().item<double>();
    columns += s.end - s.begin;
  }
  SECATEUR_CHECK(columns > 0, "[pruning/score] {} {} of layer {} has no output projection column", kind_name(g.kind),
                 g.index, g.layer);
  return c == Criterion::flap ? total / static_cast<double>(columns) : total;
}

// block_influence: the layer's mean 1 − cos(h_l, h_{l+1}); sleb: the phase of the search in which
// the layer went (+∞ for those it kept); angular: its own mean angle (what a span of one scores).
double layer_score(const Group& g, const Statistics& stats, Criterion c) {
  SECATEUR_CHECK(g.kind == GroupKind::layer, "[pruning/score] criterion {} scores whole layers, not a {}",
                 criterion_name(c), kind_name(g.kind));
  if (c == Criterion::sleb) {
    SECATEUR_CHECK(!stats.sleb_order.empty(), "[pruning/score] criterion sleb has no search in these statistics");
    const auto it = std::find(stats.sleb_order.begin(), stats.sleb_order.end(), g.layer);
    return it == stats.sleb_order.end() ? std::numeric_limits<double>::infinity()
                                        : static_cast<double>(it - stats.sleb_order.begin());
  }
  const at::Tensor& m = c == Criterion::block_influence ? stats.residual_cosine : stats.residual_angle;
  SECATEUR_CHECK(m.defined() && stats.tokens > 0 && g.layer + 1 < m.size(0), "[pruning/score] criterion {} has no "
                 "residual-stream statistics for layer {} (was calibration run?)", criterion_name(c), g.layer);
  return m[g.layer][g.layer + 1].item<double>() / static_cast<double>(stats.tokens);
}

}  // namespace

std::vector<double> score_groups(const std::vector<Group>& groups, const Statistics& stats, Criterion criterion,
                                 Aggregate aggregate, uint64_t seed) {
  std::vector<double> out;
  out.reserve(groups.size());
  if (scores_projection_inputs(criterion)) {
    ProjectionMetric metric(stats, criterion);
    for (const Group& g : groups) out.push_back(projection_score(g, metric, criterion));
    return out;
  }
  if (scores_layers_only(criterion)) {
    for (const Group& g : groups) out.push_back(layer_score(g, stats, criterion));
    return out;
  }
  if (criterion == Criterion::random) {
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<double> u(0.0, 1.0);
    for (size_t i = 0; i < groups.size(); ++i) out.push_back(u(rng));
    return out;
  }
  for (const Group& g : groups) {
    std::vector<double> deps;
    for (const Slice& s : g.slices) {
      auto it = stats.weights.find(s.tensor);
      SECATEUR_CHECK(it != stats.weights.end(), "[pruning/score] no statistics for '{}'", s.tensor);
      const WeightStats& ws = it->second;
      // A whole tensor (a layer's) counts its input columns for activation, its rows otherwise.
      const int dim = s.dim >= 0 ? s.dim : criterion == Criterion::activation ? 1 : 0;
      const std::array<at::Tensor, 2>* source = nullptr;
      switch (criterion) {
        case Criterion::l1: source = &ws.l1; break;
        case Criterion::l2: source = &ws.l2; break;
        case Criterion::taylor_element1: source = &ws.abs_wg; break;
        case Criterion::taylor_element2: source = &ws.w2f; break;
        case Criterion::taylor_vector: source = &ws.wg; break;
        case Criterion::taylor_mixed: source = &ws.mix; break;
        case Criterion::activation: source = &ws.act; break;
        default: break;   // scored above
      }
      const at::Tensor& v = (*source)[dim];
      if (criterion == Criterion::activation && !v.defined()) continue;   // not an input column
      SECATEUR_CHECK(v.defined(), "[pruning/score] criterion {} has no statistics for '{}' (was calibration run?)",
                     criterion_name(criterion), s.tensor);
      at::Tensor part = s.dim < 0 ? v : v.narrow(0, s.begin, s.end - s.begin);
      if (criterion == Criterion::taylor_vector) part = part.abs();
      if (criterion == Criterion::activation) part = part.sqrt();
      double dep = part.sum().item<double>();
      if (criterion == Criterion::taylor_element2) dep *= 0.5;
      deps.push_back(dep);
    }
    SECATEUR_CHECK(!deps.empty(), "[pruning/score] criterion {} has no statistics for {} {} of layer {} (was "
                   "calibration run?)", criterion_name(criterion), kind_name(g.kind), g.index, g.layer);
    double score = deps.front();
    switch (aggregate) {
      case Aggregate::sum: score = 0; for (double d : deps) score += d; break;
      case Aggregate::prod: score = 1; for (double d : deps) score *= d; break;
      case Aggregate::max: for (double d : deps) score = std::max(score, d); break;
      case Aggregate::last: score = deps.empty() ? 0.0 : deps.back(); break;
    }
    out.push_back(score);
  }
  return out;
}

}  // namespace secateur::pruning
