#include "runtime/train/lora.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <map>

#include "runtime/core/check.h"

namespace secateur::train {

using model::Decoder;
using Proj = Decoder::Proj;

namespace {

// The targets as projections; Error naming an unknown one.
std::vector<Proj> targets(const LoraOptions& opt) {
  std::vector<Proj> out;
  for (const std::string& t : opt.targets) out.push_back(model::parse_proj(t, "recover.lora_targets"));
  return out;
}

// Whole (in, out) of a projection in layer l of the whole model.
std::pair<int64_t, int64_t> whole_shape(const model::ModelConfig& c, int64_t l, const model::TensorSpec& w) {
  return {model::extent(c, w.axes[1], l), model::extent(c, w.axes[0], l)};
}

// PEFT's module path of a projection: its weight's name without ".weight".
std::string module_of(const model::ModelConfig& c, int64_t l, Proj p) {
  std::string name = model::proj_weight(c, l, p);
  const std::string suffix = ".weight";
  if (name.size() > suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0) {
    name.resize(name.size() - suffix.size());
  }
  return name;
}

}  // namespace

int64_t lora_parameter_count(const model::ModelConfig& c, const LoraOptions& opt) {
  int64_t n = 0;
  for (const Proj p : targets(opt)) {
    const model::TensorSpec* w = model::proj_spec(c, p);
    if (!w) continue;                                       // the architecture has no such projection
    for (int64_t l = 0; l < c.n_layers(); ++l) {
      const auto [in, out] = whole_shape(c, l, *w);
      n += opt.rank * (in + out);
    }
  }
  return n;
}

std::vector<Trainable> add_lora(Decoder& m, const LoraOptions& opt) {
  SECATEUR_CHECK(opt.rank > 0, "[config] 'recover.lora_rank' = {} must be > 0", opt.rank);
  SECATEUR_CHECK(opt.dropout >= 0 && opt.dropout < 1, "[config] 'recover.lora_dropout' = {} must be in [0, 1)",
                 opt.dropout);
  const model::ModelConfig& c = m.config();
  const std::vector<Proj> projs = targets(opt);
  std::vector<Trainable> out;
  for (int64_t l = 0; l < c.n_layers(); ++l) {
    for (const Proj p : projs) {
      const model::TensorSpec* w = model::proj_spec(c, p);
      if (!w) continue;                                     // the architecture has no such projection (GPT-2's gate)
      const auto [in, out_dim] = whole_shape(c, l, *w);
      auto gen = at::make_generator<at::CPUGeneratorImpl>(opt.seed * 1000003ull + l * 16 + static_cast<int>(p));
      const double bound = 1.0 / std::sqrt(static_cast<double>(std::max<int64_t>(in, 1)));
      at::Tensor a = at::empty({opt.rank, in}, at::kFloat).uniform_(-bound, bound, gen);
      at::Tensor b = at::zeros({out_dim, opt.rank}, at::kFloat);
      // This rank's part (Decoder::Adapter): b's rows of a column-parallel projection, a's columns of a row-parallel one.
      const std::string module = module_of(c, l, p);
      const auto cut = m.plan().slice_of(model::proj_weight(c, l, p), c);
      if (cut.dim == 0) b = b.narrow(0, cut.range.begin, cut.range.size());
      if (cut.dim == 1) a = a.narrow(1, cut.range.begin, cut.range.size());
      const auto opts = at::TensorOptions().dtype(m.dtype()).device(m.device());
      m.set_adapter(l, p, {a.to(opts).contiguous(), b.to(opts).contiguous(),
                           opt.alpha / static_cast<double>(opt.rank), opt.dropout});
      Decoder::Adapter& ad = m.adapter(l, p);
      const bool tp = !m.tp().alone();
      const bool rows = w->split == model::Split::row;
      out.push_back({module + ".lora_A.weight", &ad.a, tp && rows, tp && !rows});
      out.push_back({module + ".lora_B.weight", &ad.b, tp && !rows, tp && rows});
    }
  }
  return out;
}

void merge_lora(Decoder& m) {
  std::map<std::string, at::Tensor> weights;
  for (const auto& [name, t] : m.named_tensors()) weights[name] = t;
  for (int64_t l = 0; l < m.config().n_layers(); ++l) {
    for (int p = 0; p < model::kProjCount; ++p) {
      Decoder::Adapter& ad = m.adapter(l, static_cast<Proj>(p));
      if (!ad.a.defined()) continue;
      at::Tensor w = weights.at(model::proj_weight(m.config(), l, static_cast<Proj>(p)));
      if (w.numel() > 0) w.add_(at::matmul(ad.b.detach(), ad.a.detach()) * ad.scale);
      ad = {};
    }
  }
}

std::vector<Trainable> all_weights(Decoder& m) {
  std::vector<Trainable> out;
  const auto named = m.named_tensors();
  const auto ptrs = m.parameters();
  for (size_t i = 0; i < ptrs.size(); ++i) {
    const bool sharded = !m.tp().alone() && m.plan().slice_of(named[i].first, m.config()).dim >= 0;
    out.push_back({named[i].first, ptrs[i], sharded, false});
  }
  return out;
}

}  // namespace secateur::train
