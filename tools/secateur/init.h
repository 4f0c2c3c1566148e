// tools/secateur/init.h — `secateur init`: a random-weight HF checkpoint of a named shape or of a
// config.json, written piece by piece (a 7B model needs no more memory than one 64 MiB piece),
// so that scale and memory can be measured on the shapes users prune without fetching them.
//
// Weights as transformers initialises a Llama: normal(0, 0.02) for every matrix and embedding,
// ones for norms, zeros for biases. Each piece draws from its own generator, seeded by (--seed,
// tensor name, first row): the same seed gives the same files whatever the piece size.
// With --tokenizer, its files are copied in, the token ids of bos/eos taken from it, and a vocab
// smaller than the tokenizer's is raised to it (said in the log: the ids must index the embedding).
#pragma once
#include <cstdint>
#include <string>

#include "runtime/model/config.h"

namespace secateur::tools {

struct InitOptions {
  std::string shape;               // a name of model::named_shape or a config.json
  std::string out;                 // HF directory to write
  std::string dtype = "bfloat16";
  std::string tokenizer;           // an HF directory or .gguf whose tokenizer goes in ("" = none)
  int64_t shards = 1;              // at most this many safetensors files
  uint64_t seed = 0;
};

int init_checkpoint(const InitOptions& opt);

// The config of a shape: a config.json, a model (HF directory or .gguf), or a model::named_shape.
model::ModelConfig shape_config(const std::string& shape);

}  // namespace secateur::tools
