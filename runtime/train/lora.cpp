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

struct Target {
  const char* name;
  Proj proj;
  const char* module;   // PEFT's module path under the layer
};
constexpr Target kTargets[] = {
    {"q", Proj::q, "self_attn.q_proj"}, {"k", Proj::k, "self_attn.k_proj"},   {"v", Proj::v, "self_attn.v_proj"},
    {"o", Proj::o, "self_attn.o_proj"}, {"gate", Proj::gate, "mlp.gate_proj"}, {"up", Proj::up, "mlp.up_proj"},
    {"down", Proj::down, "mlp.down_proj"},
};

const Target& target(const std::string& name) {
  for (const Target& t : kTargets) {
    if (name == t.name) return t;
  }
  SECATEUR_FAIL("[config] 'recover.lora_targets' has '{}' (allowed: q, k, v, o, gate, up, down)", name);
}

bool row_parallel(Proj p) { return p == Proj::o || p == Proj::down; }

// Whole (in, out) of a projection in layer l of the whole model.
std::pair<int64_t, int64_t> whole_shape(const model::ModelConfig& c, int64_t l, Proj p) {
  const int64_t q = c.n_heads[l] * c.head_dim, kv = c.n_kv_heads[l] * c.head_dim;
  switch (p) {
    case Proj::q: return {c.hidden, q};
    case Proj::k:
    case Proj::v: return {c.hidden, kv};
    case Proj::o: return {q, c.hidden};
    case Proj::gate:
    case Proj::up: return {c.hidden, c.d_ff[l]};
    case Proj::down: return {c.d_ff[l], c.hidden};
  }
  return {0, 0};
}

}  // namespace

int64_t lora_parameter_count(const model::ModelConfig& c, const LoraOptions& opt) {
  int64_t n = 0;
  for (const std::string& t : opt.targets) {
    const Proj p = target(t).proj;
    if (p == Proj::gate && c.family != model::Family::llama) continue;
    for (int64_t l = 0; l < c.n_layers(); ++l) {
      const auto [in, out] = whole_shape(c, l, p);
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
  std::vector<Trainable> out;
  for (int64_t l = 0; l < c.n_layers(); ++l) {
    for (const std::string& t : opt.targets) {
      const Target& tg = target(t);
      if (tg.proj == Proj::gate && c.family != model::Family::llama) continue;   // GPT-2 has no gate
      const auto [in, out_dim] = whole_shape(c, l, tg.proj);
      auto gen = at::make_generator<at::CPUGeneratorImpl>(opt.seed * 1000003ull + l * 16 + static_cast<int>(tg.proj));
      const double bound = 1.0 / std::sqrt(static_cast<double>(std::max<int64_t>(in, 1)));
      at::Tensor a = at::empty({opt.rank, in}, at::kFloat).uniform_(-bound, bound, gen);
      at::Tensor b = at::zeros({out_dim, opt.rank}, at::kFloat);
      // This rank's part (Decoder::Adapter): b's rows of a column-parallel projection, a's columns of a row-parallel one.
      const std::string module = model::layer_prefix(l) + tg.module;
      const auto cut = m.plan().slice_of(module + ".weight", c);
      if (cut.dim == 0) b = b.narrow(0, cut.range.begin, cut.range.size());
      if (cut.dim == 1) a = a.narrow(1, cut.range.begin, cut.range.size());
      const auto opts = at::TensorOptions().dtype(m.dtype()).device(m.device());
      m.set_adapter(l, tg.proj, {a.to(opts).contiguous(), b.to(opts).contiguous(),
                                 opt.alpha / static_cast<double>(opt.rank), opt.dropout});
      Decoder::Adapter& ad = m.adapter(l, tg.proj);
      const bool tp = m.tp() != nullptr;
      const bool rows = row_parallel(tg.proj);
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
    for (const Target& tg : kTargets) {
      Decoder::Adapter& ad = m.adapter(l, tg.proj);
      if (!ad.a.defined()) continue;
      at::Tensor w = weights.at(model::layer_prefix(l) + tg.module + ".weight");
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
    const bool sharded = m.tp() && m.plan().slice_of(named[i].first, m.config()).dim >= 0;
    out.push_back({named[i].first, ptrs[i], sharded, false});
  }
  return out;
}

}  // namespace secateur::train
