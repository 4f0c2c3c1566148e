// runtime/model/shapes.h — the published shapes of well-known models, by name, for checkpoints
// with random weights (`secateur init --shape`, `bench train --model random:<name>`): what scale
// and memory are measured on when the real weights are too large to fetch.
#pragma once
#include <string>

#include "runtime/model/config.h"

namespace secateur::model {

// llama-3.2-1b, llama-2-7b, llama-2-13b, llama-3-8b, llama-2-70b, qwen2.5-0.5b, qwen2.5-1.5b (each as in its
// config.json on the hub; Llama-3's RoPE scaling is left out). Error listing the names otherwise.
ModelConfig named_shape(const std::string& name);
std::string shape_names();   // "llama-3.2-1b, llama-2-7b, ...", for help and errors

}  // namespace secateur::model
