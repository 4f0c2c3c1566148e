#include "pruning/compensate.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <map>

#include "runtime/config/choices.h"
#include "runtime/core/check.h"

namespace secateur::pruning {

static_assert(std::size(config::choices::prune_compensation) == static_cast<size_t>(Compensation::least_squares) + 1);

Compensation parse_compensation(const std::string& name) {
  return config::parse_choice<Compensation>(config::choices::prune_compensation, "prune.compensation", name);
}

const char* compensation_name(Compensation c) { return config::choice_name(config::choices::prune_compensation, c); }

namespace {

at::Tensor indices(const std::vector<int64_t>& v) { return at::tensor(v, at::kLong); }

}  // namespace

Compensated compensate(const model::ModelConfig& config, const model::NamedTensors& tensors,
                       const std::vector<Group>& remove, const Statistics& stats, Compensation how, double ridge,
                       const model::ShardPlan* plan, parallel::Group tp) {
  SECATEUR_CHECK(how != Compensation::none, "[pruning/compensate] no compensation asked for");
  SECATEUR_CHECK(stats.tokens > 0, "[pruning/compensate] compensation needs the calibration's activation means "
                 "(statistics of an older `secateur score`? score again)");
  SECATEUR_CHECK(!tensors.empty(), "[pruning/compensate] no tensors");
  Compensated out{config, tensors, {}};
  model::ModelConfig& with = out.config;
  const model::ArchSpec& arch = model::spec_of(config);
  if (!arch.biased_as.empty()) with.arch = arch.biased_as;
  with.attention_bias = with.mlp_bias = true;

  std::map<std::string, size_t> index;
  for (size_t i = 0; i < tensors.size(); ++i) index[tensors[i].first] = i;
  const at::TensorOptions like = tensors.front().second.options();
  for (const model::Weight& w : model::weights(with)) {   // the biases the flags bring, zero
    if (index.count(w.name)) continue;
    std::vector<int64_t> shape = w.shape;
    const model::Slice cut = plan ? plan->slice_of(w.name, with) : model::Slice{};
    if (cut.dim >= 0) shape[cut.dim] = cut.range.size();
    index[w.name] = out.tensors.size();
    out.tensors.emplace_back(w.name, at::zeros(shape, like));
  }

  std::map<std::string, std::vector<int64_t>> columns;     // output projection -> removed input columns
  for (const Group& g : remove) {
    if (g.kind != GroupKind::neuron && g.kind != GroupKind::query_head && g.kind != GroupKind::kv_group) continue;
    for (const Slice& s : g.slices) {
      if (s.dim != 1) continue;
      for (int64_t j = s.begin; j < s.end; ++j) columns[s.tensor].push_back(j);
    }
  }
  const double n = static_cast<double>(stats.tokens);
  for (auto& [name, removed] : columns) {                  // the same names, in the same order, on every rank
    std::sort(removed.begin(), removed.end());
    removed.erase(std::unique(removed.begin(), removed.end()), removed.end());
    at::Tensor& w = out.tensors.at(index.at(name)).second;  // [out, in] (a TP rank: its input columns)
    const model::Slice cut = plan ? plan->slice_of(name, with) : model::Slice{};
    const bool row_split = cut.dim == 1;
    const int64_t first = row_split ? cut.range.begin : 0;
    const auto it = stats.weights.find(name);
    SECATEUR_CHECK(it != stats.weights.end() && it->second.act_sum[1].defined(), "[pruning/compensate] no activation "
                   "means for '{}'", name);
    const at::Tensor mean = it->second.act_sum[1] / n;      // [in] float64, the whole model's columns
    at::Tensor b;                                           // [out] float64, what the bias gains
    if (how == Compensation::bias) {
      std::vector<int64_t> local, whole;
      for (int64_t j : removed) {
        if (j >= first && j < first + w.size(1)) local.push_back(j - first), whole.push_back(j);
      }
      b = at::mv(w.index_select(1, indices(local).to(w.device())).to(at::kDouble).cpu(), mean.index_select(0, indices(whole)));
      parallel::sum(tp, b);
    } else {
      const auto g = stats.gram.find(name);
      SECATEUR_CHECK(g != stats.gram.end(), "[pruning/compensate] least_squares: no Gram matrix for '{}' (statistics "
                     "without calibration.gram? calibrate again)", name);
      at::Tensor full = w.detach().to(at::kDouble, false, /*copy=*/true).cpu();   // never the model's own
      if (row_split) full = parallel::gather(tp, full.contiguous(), 1);   // every rank solves the whole projection
      const int64_t in = full.size(1);
      std::vector<int64_t> kept;
      for (int64_t j = 0, r = 0; j < in; ++j) {
        if (r < static_cast<int64_t>(removed.size()) && removed[r] == j) ++r;
        else kept.push_back(j);
      }
      const at::Tensor R = indices(removed), K = indices(kept);
      const at::Tensor W_R = full.index_select(1, R);
      if (kept.empty()) {
        b = at::mv(W_R, mean.index_select(0, R));
      } else {
        const at::Tensor cov = g->second / n - at::outer(mean, mean);                // [in, in]
        at::Tensor c_kk = cov.index_select(0, K).index_select(1, K);
        const double damp = ridge * c_kk.diagonal().mean().item<double>();
        c_kk = c_kk + damp * at::eye(c_kk.size(0), c_kk.options());
        const at::Tensor c_kr = cov.index_select(0, K).index_select(1, R);          // [K, R]
        const at::Tensor A = at::linalg_solve(c_kk, c_kr).t();                     // [R, K] = C_RK C_KK⁻¹
        const at::Tensor W_K = full.index_select(1, K) + at::mm(W_R, A);
        b = at::mv(W_R, mean.index_select(0, R) - at::mv(A, mean.index_select(0, K)));
        full.index_copy_(1, K, W_K);
        at::Tensor mine = row_split ? full.narrow(1, first, w.size(1)) : full;
        w = mine.to(w.options()).contiguous();                                      // a new tensor
      }
    }
    const std::string bias_name = model::bias_of(with, name);
    SECATEUR_CHECK(!bias_name.empty(), "[pruning/compensate] a {} model has no bias for '{}'", with.arch, name);
    at::Tensor& bias = out.tensors.at(index.at(bias_name)).second;
    bias = bias + b.to(bias.options());                    // a new tensor: the dense model's stays as it was
  }
  const GroupMaker make(with);
  for (const Group& g : remove) out.remove.push_back(make(g.kind, g.layer, g.index));
  return out;
}

}  // namespace secateur::pruning
