#include "runtime/model/config.h"

#include <algorithm>

#include "runtime/core/check.h"
#include "runtime/model/spec.h"

namespace secateur::model {

const char* family_name(Family f) { return f == Family::llama ? "llama" : "gpt2"; }

Family parse_family(const std::string& name) {
  if (name == "llama") return Family::llama;
  if (name == "gpt2") return Family::gpt2;
  SECATEUR_FAIL("[model/config] unknown model family '{}' (allowed: llama, gpt2)", name);
}

static bool all_equal(const std::vector<int64_t>& v) {
  return std::adjacent_find(v.begin(), v.end(), std::not_equal_to<>()) == v.end();
}

bool ModelConfig::uniform() const { return all_equal(n_heads) && all_equal(n_kv_heads) && all_equal(d_ff); }

int64_t ModelConfig::n_params() const {
  int64_t n = 0;
  for (const Weight& w : weights(*this)) {
    int64_t e = 1;
    for (int64_t d : w.shape) e *= d;
    n += e;
  }
  return n;
}

void ModelConfig::validate() const {
  SECATEUR_CHECK(vocab_size > 0, "[model/config] vocab_size must be > 0, got {}", vocab_size);
  SECATEUR_CHECK(hidden > 0, "[model/config] hidden size must be > 0, got {}", hidden);
  SECATEUR_CHECK(head_dim > 0, "[model/config] head_dim must be > 0, got {}", head_dim);
  SECATEUR_CHECK(!n_heads.empty(), "[model/config] the model has no layers");
  SECATEUR_CHECK(n_kv_heads.size() == n_heads.size() && d_ff.size() == n_heads.size(),
                 "[model/config] per-layer widths disagree in length: heads {}, kv_heads {}, d_ff {}",
                 n_heads.size(), n_kv_heads.size(), d_ff.size());
  SECATEUR_CHECK(spec_of(*this).family == family, "[model/config] architecture '{}' runs as {}, not {}", arch,
                 family_name(spec_of(*this).family), family_name(family));
  SECATEUR_CHECK(family != Family::llama || head_dim % 2 == 0, "[model/config] RoPE needs an even head_dim, got {}",
                 head_dim);
  for (size_t l = 0; l < n_heads.size(); ++l) {
    SECATEUR_CHECK(n_heads[l] >= 0 && n_kv_heads[l] >= 0 && d_ff[l] >= 0,
                   "[model/config] layer {}: negative width", l);
    SECATEUR_CHECK((n_kv_heads[l] == 0 && n_heads[l] == 0) || (n_kv_heads[l] > 0 && n_heads[l] % n_kv_heads[l] == 0),
                   "[model/config] layer {}: {} query heads do not divide into {} kv-heads", l, n_heads[l],
                   n_kv_heads[l]);
  }
}

ModelConfig ModelConfig::make(Family family, int64_t vocab, int64_t hidden, int64_t layers, int64_t heads,
                              int64_t kv_heads, int64_t d_ff) {
  ModelConfig c;
  c.family = family;
  c.arch = family_name(family);
  c.vocab_size = vocab;
  c.hidden = hidden;
  c.head_dim = hidden / heads;
  c.n_heads.assign(layers, heads);
  c.n_kv_heads.assign(layers, kv_heads);
  c.d_ff.assign(layers, d_ff);
  if (family == Family::gpt2) {
    c.attention_bias = c.mlp_bias = true;
    c.tied_embeddings = true;
  }
  return c;
}

}  // namespace secateur::model
