#include "runtime/io/hf_config.h"

#include <fstream>
#include <type_traits>
#include <nlohmann/json.hpp>

#include "runtime/core/check.h"
#include "runtime/io/modeling_secateur_py.h"
#include "runtime/model/spec.h"

namespace secateur::io {

using nlohmann::json;
using model::Family;
using model::ModelConfig;

namespace {

template <typename T>
T get(const json& j, const char* key, const std::string& where) {
  SECATEUR_CHECK(j.contains(key) && !j[key].is_null(), "[io/hf_config] {}: missing key '{}'", where, key);
  if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {   // not a float cast out of range
    SECATEUR_CHECK(j[key].is_number_integer(), "[io/hf_config] {}: key '{}' must be an integer, got {}", where, key,
                   j[key].dump());
  }
  try {
    return j[key].get<T>();
  } catch (const json::exception& e) {
    SECATEUR_FAIL("[io/hf_config] {}: key '{}' has the wrong type ({})", where, key, e.what());
  }
}

template <typename T>
T get_or(const json& j, const char* key, T fallback, const std::string& where) {
  return j.contains(key) && !j[key].is_null() ? get<T>(j, key, where) : fallback;
}

int64_t first_id(const json& j, const char* key, const std::string& where) {   // eos may be a list in HF configs
  if (!j.contains(key) || j[key].is_null()) return -1;
  const json& v = j[key].is_array() ? (j[key].empty() ? json(-1) : j[key][0]) : j[key];
  SECATEUR_CHECK(v.is_number_integer(), "[io/hf_config] {}: '{}' must be a token id or a list of them, got {}", where,
                 key, j[key].dump());
  return v.get<int64_t>();
}

void read_layer_widths(const json& j, ModelConfig& c, const std::string& where) {
  if (!j.contains("secateur_layer_widths")) return;
  const json& w = j["secateur_layer_widths"];
  const auto read = [&](const char* key, std::vector<int64_t>& dst) {
    auto v = get<std::vector<int64_t>>(w, key, where + " secateur_layer_widths");
    SECATEUR_CHECK(static_cast<int64_t>(v.size()) == c.n_layers(),
                   "[io/hf_config] {}: secateur_layer_widths.{} has {} entries for {} layers", where, key, v.size(),
                   c.n_layers());
    dst = std::move(v);
  };
  read("num_attention_heads", c.n_heads);
  read("num_key_value_heads", c.n_kv_heads);
  read("intermediate_size", c.d_ff);
}

// A layer count, checked before it sizes anything.
int64_t layer_count(const json& j, const char* key, const std::string& where) {
  constexpr int64_t kMaxLayers = 4096;
  const int64_t n = get<int64_t>(j, key, where);
  SECATEUR_CHECK(n >= 1 && n <= kMaxLayers, "[io/hf_config] {}: '{}' = {} must be in [1, {}]", where, key, n, kMaxLayers);
  return n;
}

ModelConfig parse_config(const json& j, const std::string& where) {
  SECATEUR_CHECK(j.is_object(), "[io/hf_config] {}: a config must be a JSON object, not {}", where, j.type_name());
  std::string type = get<std::string>(j, "model_type", where);
  if (type.rfind(kModelTypePrefix, 0) == 0) type.erase(0, std::char_traits<char>::length(kModelTypePrefix));
  const model::ArchSpec* spec = model::find_arch_by_hf_type(type);
  SECATEUR_CHECK(spec != nullptr, "[io/hf_config] {}: model_type '{}' is not supported ({})", where, type,
                 model::hf_model_types());
  ModelConfig c;
  c.family = spec->family;
  c.arch = spec->name;
  if (spec->family == Family::llama) {
    c.vocab_size = get<int64_t>(j, "vocab_size", where);
    c.hidden = get<int64_t>(j, "hidden_size", where);
    const int64_t layers = layer_count(j, "num_hidden_layers", where);
    const int64_t heads = get<int64_t>(j, "num_attention_heads", where);
    const int64_t kv_heads = get_or<int64_t>(j, "num_key_value_heads", heads, where);
    SECATEUR_CHECK(j.contains("head_dim") || (heads >= 1 && c.hidden % heads == 0), "[io/hf_config] {}: "
                   "'num_attention_heads' = {} does not divide 'hidden_size' = {} (and no 'head_dim' is given)", where,
                   heads, c.hidden);
    SECATEUR_CHECK(kv_heads > 0 ? heads % kv_heads == 0 : heads == 0, "[io/hf_config] {}: 'num_key_value_heads' = {} does not "
                   "divide 'num_attention_heads' = {}", where, kv_heads, heads);
    c.n_heads.assign(layers, heads);
    c.n_kv_heads.assign(layers, kv_heads);
    c.d_ff.assign(layers, get<int64_t>(j, "intermediate_size", where));
    c.head_dim = get_or<int64_t>(j, "head_dim", heads > 0 ? c.hidden / heads : 0, where);
    c.max_positions = get_or<int64_t>(j, "max_position_embeddings", 2048, where);
    c.norm_eps = get_or<double>(j, "rms_norm_eps", 1e-6, where);
    c.rope_theta = get_or<double>(j, "rope_theta", 10000.0, where);
    for (const char* key : {"rope_parameters", "rope_scaling"}) {
      if (!j.contains(key) || j[key].is_null()) continue;
      const json& r = j[key];
      const std::string rtype = r.value("rope_type", r.value("type", std::string("default")));
      SECATEUR_CHECK(rtype == "default", "[io/hf_config] {}: {}.rope_type '{}' is not supported (default)", where,
                     key, rtype);
      if (r.contains("rope_theta")) c.rope_theta = r["rope_theta"].get<double>();
    }
    const std::string act = get_or<std::string>(j, "hidden_act", "silu", where);
    SECATEUR_CHECK(act == "silu", "[io/hf_config] {}: hidden_act '{}' is not supported for llama (silu)", where, act);
    c.tied_embeddings = get_or<bool>(j, "tie_word_embeddings", false, where);
    if (spec->hf_llama_keys) {
      c.attention_bias = get_or<bool>(j, "attention_bias", false, where);
      c.mlp_bias = get_or<bool>(j, "mlp_bias", false, where);
    }
  } else {
    c.vocab_size = get<int64_t>(j, "vocab_size", where);
    c.hidden = get<int64_t>(j, "n_embd", where);
    const int64_t layers = layer_count(j, "n_layer", where);
    const int64_t heads = get<int64_t>(j, "n_head", where);
    SECATEUR_CHECK(j.contains("head_dim") || (heads > 0 && c.hidden % heads == 0),
                   "[io/hf_config] {}: n_embd {} is not divisible by n_head {}", where, c.hidden, heads);
    c.n_heads.assign(layers, heads);
    c.n_kv_heads.assign(layers, heads);
    c.d_ff.assign(layers, get_or<int64_t>(j, "n_inner", 4 * c.hidden, where));
    c.head_dim = j.contains("head_dim") ? get<int64_t>(j, "head_dim", where) : c.hidden / heads;
    c.max_positions = get<int64_t>(j, "n_positions", where);
    c.norm_eps = get_or<double>(j, "layer_norm_epsilon", 1e-5, where);
    const std::string act = get_or<std::string>(j, "activation_function", "gelu_new", where);
    SECATEUR_CHECK(act == "gelu_new" || act == "gelu_pytorch_tanh",
                   "[io/hf_config] {}: activation_function '{}' is not supported for gpt2 (gelu_new)", where, act);
    c.tied_embeddings = get_or<bool>(j, "tie_word_embeddings", true, where);
    c.attention_bias = c.mlp_bias = true;
  }
  c.bos_id = first_id(j, "bos_token_id", where);
  c.eos_id = first_id(j, "eos_token_id", where);
  c.pad_id = first_id(j, "pad_token_id", where);
  read_layer_widths(j, c, where);
  c.validate();
  return c;
}

}  // namespace

ModelConfig config_from_hf(const json& j, const std::string& where) {
  try {
    return parse_config(j, where);
  } catch (const json::exception& e) {   // a value of another type deep inside (rope_scaling a list, an id a string)
    SECATEUR_FAIL("[io/hf_config] {}: {}", where, e.what());
  }
}

std::string_view modeling_file_source() { return kModelingSecateurPy; }

bool needs_modeling_file(const ModelConfig& c) {
  const bool stock = c.uniform() && (c.family != Family::gpt2 || c.n_heads.front() * c.head_dim == c.hidden);
  return !stock && !model::spec_of(c).hf_config_class.empty();
}

json config_to_hf(const ModelConfig& c, const std::string& dtype_name) {
  json j;
  const auto id = [](int64_t v) { return v < 0 ? json(nullptr) : json(v); };
  const model::ArchSpec& spec = model::spec_of(c);
  const bool custom = needs_modeling_file(c);
  j["architectures"] = {custom ? "Secateur" + spec.hf_class : spec.hf_class};
  j["model_type"] = custom ? kModelTypePrefix + spec.hf_model_type : spec.hf_model_type;
  if (custom) {
    const std::string prefix = std::string(kModelingModule) + ".Secateur";
    j["auto_map"] = {{"AutoConfig", prefix + spec.hf_config_class}, {"AutoModelForCausalLM", prefix + spec.hf_class}};
  }
  if (c.family == Family::llama) {
    j["vocab_size"] = c.vocab_size;
    j["hidden_size"] = c.hidden;
    j["intermediate_size"] = c.d_ff.front();
    j["num_hidden_layers"] = c.n_layers();
    j["num_attention_heads"] = c.n_heads.front();
    j["num_key_value_heads"] = c.n_kv_heads.front();
    j["head_dim"] = c.head_dim;
    j["max_position_embeddings"] = c.max_positions;
    j["rms_norm_eps"] = c.norm_eps;
    j["rope_theta"] = c.rope_theta;
    j["hidden_act"] = "silu";
    j["attention_dropout"] = 0.0;
    j["initializer_range"] = 0.02;
    if (spec.hf_llama_keys) {
      j["attention_bias"] = c.attention_bias;
      j["mlp_bias"] = c.mlp_bias;
      j["pretraining_tp"] = 1;
    } else {
      j["use_sliding_window"] = false;
    }
  } else {
    j["vocab_size"] = c.vocab_size;
    j["n_embd"] = c.hidden;
    j["n_layer"] = c.n_layers();
    j["n_inner"] = c.d_ff.front();
    if (custom) {   // the heads are head_dim wide (n_embd / n_head is not); n_head only has to divide n_embd
      j["head_dim"] = c.head_dim;
      j["n_head"] = c.hidden % c.head_dim == 0 ? c.hidden / c.head_dim : 1;
    } else {
      j["n_head"] = c.n_heads.front();
    }
    j["n_positions"] = c.max_positions;
    j["layer_norm_epsilon"] = c.norm_eps;
    j["activation_function"] = "gelu_new";
    j["resid_pdrop"] = j["embd_pdrop"] = j["attn_pdrop"] = 0.0;
  }
  j["tie_word_embeddings"] = c.tied_embeddings;
  j["bos_token_id"] = id(c.bos_id);
  j["eos_token_id"] = id(c.eos_id);
  j["pad_token_id"] = id(c.pad_id);
  j["torch_dtype"] = dtype_name;
  j["use_cache"] = true;
  if (!c.uniform() || custom) {
    j["secateur_layer_widths"] = {
        {"num_attention_heads", c.n_heads}, {"num_key_value_heads", c.n_kv_heads}, {"intermediate_size", c.d_ff}};
  }
  return j;
}

ModelConfig read_hf_config(const std::string& path) {
  std::ifstream in(path);
  SECATEUR_CHECK(in.good(), "[io/hf_config] cannot open {}", path);
  json j;
  try {
    j = json::parse(in);
  } catch (const json::exception& e) {
    SECATEUR_FAIL("[io/hf_config] {}: invalid JSON ({})", path, e.what());
  }
  return config_from_hf(j, path);
}

}  // namespace secateur::io
