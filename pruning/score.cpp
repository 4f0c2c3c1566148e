#include "pruning/score.h"

#include <ATen/ATen.h>

#include <random>

#include "runtime/config/choices.h"
#include "runtime/core/check.h"

namespace secateur::pruning {

static_assert(std::size(config::choices::criterion) == static_cast<size_t>(Criterion::activation) + 1);
static_assert(std::size(config::choices::aggregate) == static_cast<size_t>(Aggregate::last) + 1);

const char* criterion_name(Criterion c) { return config::choice_name(config::choices::criterion, c); }

Criterion parse_criterion(const std::string& name) {
  return config::parse_choice<Criterion>(config::choices::criterion, "prune.criterion", name);
}

Aggregate parse_aggregate(const std::string& name) {
  return config::parse_choice<Aggregate>(config::choices::aggregate, "prune.aggregate", name);
}

CalibrationOptions calibration_for(Criterion c) {
  CalibrationOptions o;
  o.first_order = c == Criterion::taylor_element1 || c == Criterion::taylor_vector;
  o.fisher = c == Criterion::taylor_element2;
  o.mixed = c == Criterion::taylor_mixed;
  o.activations = c == Criterion::activation;
  return o;
}

std::string calibration_needs(Criterion c) {
  const CalibrationOptions o = calibration_for(c);
  std::string out;
  for (const auto& [on, name] : {std::pair{o.first_order, "first_order"}, std::pair{o.fisher, "fisher"},
                                 std::pair{o.mixed, "mixed"}, std::pair{o.activations, "activations"}}) {
    if (on) out += (out.empty() ? "" : ",") + std::string(name);
  }
  return out;
}

std::vector<double> score_groups(const std::vector<Group>& groups, const Statistics& stats, Criterion criterion,
                                 Aggregate aggregate, uint64_t seed) {
  std::vector<double> out;
  out.reserve(groups.size());
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
        case Criterion::random: break;
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
