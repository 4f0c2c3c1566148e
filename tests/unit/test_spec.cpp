// The model spec is the one place that knows an architecture: an architecture defined only here
// (LLaMA with its blocks and MLP under other names) runs, is pruned, sharded and exported by the
// unchanged pruning/, runtime/model and runtime/io code, and matches LLaMA weight for weight.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <set>

#include "pruning/apply.h"
#include "pruning/decision.h"
#include "pruning/group.h"
#include "runtime/io/checkpoint.h"
#include "runtime/model/spec.h"

using namespace secateur;
using model::ModelConfig;
using pruning::GroupKind;

namespace {

// LLaMA with "blocks.<l>." for "model.layers.<l>." and "ffn.w1/w3/w2" for the gate/up/down projections.
const char* kArch = "llama_ffn_test";

std::string llama_name_of(const std::string& name) {
  std::string n = name;
  const auto swap = [&](const std::string& from, const std::string& to) {
    const size_t at = n.find(from);
    if (at != std::string::npos) n.replace(at, from.size(), to);
  };
  swap("blocks.", "model.layers.");
  swap("ffn.w1.", "mlp.gate_proj.");
  swap("ffn.w3.", "mlp.up_proj.");
  swap("ffn.w2.", "mlp.down_proj.");
  return n;
}

void register_test_arch() {
  static const bool done = [] {
    model::ArchSpec a = model::find_arch("llama");
    a.name = kArch;
    a.hf_model_type = kArch;
    a.hf_class = "LlamaFfnTestForCausalLM";
    a.gguf_arch = "";
    a.layer_prefix = "blocks.";
    for (model::TensorSpec& t : a.layer) {
      for (const auto& [from, to] : std::map<std::string, std::string>{
               {"mlp.gate_proj.", "ffn.w1."}, {"mlp.up_proj.", "ffn.w3."}, {"mlp.down_proj.", "ffn.w2."}}) {
        if (t.name.rfind(from, 0) == 0) t.name = to + t.name.substr(from.size());
      }
    }
    model::register_arch(std::move(a));
    return true;
  }();
  (void)done;
}

ModelConfig test_config(const std::string& arch) {
  auto c = ModelConfig::make(model::Family::llama, 53, 32, 3, 8, 4, 20);
  c.head_dim = 4;
  c.tied_embeddings = false;
  c.arch = arch;
  return c;
}

// The same weights under LLaMA's names.
model::NamedTensors as_llama(const model::NamedTensors& w) {
  model::NamedTensors out;
  for (const auto& [n, t] : w) out.emplace_back(llama_name_of(n), t);
  return out;
}

}  // namespace

TEST(ModelSpec, AnArchitectureDefinedInTheTestRunsAsItsLlamaTwin) {
  register_test_arch();
  const ModelConfig c = test_config(kArch);
  const auto m = model::Decoder::with_random_weights(c, 5);
  std::set<std::string> names;
  for (const auto& [n, t] : m.named_tensors()) names.insert(n);
  EXPECT_TRUE(names.count("blocks.2.ffn.w2.weight"));
  EXPECT_FALSE(names.count("model.layers.2.mlp.down_proj.weight"));
  const model::Decoder twin(test_config("llama"), as_llama(m.named_tensors()));
  at::NoGradGuard ng;
  const at::Tensor ids = at::randint(c.vocab_size, {2, 9}, at::kLong);
  EXPECT_TRUE(at::equal(m.logits(ids), twin.logits(ids)));
  EXPECT_EQ(c.n_params(), twin.config().n_params());
  EXPECT_THAT(model::proj_weight(c, 1, model::Proj::up), "blocks.1.ffn.w3.weight");
  EXPECT_EQ(model::readers(c, 0, model::Tap::mlp_in), (std::vector<std::string>{"blocks.0.ffn.w1.weight",
                                                                               "blocks.0.ffn.w3.weight"}));
}

TEST(ModelSpec, AnArchitectureDefinedInTheTestIsPrunedShardedAndExported) {
  register_test_arch();
  const ModelConfig c = test_config(kArch), llama = test_config("llama");
  const auto dense = model::Decoder::with_random_weights(c, 7).named_tensors();

  // Groups couple the renamed tensors exactly as LLaMA's.
  const pruning::Group n = pruning::make_group(c, GroupKind::neuron, 1, 3);
  const pruning::Group twin_n = pruning::make_group(llama, GroupKind::neuron, 1, 3);
  ASSERT_EQ(n.slices.size(), twin_n.slices.size());
  for (size_t i = 0; i < n.slices.size(); ++i) {
    EXPECT_EQ(llama_name_of(n.slices[i].tensor), twin_n.slices[i].tensor);
    EXPECT_EQ(n.slices[i].dim, twin_n.slices[i].dim);
  }

  // One decision (random scores, kv-groups and neurons, a layer kept dense), applied to both.
  pruning::PruneOptions opt;
  opt.criterion = pruning::Criterion::random;
  opt.ratio = 0.25;
  opt.keep_layers = {-1};
  const pruning::Decision d = pruning::decide(c, pruning::Statistics{}, opt);
  const pruning::Decision twin_d = pruning::decide(llama, pruning::Statistics{}, opt);
  EXPECT_EQ(d.hash, twin_d.hash);
  EXPECT_EQ(d.kept_layers, (std::vector<int64_t>{2}));
  const pruning::Pruned p = pruning::apply(c, dense, d.removed);
  const pruning::Pruned twin_p = pruning::apply(llama, as_llama(dense), twin_d.removed);
  EXPECT_EQ(p.config.d_ff, twin_p.config.d_ff);
  EXPECT_EQ(p.config.n_kv_heads, twin_p.config.n_kv_heads);
  EXPECT_LT(p.config.d_ff[0], c.d_ff[0]);
  std::map<std::string, at::Tensor> want(twin_p.tensors.begin(), twin_p.tensors.end());
  for (const auto& [name, t] : p.tensors) EXPECT_TRUE(at::equal(t, want.at(llama_name_of(name)))) << name;

  // Shards (TP 2) by the spec's split, pruned in place, tile the whole pruned tensors.
  std::map<std::string, at::Tensor> whole(p.tensors.begin(), p.tensors.end());
  for (int r = 0; r < 2; ++r) {
    const auto plan = model::ShardPlan::make(c, r, 2);
    EXPECT_EQ(plan.slice_of("blocks.0.ffn.w1.weight", c).dim, 0);
    EXPECT_EQ(plan.slice_of("blocks.0.ffn.w2.weight", c).dim, 1);
    EXPECT_EQ(plan.slice_of("blocks.0.post_attention_layernorm.weight", c).dim, -1);
    model::NamedTensors local;
    for (const auto& [name, t] : dense) {
      const auto cut = plan.slice_of(name, c);
      local.emplace_back(name, cut.dim < 0 ? t : t.narrow(cut.dim, cut.range.begin, cut.range.size()));
    }
    const pruning::Pruned part = pruning::apply(c, local, d.removed, &plan);
    for (size_t i = 0; i < part.tensors.size(); ++i) {
      const auto& [name, t] = part.tensors[i];
      const auto& place = part.placement[i];
      const at::Tensor expect =
          place.dim < 0 ? whole.at(name) : whole.at(name).narrow(place.dim, place.range.begin, place.range.size());
      EXPECT_TRUE(at::equal(t, expect)) << name << " rank " << r;
    }
  }

  // Exported as an HF directory and read back (whole and as TP shards) under the same names.
  const std::string dir = (std::filesystem::temp_directory_path() / "secateur-spec-test-export").string();
  io::save_hf_model(dir, p.config, p.tensors, at::kFloat);
  const io::LoadedModel back = io::load_model(dir);
  EXPECT_EQ(back.config.arch, kArch);
  EXPECT_EQ(back.config.d_ff, p.config.d_ff);
  ASSERT_EQ(back.tensors.size(), p.tensors.size());
  for (const auto& [name, t] : back.tensors) EXPECT_TRUE(at::equal(t, whole.at(name))) << name;
  const auto plan = model::ShardPlan::make(back.config, 1, 2);
  for (const auto& [name, t] : io::load_shard(dir, back.config, plan)) {
    const auto cut = plan.slice_of(name, back.config);
    EXPECT_TRUE(at::equal(t, cut.dim < 0 ? whole.at(name) : whole.at(name).narrow(cut.dim, cut.range.begin,
                                                                                   cut.range.size())))
        << name;
  }
  const model::Decoder reloaded(back.config, back.tensors), pruned(p.config, p.tensors);
  at::NoGradGuard ng;
  const at::Tensor ids = at::randint(c.vocab_size, {1, 7}, at::kLong);
  EXPECT_TRUE(at::equal(reloaded.logits(ids), pruned.logits(ids)));
  std::filesystem::remove_all(dir);
}
