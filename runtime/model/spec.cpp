#include "runtime/model/spec.h"

#include <fmt/format.h>

#include <algorithm>
#include <deque>
#include <map>
#include <set>

#include "runtime/core/check.h"

namespace secateur::model {

namespace {

constexpr const char* kProjNames[kProjCount] = {"q", "k", "v", "o", "gate", "up", "down"};

using D = Dim;

// f(tensor, per_layer) for every tensor of the architecture, in order.
template <typename Arch, typename F>
void for_each_spec(Arch& a, F&& f) {
  for (auto& t : a.before) f(t, false);
  for (auto& t : a.layer) f(t, true);
  for (auto& t : a.after) f(t, false);
}

// The attention block and MLP shared by the built-in architectures: HF LLaMA names.
TensorSpec linear(Role role, const char* name, std::vector<Dim> axes, Split split, Proj p, Tap reads,
                  const char* gguf, bool rope_rows = false) {
  TensorSpec t{role, name, std::move(axes), split};
  t.proj = p;
  t.reads = reads;
  t.gguf = gguf;
  t.gguf_rope_rows = rope_rows;
  return t;
}

TensorSpec bias(Role role, const char* name, Dim axis, Split split, Proj p, When when, const char* gguf) {
  TensorSpec t{role, name, {axis}, split, when};
  t.proj = p;
  t.bias = true;
  t.gguf = gguf;
  return t;
}

TensorSpec norm(Role role, const char* name, const char* gguf, bool scale = true) {
  TensorSpec t{role, name, {D::hidden}};
  t.norm = scale;
  t.gguf = gguf;
  return t;
}

std::vector<TensorSpec> attention_block(bool layer_norm) {
  std::vector<TensorSpec> v;
  v.push_back(norm(Role::ln1_w, "input_layernorm.weight", "attn_norm.weight"));
  if (layer_norm) v.push_back(norm(Role::ln1_b, "input_layernorm.bias", "attn_norm.bias", false));
  v.push_back(linear(Role::q_w, "self_attn.q_proj.weight", {D::q, D::hidden}, Split::column, Proj::q, Tap::attn_in,
                     "attn_q.weight", true));
  v.push_back(linear(Role::k_w, "self_attn.k_proj.weight", {D::kv, D::hidden}, Split::column, Proj::k, Tap::attn_in,
                     "attn_k.weight", true));
  v.push_back(linear(Role::v_w, "self_attn.v_proj.weight", {D::kv, D::hidden}, Split::column, Proj::v, Tap::attn_in,
                     "attn_v.weight"));
  v.push_back(linear(Role::o_w, "self_attn.o_proj.weight", {D::hidden, D::q}, Split::row, Proj::o, Tap::attn_out,
                     "attn_output.weight"));
  v.push_back(bias(Role::q_b, "self_attn.q_proj.bias", D::q, Split::column, Proj::q, When::attention_bias, "attn_q.bias"));
  v.push_back(bias(Role::k_b, "self_attn.k_proj.bias", D::kv, Split::column, Proj::k, When::attention_bias, "attn_k.bias"));
  v.push_back(bias(Role::v_b, "self_attn.v_proj.bias", D::kv, Split::column, Proj::v, When::attention_bias, "attn_v.bias"));
  v.push_back(bias(Role::o_b, "self_attn.o_proj.bias", D::hidden, Split::replicated, Proj::o, When::attention_bias,
                   "attn_output.bias"));
  return v;
}

std::vector<TensorSpec> mlp_block(bool gated, bool layer_norm) {
  std::vector<TensorSpec> v;
  v.push_back(norm(Role::ln2_w, "post_attention_layernorm.weight", "ffn_norm.weight"));
  if (layer_norm) v.push_back(norm(Role::ln2_b, "post_attention_layernorm.bias", "ffn_norm.bias", false));
  if (gated) {
    v.push_back(linear(Role::gate_w, "mlp.gate_proj.weight", {D::d_ff, D::hidden}, Split::column, Proj::gate,
                       Tap::mlp_in, "ffn_gate.weight"));
  }
  v.push_back(linear(Role::up_w, "mlp.up_proj.weight", {D::d_ff, D::hidden}, Split::column, Proj::up, Tap::mlp_in,
                     "ffn_up.weight"));
  v.push_back(linear(Role::down_w, "mlp.down_proj.weight", {D::hidden, D::d_ff}, Split::row, Proj::down,
                     Tap::mlp_hidden, "ffn_down.weight"));
  if (gated) {
    v.push_back(bias(Role::gate_b, "mlp.gate_proj.bias", D::d_ff, Split::column, Proj::gate, When::mlp_bias,
                     "ffn_gate.bias"));
  }
  v.push_back(bias(Role::up_b, "mlp.up_proj.bias", D::d_ff, Split::column, Proj::up, When::mlp_bias, "ffn_up.bias"));
  v.push_back(bias(Role::down_b, "mlp.down_proj.bias", D::hidden, Split::replicated, Proj::down, When::mlp_bias,
                   "ffn_down.bias"));
  return v;
}

// GPT-2's own checkpoint names: Conv1D weights stored [in, out], q/k/v fused into c_attn.
void name_gpt2_checkpoint(ArchSpec& a) {
  a.hf_prefix = "transformer.";
  a.hf_layer_prefix = "h.";
  struct Name {
    Role role;
    const char* hf;
    bool transposed;
    int part;
  };
  static const Name names[] = {
      {Role::embed, "wte.weight", false, -1},          {Role::positions, "wpe.weight", false, -1},
      {Role::ln1_w, "ln_1.weight", false, -1},         {Role::ln1_b, "ln_1.bias", false, -1},
      {Role::q_w, "attn.c_attn.weight", true, 0},      {Role::k_w, "attn.c_attn.weight", true, 1},
      {Role::v_w, "attn.c_attn.weight", true, 2},      {Role::o_w, "attn.c_proj.weight", true, -1},
      {Role::q_b, "attn.c_attn.bias", false, 0},       {Role::k_b, "attn.c_attn.bias", false, 1},
      {Role::v_b, "attn.c_attn.bias", false, 2},       {Role::o_b, "attn.c_proj.bias", false, -1},
      {Role::ln2_w, "ln_2.weight", false, -1},         {Role::ln2_b, "ln_2.bias", false, -1},
      {Role::up_w, "mlp.c_fc.weight", true, -1},       {Role::up_b, "mlp.c_fc.bias", false, -1},
      {Role::down_w, "mlp.c_proj.weight", true, -1},   {Role::down_b, "mlp.c_proj.bias", false, -1},
      {Role::norm_w, "ln_f.weight", false, -1},        {Role::norm_b, "ln_f.bias", false, -1},
  };
  for_each_spec(a, [&](TensorSpec& t, bool) {
    for (const Name& n : names) {
      if (n.role != t.role) continue;
      t.hf = n.hf;
      t.hf_transposed = n.transposed;
      t.hf_part = n.part;
    }
  });
}

ArchSpec decoder_arch(const char* name, Family family, bool gpt2) {
  ArchSpec a;
  a.name = name;
  a.family = family;
  a.hf_model_type = name;
  a.hf_class = gpt2 ? "GPT2LMHeadModel" : "LlamaForCausalLM";
  a.hf_config_class = gpt2 ? "GPT2Config" : "LlamaConfig";
  a.layer_prefix = "model.layers.";
  a.gguf_arch = gpt2 ? "" : name;
  a.heads_are_kv = gpt2;
  TensorSpec embed{Role::embed, "model.embed_tokens.weight", {D::vocab, D::hidden}, Split::vocab};
  embed.gguf = "token_embd.weight";
  a.before.push_back(embed);
  if (gpt2) a.before.push_back({Role::positions, "model.embed_positions.weight", {D::positions, D::hidden}});
  a.layer = attention_block(gpt2);
  for (TensorSpec& t : mlp_block(!gpt2, gpt2)) a.layer.push_back(std::move(t));
  a.after.push_back(norm(Role::norm_w, "model.norm.weight", "output_norm.weight"));
  if (gpt2) a.after.push_back(norm(Role::norm_b, "model.norm.bias", "output_norm.bias", false));
  TensorSpec head{Role::lm_head, "lm_head.weight", {D::vocab, D::hidden}, Split::vocab, When::untied};
  head.reads = Tap::head_in;
  head.gguf = "output.weight";
  a.after.push_back(head);
  if (gpt2) name_gpt2_checkpoint(a);
  return a;
}

// Qwen2: LLaMA with biases on q, k and v (always; none on o), and its GGUF q/k rows as in HF
// (llama.cpp runs qwen2 with NEOX-style RoPE, which rotates halves as HF does).
ArchSpec qwen2_arch() {
  ArchSpec a = decoder_arch("qwen2", Family::llama, false);
  a.hf_class = "Qwen2ForCausalLM";
  a.hf_config_class = "Qwen2Config";
  a.hf_llama_keys = false;
  a.biased_as = "llama";
  std::vector<TensorSpec> layer;
  for (TensorSpec& t : a.layer) {
    if (t.role == Role::o_b) continue;
    if (t.role == Role::q_b || t.role == Role::k_b || t.role == Role::v_b) t.when = When::always;
    t.gguf_rope_rows = false;
    layer.push_back(std::move(t));
  }
  a.layer = std::move(layer);
  return a;
}

// Stable addresses: Weight and Located point into the registry.
std::deque<ArchSpec>& registry() {
  static std::deque<ArchSpec> r = [] {
    std::deque<ArchSpec> d;
    d.push_back(decoder_arch("llama", Family::llama, false));
    d.push_back(decoder_arch("gpt2", Family::gpt2, true));
    d.push_back(qwen2_arch());
    return d;
  }();
  return r;
}

template <typename F>
std::string list_of(F&& field) {
  std::string s;
  for (const ArchSpec& a : registry()) {
    const std::string v = field(a);
    if (!v.empty()) s += (s.empty() ? "" : ", ") + v;
  }
  return s;
}

std::string known_archs() { return list_of([](const ArchSpec& a) { return a.name; }); }


}  // namespace

const char* proj_name(Proj p) { return kProjNames[static_cast<int>(p)]; }

std::vector<std::string> proj_names() { return {std::begin(kProjNames), std::end(kProjNames)}; }

Proj parse_proj(const std::string& name, const std::string& key) {
  for (int i = 0; i < kProjCount; ++i) {
    if (name == kProjNames[i]) return static_cast<Proj>(i);
  }
  SECATEUR_FAIL("[config] '{}' has '{}' (allowed: {})", key, name, fmt::join(kProjNames, ", "));
}

const TensorSpec* ArchSpec::find(Role role) const {
  const TensorSpec* found = nullptr;
  for_each_spec(*this, [&](const TensorSpec& t, bool) {
    if (!found && t.role == role) found = &t;
  });
  return found;
}

bool ArchSpec::hf_canonical() const {
  bool canonical = true;
  for_each_spec(*this, [&](const TensorSpec& t, bool) { canonical = canonical && t.hf.empty(); });
  return canonical;
}

void register_arch(ArchSpec spec) {
  for (const ArchSpec& a : registry()) {
    SECATEUR_CHECK(a.name != spec.name && a.hf_model_type != spec.hf_model_type,
                   "[model/spec] architecture '{}' (model_type '{}') is already registered", spec.name,
                   spec.hf_model_type);
  }
  for_each_spec(spec, [&](const TensorSpec& t, bool) {
    SECATEUR_CHECK(t.split == Split::replicated || t.axes.size() > (t.split == Split::row ? 1u : 0u),
                   "[model/spec] {}: '{}' is split on an axis it does not have", spec.name, t.name);
  });
  registry().push_back(std::move(spec));
}

const ArchSpec& find_arch(const std::string& name) {
  for (const ArchSpec& a : registry()) {
    if (a.name == name) return a;
  }
  SECATEUR_FAIL("[model/spec] unknown architecture '{}' (known: {})", name, known_archs());
}

const ArchSpec* find_arch_by_hf_type(const std::string& model_type) {
  for (const ArchSpec& a : registry()) {
    if (a.hf_model_type == model_type) return &a;
  }
  return nullptr;
}

const ArchSpec* find_arch_by_gguf(const std::string& gguf_arch) {
  for (const ArchSpec& a : registry()) {
    if (!a.gguf_arch.empty() && a.gguf_arch == gguf_arch) return &a;
  }
  return nullptr;
}

std::string hf_model_types() { return list_of([](const ArchSpec& a) { return a.hf_model_type; }); }
std::string gguf_archs() { return list_of([](const ArchSpec& a) { return a.gguf_arch; }); }

const ArchSpec& spec_of(const ModelConfig& c) { return find_arch(c.arch.empty() ? family_name(c.family) : c.arch); }

bool present(const TensorSpec& t, const ModelConfig& c) {
  switch (t.when) {
    case When::always: return true;
    case When::attention_bias: return c.attention_bias;
    case When::mlp_bias: return c.mlp_bias;
    case When::untied: return !c.tied_embeddings;
  }
  return false;
}

int64_t extent(const ModelConfig& c, Dim d, int64_t l) {
  switch (d) {
    case Dim::vocab: return c.vocab_size;
    case Dim::positions: return c.max_positions;
    case Dim::hidden: return c.hidden;
    case Dim::q: return c.n_heads.at(l) * c.head_dim;
    case Dim::kv: return c.n_kv_heads.at(l) * c.head_dim;
    case Dim::d_ff: return c.d_ff.at(l);
  }
  return 0;
}

std::string layer_prefix(const ModelConfig& c, int64_t layer) {
  return fmt::format("{}{}.", spec_of(c).layer_prefix, layer);
}

std::string tensor_name(const ModelConfig& c, const TensorSpec& t, int64_t layer) {
  return layer < 0 ? t.name : layer_prefix(c, layer) + t.name;
}

std::vector<Weight> weights(const ModelConfig& c) {
  const ArchSpec& a = spec_of(c);
  std::vector<Weight> out;
  const auto add = [&](const TensorSpec& t, int64_t l) {
    if (!present(t, c)) return;
    std::vector<int64_t> shape;
    for (Dim d : t.axes) shape.push_back(extent(c, d, l));
    out.push_back({&t, l, tensor_name(c, t, l), std::move(shape)});
  };
  for (const TensorSpec& t : a.before) add(t, -1);
  for (int64_t l = 0; l < c.n_layers(); ++l) {
    for (const TensorSpec& t : a.layer) add(t, l);
  }
  for (const TensorSpec& t : a.after) add(t, -1);
  return out;
}

std::optional<Located> locate(const ModelConfig& c, const std::string& name) {
  const ArchSpec& a = spec_of(c);
  const std::string& p = a.layer_prefix;
  if (name.rfind(p, 0) == 0) {
    const size_t dot = name.find('.', p.size());
    if (dot == std::string::npos || dot == p.size()) return std::nullopt;
    int64_t l = 0;
    for (size_t i = p.size(); i < dot; ++i) {
      if (name[i] < '0' || name[i] > '9') return std::nullopt;
      l = l * 10 + (name[i] - '0');
      if (l > 1'000'000) return std::nullopt;
    }
    const std::string rest = name.substr(dot + 1);
    for (const TensorSpec& t : a.layer) {
      if (t.name == rest) return Located{&t, l};
    }
    return std::nullopt;
  }
  for (const auto* list : {&a.before, &a.after}) {
    for (const TensorSpec& t : *list) {
      if (t.name == name) return Located{&t, -1};
    }
  }
  return std::nullopt;
}

std::string renumber(const ModelConfig& c, const std::string& name, int64_t to) {
  const auto at = locate(c, name);
  SECATEUR_CHECK(at && at->layer >= 0, "[model/spec] '{}' is not a layer tensor of a {} model", name, spec_of(c).name);
  return tensor_name(c, *at->spec, to);
}

const TensorSpec* proj_spec(const ModelConfig& c, Proj p) {
  for (const TensorSpec& t : spec_of(c).layer) {
    if (t.proj == p && !t.bias) return &t;
  }
  return nullptr;
}

std::string proj_weight(const ModelConfig& c, int64_t layer, Proj p) {
  const TensorSpec* t = proj_spec(c, p);
  return t ? tensor_name(c, *t, layer) : "";
}

std::string bias_of(const ModelConfig& c, const std::string& name) {
  const auto at = locate(c, name);
  if (!at || !at->spec->proj) return "";
  for (const TensorSpec& t : spec_of(c).layer) {
    if (t.bias && t.proj == at->spec->proj && present(t, c)) return tensor_name(c, t, at->layer);
  }
  return "";
}

std::vector<std::string> readers(const ModelConfig& c, int64_t layer, Tap tap) {
  const ArchSpec& a = spec_of(c);
  std::vector<std::string> out;
  if (tap == Tap::head_in) {                       // the LM head's weight: the embedding when tied
    for (const auto* list : {&a.before, &a.after}) {
      for (const TensorSpec& t : *list) {
        if (c.tied_embeddings ? t.role == Role::embed : t.reads == Tap::head_in) out.push_back(t.name);
      }
    }
    return out;
  }
  for (const TensorSpec& t : a.layer) {
    if (t.reads == tap && present(t, c)) out.push_back(tensor_name(c, t, layer));
  }
  return out;
}

int64_t unit_count(const ModelConfig& c, Unit u, int64_t layer) {
  switch (u) {
    case Unit::neuron: return c.d_ff.at(layer);
    case Unit::query_head: return c.n_heads.at(layer);
    case Unit::kv_group: return c.n_kv_heads.at(layer);
    case Unit::hidden_channel: return c.hidden;
    case Unit::layer: return 1;
  }
  return 0;
}

ModelConfig without(const ModelConfig& c, const std::vector<UnitRef>& removed) {
  const bool heads_are_kv = spec_of(c).heads_are_kv;
  std::set<int64_t> layers_gone, channels_gone;
  std::map<int64_t, std::set<int64_t>> heads_gone, kv_gone, neurons_gone;
  for (const UnitRef& r : removed) {
    switch (r.unit) {
      case Unit::layer: layers_gone.insert(r.layer); break;
      case Unit::neuron: neurons_gone[r.layer].insert(r.index); break;
      case Unit::hidden_channel: channels_gone.insert(r.index); break;
      case Unit::query_head:
        heads_gone[r.layer].insert(r.index);
        if (heads_are_kv) kv_gone[r.layer].insert(r.index);
        break;
      case Unit::kv_group: {
        kv_gone[r.layer].insert(r.index);
        const int64_t per = c.group_size(r.layer);
        for (int64_t h = r.index * per; h < (r.index + 1) * per; ++h) heads_gone[r.layer].insert(h);
        break;
      }
    }
  }
  for (const auto& [l, heads] : heads_gone) {      // GQA: the same number of query heads in every kv-group
    if (heads_are_kv) continue;
    const int64_t per = c.group_size(l);
    std::map<int64_t, int64_t> left;               // kv-group -> query heads left
    for (int64_t g = 0; g < c.n_kv_heads[l]; ++g) {
      if (!kv_gone[l].count(g)) left[g] = per;
    }
    for (int64_t h : heads) {
      if (left.count(h / per)) --left[h / per];
    }
    std::set<int64_t> counts;
    for (const auto& [g, n] : left) counts.insert(n);
    SECATEUR_CHECK(counts.size() <= 1 && (counts.empty() || *counts.begin() > 0),
                   "[pruning/apply] layer {}: query heads removed unevenly across kv-groups (GQA needs the same "
                   "number of query heads in every group, at least one; remove whole kv-groups instead)", l);
  }
  SECATEUR_CHECK(static_cast<int64_t>(channels_gone.size()) < c.hidden,
                 "[pruning/apply] removing all {} hidden channels leaves no model", c.hidden);
  ModelConfig out = c;
  for (const auto& [l, s] : neurons_gone) out.d_ff[l] -= static_cast<int64_t>(s.size());
  for (const auto& [l, s] : heads_gone) out.n_heads[l] -= static_cast<int64_t>(s.size());
  for (const auto& [l, s] : kv_gone) out.n_kv_heads[l] -= static_cast<int64_t>(s.size());
  out.hidden -= static_cast<int64_t>(channels_gone.size());
  for (auto it = layers_gone.rbegin(); it != layers_gone.rend(); ++it) {
    out.n_heads.erase(out.n_heads.begin() + *it);
    out.n_kv_heads.erase(out.n_kv_heads.begin() + *it);
    out.d_ff.erase(out.d_ff.begin() + *it);
  }
  return out;
}

}  // namespace secateur::model
