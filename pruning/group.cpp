#include "pruning/group.h"

#include <algorithm>

#include "runtime/core/check.h"
#include "runtime/model/decoder.h"

namespace secateur::pruning {

using model::Family;
using model::ModelConfig;

const char* kind_name(GroupKind k) {
  switch (k) {
    case GroupKind::neuron: return "neuron";
    case GroupKind::query_head: return "query_head";
    case GroupKind::kv_group: return "kv_group";
    case GroupKind::hidden_channel: return "hidden_channel";
    case GroupKind::layer: return "layer";
  }
  return "?";
}

GroupKind parse_kind(const std::string& name) {
  for (GroupKind k : {GroupKind::neuron, GroupKind::query_head, GroupKind::kv_group, GroupKind::hidden_channel,
                      GroupKind::layer}) {
    if (name == kind_name(k)) return k;
  }
  SECATEUR_FAIL("[pruning] unknown group kind '{}' (allowed: neuron, query_head, kv_group, hidden_channel, layer)",
                name);
}

namespace {

struct Builder {
  const ModelConfig& c;
  const std::vector<std::string>& names;   // every weight the model has, sorted
  Group g;

  bool has(const std::string& n) const { return std::binary_search(names.begin(), names.end(), n); }
  // Adds the slice if the model has that tensor (biases are optional).
  void add(const std::string& tensor, int dim, int64_t begin, int64_t end) {
    if (has(tensor)) g.slices.push_back({tensor, dim, begin, end});
  }
};

int64_t count(const ModelConfig& c, GroupKind kind, int64_t layer) {
  switch (kind) {
    case GroupKind::neuron: return c.d_ff[layer];
    case GroupKind::query_head: return c.n_heads[layer];
    case GroupKind::kv_group: return c.n_kv_heads[layer];
    case GroupKind::hidden_channel: return c.hidden;
    case GroupKind::layer: return 1;
  }
  return 0;
}

}  // namespace

GroupMaker::GroupMaker(const ModelConfig& config) : config_(config) {
  for (const auto& [name, shape] : model::Decoder::weight_shapes(config)) names_.push_back(name);
  std::sort(names_.begin(), names_.end());
}

Group make_group(const ModelConfig& c, GroupKind kind, int64_t layer, int64_t index) {
  return GroupMaker(c)(kind, layer, index);
}

Group GroupMaker::operator()(GroupKind kind, int64_t layer, int64_t index) const {
  const ModelConfig& c = config_;
  const bool model_wide = kind == GroupKind::hidden_channel;
  SECATEUR_CHECK(model_wide || (layer >= 0 && layer < c.n_layers()), "[pruning] layer {} out of range (0..{})", layer,
                 c.n_layers() - 1);
  SECATEUR_CHECK(index >= 0 && index < count(c, kind, model_wide ? 0 : layer),
                 "[pruning] {} {} out of range in layer {}", kind_name(kind), index, layer);
  Builder b{c, names_, {kind, model_wide ? -1 : layer, index, {}}};
  const int64_t D = c.head_dim;
  const std::string p = model_wide ? "" : model::layer_prefix(layer);
  const auto attn = [&](const char* proj, const char* what) { return p + "self_attn." + proj + "_proj." + what; };
  const auto mlp = [&](const char* proj, const char* what) { return p + "mlp." + proj + "_proj." + what; };
  const auto query_heads = [&](int64_t first, int64_t n) {
    b.add(attn("q", "weight"), 0, first * D, (first + n) * D);
    b.add(attn("q", "bias"), 0, first * D, (first + n) * D);
    b.add(attn("o", "weight"), 1, first * D, (first + n) * D);
  };
  switch (kind) {
    case GroupKind::neuron:
      for (const char* proj : {"gate", "up"}) {
        b.add(mlp(proj, "weight"), 0, index, index + 1);
        b.add(mlp(proj, "bias"), 0, index, index + 1);
      }
      b.add(mlp("down", "weight"), 1, index, index + 1);
      break;
    case GroupKind::query_head:
      if (c.family == Family::gpt2) {   // no GQA: the head's keys and values go with it
        for (const char* proj : {"k", "v"}) {
          b.add(attn(proj, "weight"), 0, index * D, (index + 1) * D);
          b.add(attn(proj, "bias"), 0, index * D, (index + 1) * D);
        }
      }
      query_heads(index, 1);
      break;
    case GroupKind::kv_group: {
      for (const char* proj : {"k", "v"}) {
        b.add(attn(proj, "weight"), 0, index * D, (index + 1) * D);
        b.add(attn(proj, "bias"), 0, index * D, (index + 1) * D);
      }
      const int64_t per_group = c.n_heads[layer] / c.n_kv_heads[layer];
      query_heads(index * per_group, per_group);
      break;
    }
    case GroupKind::hidden_channel:
      for (const auto& name : b.names) {
        const auto ends = [&](const char* suffix) {
          const std::string x(suffix);
          return name.size() >= x.size() && name.compare(name.size() - x.size(), x.size(), x) == 0;
        };
        if (name.find("o_proj.") != std::string::npos || name.find("down_proj.") != std::string::npos) {
          b.add(name, 0, index, index + 1);                     // output row of o / down, and their biases
        } else if (ends("_proj.weight") || name.find("embed") != std::string::npos || name == "lm_head.weight") {
          b.add(name, 1, index, index + 1);                     // input column; embedding / head column
        } else if (!ends("_proj.bias")) {
          b.add(name, 0, index, index + 1);                     // every norm's weight and bias
        }
      }
      break;
    case GroupKind::layer:
      for (const auto& name : b.names) {
        if (name.rfind(p, 0) == 0) b.add(name, -1, 0, 0);        // the whole tensor
      }
      break;
  }
  return b.g;
}

std::vector<Group> enumerate_groups(const ModelConfig& c, GroupKind kind) {
  const GroupMaker make(c);
  std::vector<Group> out;
  if (kind == GroupKind::hidden_channel) {
    for (int64_t i = 0; i < c.hidden; ++i) out.push_back(make(kind, -1, i));
    return out;
  }
  for (int64_t l = 0; l < c.n_layers(); ++l) {
    for (int64_t i = 0; i < count(c, kind, l); ++i) out.push_back(make(kind, l, i));
  }
  return out;
}

}  // namespace secateur::pruning
