// runtime/io/hf_config.h — HF config.json <-> ModelConfig.
// Uniform widths give a stock LlamaConfig / Qwen2Config / GPT2Config that transformers loads as is.
// Per-layer widths are kept in "secateur_layer_widths" (heads, kv-heads, d_ff arrays), and the
// config names the classes of modeling_secateur.py (written beside it) in "auto_map", under the
// model_type "secateur_<type>": AutoModelForCausalLM loads it with trust_remote_code=True.
#pragma once
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>

#include "runtime/model/config.h"

namespace secateur::io {

inline constexpr char kModelTypePrefix[] = "secateur_";
inline constexpr char kModelingModule[] = "modeling_secateur";   // <dir>/modeling_secateur.py
std::string_view modeling_file_source();          // runtime/io/modeling_secateur.py, compiled in

// Stock transformers cannot describe the model with its own config (widths differ per layer, or
// GPT-2's heads are narrower than n_embd / n_head), and the architecture has a Secateur class.
bool needs_modeling_file(const model::ModelConfig& c);

model::ModelConfig config_from_hf(const nlohmann::json& j, const std::string& where);
nlohmann::json config_to_hf(const model::ModelConfig& c, const std::string& dtype_name);

model::ModelConfig read_hf_config(const std::string& path);          // a config.json file

}  // namespace secateur::io
