#include "pruning/decision.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <map>
#include <numeric>
#include <set>

#include "runtime/config/choices.h"
#include "runtime/core/check.h"
#include "runtime/core/hash.h"
#include "runtime/core/phase.h"
#include "runtime/model/spec.h"

namespace secateur::pruning {

using model::ModelConfig;

namespace {

// Parameters a group takes with it: the elements of all its slices.
int64_t group_params(const Group& g, const std::map<std::string, std::vector<int64_t>>& shapes) {
  int64_t n = 0;
  for (const Slice& s : g.slices) {
    const auto& shape = shapes.at(s.tensor);
    int64_t other = 1;
    for (size_t d = 0; d < shape.size(); ++d) {
      if (static_cast<int>(d) != s.dim) other *= shape[d];
    }
    n += s.dim < 0 ? other : (s.end - s.begin) * other;
  }
  return n;
}

struct Candidate {
  Group group;
  double score;
  int64_t params;
};

// Ascending by (score, layer, index): the first ones go first.
void rank(std::vector<Candidate>& c) {
  std::stable_sort(c.begin(), c.end(), [](const Candidate& a, const Candidate& b) {
    if (a.score != b.score) return a.score < b.score;
    if (a.group.layer != b.group.layer) return a.group.layer < b.group.layer;
    return a.group.index < b.group.index;
  });
}

// Of n units with k to go, how many go so that what stays is the multiple of r nearest to n - k,
// and at least r (n below r: k).
int64_t rounded_removal(int64_t n, int64_t k, int64_t r) {
  if (r <= 1 || n < r) return k;
  return n - std::clamp<int64_t>((n - k + r / 2) / r * r, r, n);
}

}  // namespace

uint64_t decision_hash(const std::vector<Group>& removed) {
  Fnv1a h;
  for (const Group& g : removed) {
    h.integer(static_cast<int64_t>(g.kind));
    h.integer(g.layer);
    h.integer(g.index);
  }
  return h.value();
}

void validate(const PruneOptions& opt, const ModelConfig& c) {
  SECATEUR_CHECK(opt.ratio >= 0.0 && opt.ratio < 1.0, "[config] 'prune.ratio' = {} must be in [0, 1)", opt.ratio);
  config::check_choice(config::choices::prune_scope, "prune.scope", opt.scope);
  config::check_choice(config::choices::prune_attention, "prune.attention", opt.attention);
  SECATEUR_CHECK(!(opt.scope == "global" && opt.attention == "query_head"),
                 "[config] 'prune.attention' = query_head needs scope per_layer or uniform (GQA keeps the same "
                 "number of query heads per group); use kv_group with global");
  SECATEUR_CHECK(!((opt.scope == "uniform" || opt.scope == "channel") && !opt.keep_layers.empty()),
                 "[config] 'prune.keep_layers' must be empty with scope {} (every layer gets the same widths)",
                 opt.scope);
  SECATEUR_CHECK(opt.mlp || opt.attention != "none" || opt.scope == "channel" || opt.scope == "layer",
                 "[config] 'prune.mlp' is false and 'prune.attention' is none: nothing to prune");
  SECATEUR_CHECK(!(scores_projection_inputs(opt.criterion) && (opt.scope == "channel" || opt.scope == "layer")),
                 "[config] 'prune.criterion' = {} scores neurons and attention units (the inputs of o_proj and "
                 "down_proj), not the units of scope {}", criterion_name(opt.criterion), opt.scope);
  SECATEUR_CHECK(!scores_layers_only(opt.criterion) || opt.scope == "layer", "[config] 'prune.criterion' = {} ranks "
                 "whole layers: it needs 'prune.scope' = layer, not {}", criterion_name(opt.criterion), opt.scope);
  SECATEUR_CHECK(!(opt.compensation != Compensation::none && (opt.scope == "channel" || opt.scope == "layer")),
                 "[config] 'prune.compensation' = {} compensates removed neurons and attention units, not the units "
                 "of scope {}", compensation_name(opt.compensation), opt.scope);
  SECATEUR_CHECK(opt.ridge > 0, "[config] 'prune.ridge' = {} must be > 0", opt.ridge);
  SECATEUR_CHECK(opt.round_to >= 1, "[config] 'prune.round_to' = {} must be at least 1 (1: any width)", opt.round_to);
  SECATEUR_CHECK(opt.min_keep > 0.0 && opt.min_keep <= 1.0, "[config] 'prune.min_keep' = {} must be in (0, 1]",
                 opt.min_keep);
  SECATEUR_CHECK(opt.keep_first >= 0.0 && opt.keep_first < 1.0, "[config] 'prune.keep_first' = {} must be in [0, 1)",
                 opt.keep_first);
  SECATEUR_CHECK(opt.keep_last >= 0.0 && opt.keep_last < 1.0, "[config] 'prune.keep_last' = {} must be in [0, 1)",
                 opt.keep_last);
  for (int64_t l : opt.keep_layers) {
    SECATEUR_CHECK(l >= -c.n_layers() && l < c.n_layers(), "[config] 'prune.keep_layers' has layer {}, the model has "
                   "0..{} (or -{}..-1 from the end)", l, c.n_layers() - 1, c.n_layers());
  }
  SECATEUR_CHECK(static_cast<int64_t>(kept_layers(opt, c).size()) < c.n_layers() || opt.ratio == 0.0,
                 "[config] 'prune.keep_first', 'prune.keep_last' and 'prune.keep_layers' keep all {} layers: nothing "
                 "can be pruned", c.n_layers());
}

std::vector<int64_t> kept_layers(const PruneOptions& opt, const ModelConfig& c) {
  const int64_t L = c.n_layers();
  std::set<int64_t> keep;
  for (int64_t l : opt.keep_layers) keep.insert(l < 0 ? L + l : l);
  if (opt.scope != "uniform" && opt.scope != "channel") {
    // ⌈f·L⌉, with a margin so that 0.1 × 30 (3.0000000000000004 in binary) keeps 3.
    const auto ends = [&](double f) { return static_cast<int64_t>(std::ceil(f * static_cast<double>(L) - 1e-9)); };
    for (int64_t l = 0; l < std::min(L, ends(opt.keep_first)); ++l) keep.insert(l);
    for (int64_t l = std::max<int64_t>(0, L - ends(opt.keep_last)); l < L; ++l) keep.insert(l);
  }
  return {keep.begin(), keep.end()};
}

namespace {

// What every scope decides from: the model, its statistics, the options and the budget.
struct Budget {
  const ModelConfig& c;
  const Statistics& stats;
  const PruneOptions& opt;
  std::set<int64_t> keep;                                   // dense layers
  std::map<std::string, std::vector<int64_t>> shapes;       // every weight's shape
  int64_t total = 0;                                        // parameters of the model
  double budget = 0;                                        // parameters to remove

  std::vector<Candidate> candidates(const std::vector<Group>& groups) const {
    Phase phase("score");
    const std::vector<double> scores = score_groups(groups, stats, opt.criterion, opt.aggregate, opt.seed);
    std::vector<Candidate> out;
    for (size_t i = 0; i < groups.size(); ++i) out.push_back({groups[i], scores[i], group_params(groups[i], shapes)});
    return out;
  }
};

using ByLayerKind = std::map<std::pair<int64_t, int>, std::vector<Candidate>>;

// channel / layer: one kind, ranked over the whole model; the lowest go while they fit in the budget.
// angular: the longest run of consecutive prunable layers that fits the budget, of all such runs the
// one whose input and output are closest (mean angle; ties: the first).
std::vector<Group> take_span(const Budget& b) {
  const ModelConfig& c = b.c;
  const at::Tensor& angle = b.stats.residual_angle;
  SECATEUR_CHECK(angle.defined() && b.stats.tokens > 0 && angle.size(0) == c.n_layers() + 1, "[pruning] criterion "
                 "angular has no residual-stream statistics of this {}-layer model (was calibration run?)", c.n_layers());
  const GroupMaker make_group(c);
  std::vector<int64_t> params;
  for (int64_t l = 0; l < c.n_layers(); ++l) params.push_back(group_params(make_group(GroupKind::layer, l, 0), b.shapes));
  for (int64_t n = c.n_layers() - 1; n >= 1; --n) {
    int64_t best = -1;
    double best_angle = 0;
    for (int64_t s = 0; s + n <= c.n_layers(); ++s) {
      double taken = 0;
      bool ok = true;
      for (int64_t l = s; l < s + n && ok; ++l) ok = !b.keep.count(l) && (taken += params[l]) <= b.budget;
      if (!ok) continue;
      const double a = angle[s][s + n].item<double>() / static_cast<double>(b.stats.tokens);
      if (best < 0 || a < best_angle) best = s, best_angle = a;
    }
    if (best < 0) continue;
    std::vector<Group> removed;
    for (int64_t l = best; l < best + n; ++l) removed.push_back(make_group(GroupKind::layer, l, 0));
    return removed;
  }
  SECATEUR_CHECK(b.opt.ratio == 0.0, "[config] 'prune.ratio' = {} is below one layer under scope layer: nothing would "
                 "be removed", b.opt.ratio);
  return {};
}

std::vector<Group> take_whole_model(const Budget& b) {
  const ModelConfig& c = b.c;
  if (b.opt.criterion == Criterion::angular) return take_span(b);
  SECATEUR_CHECK(b.opt.criterion != Criterion::sleb || b.opt.ratio <= b.stats.sleb_ratio + 1e-12, "[pruning] the SLEB "
                 "search in these statistics was for prune.ratio {}, less than {}: search again", b.stats.sleb_ratio,
                 b.opt.ratio);
  std::vector<Group> all;
  if (b.opt.scope == "channel") {
    all = enumerate_groups(c, GroupKind::hidden_channel);
  } else {
    const GroupMaker make_group(c);
    for (int64_t l = 0; l < c.n_layers(); ++l) {
      if (!b.keep.count(l)) all.push_back(make_group(GroupKind::layer, l, 0));
    }
  }
  std::vector<Candidate> ranked = b.candidates(all);
  rank(ranked);
  const int64_t most = b.opt.scope == "channel" ? c.hidden - 1 : c.n_layers() - 1;   // something must stay
  std::vector<Group> removed;
  double taken = 0;
  for (const auto& x : ranked) {
    // A layer no search ranked (sleb's kept ones) never goes.
    if (static_cast<int64_t>(removed.size()) >= most || taken + x.params > b.budget || !std::isfinite(x.score)) break;
    taken += x.params;
    removed.push_back(x.group);
  }
  if (b.opt.scope == "channel") {
    const auto n = static_cast<size_t>(rounded_removal(c.hidden, static_cast<int64_t>(removed.size()), b.opt.round_to));
    removed.clear();
    for (size_t i = 0; i < n; ++i) removed.push_back(ranked[i].group);
  }
  SECATEUR_CHECK(b.opt.ratio == 0.0 || !removed.empty(), "[config] 'prune.ratio' = {} is below one {} ({:.4f} of the "
                 "parameters) under scope {}: nothing would be removed", b.opt.ratio, b.opt.scope,
                 ranked.empty() ? 0.0 : static_cast<double>(ranked.front().params) / b.total, b.opt.scope);
  return removed;
}

// Neurons and attention units of every prunable layer, by (layer, kind), scored together so that
// random draws do not depend on the layout.
ByLayerKind layer_candidates(const Budget& b) {
  const ModelConfig& c = b.c;
  const GroupKind attn_kind = b.opt.attention == "query_head" ? GroupKind::query_head : GroupKind::kv_group;
  std::vector<Group> all;
  const GroupMaker make_group(c);
  for (int64_t l = 0; l < c.n_layers(); ++l) {
    if (b.keep.count(l)) continue;
    if (b.opt.mlp) {
      for (int64_t i = 0; i < c.d_ff[l]; ++i) all.push_back(make_group(GroupKind::neuron, l, i));
    }
    if (b.opt.attention != "none") {
      for (int64_t i = 0; i < model::unit_count(c, attn_kind, l); ++i) all.push_back(make_group(attn_kind, l, i));
    }
  }
  ByLayerKind by_layer_kind;
  for (const Candidate& x : b.candidates(all)) by_layer_kind[{x.group.layer, static_cast<int>(x.group.kind)}].push_back(x);
  return by_layer_kind;
}

// global: every candidate ranked together after dividing its score by the mean of its (layer,
// kind); each (layer, kind) keeps at least min_keep of its units.
std::vector<Group> take_global(const Budget& b, const ByLayerKind& by_layer_kind) {
  std::vector<Candidate> pool;
  std::map<std::pair<int64_t, int>, int64_t> left, floor_of;
  for (const auto& [key, cands] : by_layer_kind) {
    double mean = 0;
    for (const auto& x : cands) mean += x.score;
    mean /= static_cast<double>(cands.size());
    for (auto x : cands) {
      x.score = mean > 0 && !standardised(b.opt.criterion) ? x.score / mean : x.score;
      pool.push_back(x);
    }
    left[key] = static_cast<int64_t>(cands.size());
    floor_of[key] = std::max<int64_t>(1, static_cast<int64_t>(std::ceil(b.opt.min_keep * cands.size())));
  }
  rank(pool);
  std::vector<Group> removed;
  double taken = 0;
  for (const auto& x : pool) {
    const auto key = std::make_pair(x.group.layer, static_cast<int>(x.group.kind));
    if (left[key] <= floor_of[key] || taken + x.params > b.budget) continue;
    taken += x.params;
    --left[key];
    removed.push_back(x.group);
  }
  return removed;
}

// per_layer / uniform: the largest fraction f of every (layer, kind) whose floors stay within the
// budget; the MLPs then take the same number of extra neurons each to use up what is left.
std::vector<Group> take_per_layer(const Budget& b, const ByLayerKind& by_layer_kind) {
  const ModelConfig& c = b.c;
  const auto count_for = [&](const std::vector<Candidate>& cands, GroupKind kind, double f, int64_t layer) {
    if (kind == GroupKind::query_head) {                   // the same number from every kv-group
      return static_cast<int64_t>(std::floor(f * c.group_size(layer))) * c.n_kv_heads[layer];
    }
    return static_cast<int64_t>(std::floor(f * static_cast<double>(cands.size())));
  };
  const auto removed_params = [&](double f) {
    double p = 0;
    for (const auto& [key, cands] : by_layer_kind) {
      p += static_cast<double>(count_for(cands, static_cast<GroupKind>(key.second), f, key.first)) *
           static_cast<double>(cands.front().params);
    }
    return p;
  };
  double lo = 0.0, hi = 1.0;                               // f = 1 would empty the layers
  for (int it = 0; it < 60; ++it) {
    const double mid = 0.5 * (lo + hi);
    (removed_params(mid) <= b.budget ? lo : hi) = mid;
  }
  double max_f = 1.0 - 1e-12;
  for (const auto& [key, cands] : by_layer_kind) {        // keep at least one unit of each kind
    const double n = static_cast<double>(static_cast<GroupKind>(key.second) == GroupKind::query_head
                                             ? c.group_size(key.first)
                                             : static_cast<int64_t>(cands.size()));
    max_f = std::min(max_f, (n - 1) / n + 1e-12);
  }
  SECATEUR_CHECK(b.opt.ratio == 0.0 || removed_params(max_f) >= b.budget,
                 "[config] 'prune.ratio' = {} would empty a layer: under scope {} at most {:.4f} of the parameters "
                 "can go", b.opt.ratio, b.opt.scope, removed_params(max_f) / b.total);
  const double f = std::min(lo, max_f);
  // Attention units are coarse (SmolLM2 has 3 kv-groups a layer), so f alone can stop well short
  // of the budget: the MLP of every prunable layer then takes the same number of extra neurons.
  int64_t extra = 0;
  if (b.opt.mlp) {
    int64_t mlp_layers = 0, neuron_params = 0, room = INT64_MAX;
    for (const auto& [key, cands] : by_layer_kind) {
      if (static_cast<GroupKind>(key.second) != GroupKind::neuron) continue;
      ++mlp_layers;
      neuron_params = cands.front().params;
      room = std::min(room, static_cast<int64_t>(cands.size()) - 1 - count_for(cands, GroupKind::neuron, f, key.first));
    }
    if (mlp_layers > 0) {
      const double left = b.budget - removed_params(f);
      extra = std::clamp<int64_t>(static_cast<int64_t>(left / (static_cast<double>(neuron_params) * mlp_layers)), 0,
                                  std::max<int64_t>(room, 0));
    }
  }
  std::vector<Group> removed;
  for (const auto& [key, cands] : by_layer_kind) {
    const auto kind = static_cast<GroupKind>(key.second);
    const int64_t n = count_for(cands, kind, f, key.first) + (kind == GroupKind::neuron ? extra : 0);
    if (kind == GroupKind::query_head) {                   // lowest heads within each kv-group
      const int64_t per = c.group_size(key.first);
      for (int64_t g = 0; g < c.n_kv_heads[key.first]; ++g) {
        std::vector<Candidate> in_group(cands.begin() + g * per, cands.begin() + (g + 1) * per);
        rank(in_group);
        for (int64_t i = 0; i < n / c.n_kv_heads[key.first]; ++i) removed.push_back(in_group[i].group);
      }
    } else {
      std::vector<Candidate> sorted = cands;
      rank(sorted);
      for (int64_t i = 0; i < n; ++i) removed.push_back(sorted[i].group);
    }
  }
  return removed;
}

// round_to: each pruned MLP's removed neurons become the rounded number of its lowest-ranked ones
// (the order both per_layer and global take them in: within a layer, global's normalised score
// ranks as the raw one).
void round_mlp_widths(const Budget& b, const ByLayerKind& by_layer_kind, std::vector<Group>& removed) {
  if (b.opt.round_to <= 1) return;
  std::map<int64_t, int64_t> going;
  for (const Group& g : removed) going[g.layer] += g.kind == GroupKind::neuron;
  removed.erase(std::remove_if(removed.begin(), removed.end(), [](const Group& g) { return g.kind == GroupKind::neuron; }),
                removed.end());
  for (const auto& [key, cands] : by_layer_kind) {
    if (static_cast<GroupKind>(key.second) != GroupKind::neuron) continue;
    std::vector<Candidate> sorted = cands;
    rank(sorted);
    const int64_t n = rounded_removal(static_cast<int64_t>(cands.size()), going[key.first], b.opt.round_to);
    for (int64_t i = 0; i < n; ++i) removed.push_back(sorted[i].group);
  }
}

}  // namespace

Decision decide(const ModelConfig& c, const Statistics& stats, const PruneOptions& opt) {
  validate(opt, c);
  const std::vector<int64_t> kept = kept_layers(opt, c);
  Budget b{c, stats, opt, {kept.begin(), kept.end()}, {}, c.n_params(), 0};
  for (model::Weight& w : model::weights(c)) b.shapes[w.name] = std::move(w.shape);
  b.budget = opt.ratio * static_cast<double>(b.total);
  const int64_t total = b.total;
  std::vector<Group> removed;
  if (opt.scope == "channel" || opt.scope == "layer") {
    removed = take_whole_model(b);
  } else {
    const ByLayerKind by_layer_kind = layer_candidates(b);
    removed = opt.scope == "global" ? take_global(b, by_layer_kind) : take_per_layer(b, by_layer_kind);
    round_mlp_widths(b, by_layer_kind, removed);
  }
  std::sort(removed.begin(), removed.end(), [](const Group& x, const Group& y) {
    return std::make_tuple(x.layer, static_cast<int>(x.kind), x.index) <
           std::make_tuple(y.layer, static_cast<int>(y.kind), y.index);
  });
  Decision d;
  d.removed = removed;
  d.kept_layers = kept;
  d.before = c;
  std::vector<model::UnitRef> units;
  for (const Group& g : removed) units.push_back({g.kind, g.layer, g.index});
  d.after = model::without(c, units);
  d.params_before = total;
  d.params_after = d.after.n_params();
  d.target_ratio = opt.ratio;
  d.achieved_ratio = 1.0 - static_cast<double>(d.params_after) / static_cast<double>(total);
  d.hash = decision_hash(removed);
  return d;
}

nlohmann::json Decision::to_json(const PruneOptions& opt) const {
  nlohmann::json layers = nlohmann::json::array();
  std::vector<int64_t> channels;
  std::set<int64_t> dead;
  for (const Group& g : removed) {
    if (g.kind == GroupKind::hidden_channel) channels.push_back(g.index);
    if (g.kind == GroupKind::layer) dead.insert(g.layer);
  }
  for (int64_t l = 0, k = 0; l < before.n_layers(); ++l) {
    if (dead.count(l)) {
      layers.push_back({{"layer", l}, {"removed", true}});
      continue;
    }
    nlohmann::json entry = {{"layer", l},
                            {"heads", {before.n_heads[l], after.n_heads[k]}},
                            {"kv_heads", {before.n_kv_heads[l], after.n_kv_heads[k]}},
                            {"d_ff", {before.d_ff[l], after.d_ff[k]}}};
    ++k;
    for (const char* kind : {"neuron", "kv_group", "query_head"}) {
      std::vector<int64_t> idx;
      for (const Group& g : removed) {
        if (g.layer == l && std::string(kind_name(g.kind)) == kind) idx.push_back(g.index);
      }
      if (!idx.empty()) entry[std::string("removed_") + kind] = idx;
    }
    layers.push_back(entry);
  }
  return {{"criterion", criterion_name(opt.criterion)},
          {"aggregate", opt.aggregate == Aggregate::sum    ? "sum"
                        : opt.aggregate == Aggregate::prod ? "prod"
                        : opt.aggregate == Aggregate::max  ? "max"
                                                           : "last"},
          {"scope", opt.scope},
          {"attention", opt.attention},
          {"mlp", opt.mlp},
          {"round_to", opt.round_to},
          {"compensation", compensation_name(opt.compensation)},
          {"keep_layers", kept_layers},
          {"ratio_target", target_ratio},
          {"ratio_achieved", achieved_ratio},
          {"params_before", params_before},
          {"params_after", params_after},
          {"groups_removed", removed.size()},
          {"hidden", {before.hidden, after.hidden}},
          {"removed_hidden_channels", channels},
          {"hash", fmt::format("{:016x}", hash)},
          {"layers", layers}};
}

}  // namespace secateur::pruning
