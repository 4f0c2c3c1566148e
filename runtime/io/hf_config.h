// runtime/io/hf_config.h — HF config.json <-> ModelConfig.
// Uniform widths give a stock LlamaConfig / GPT2Config that transformers loads as is;
// per-layer widths are kept in "secateur_layer_widths" (heads, kv-heads, d_ff arrays).
#pragma once
#include <nlohmann/json_fwd.hpp>
#include <string>

#include "runtime/model/config.h"

namespace secateur::io {

model::ModelConfig config_from_hf(const nlohmann::json& j, const std::string& where);
nlohmann::json config_to_hf(const model::ModelConfig& c, const std::string& dtype_name);

model::ModelConfig read_hf_config(const std::string& path);          // a config.json file

}  // namespace secateur::io
