// runtime/io/checkpoint.h — whole models in and out: a GGUF file or an HF directory
// (config.json + safetensors) becomes a ModelConfig plus tensors under Secateur's
// canonical names (HF LLaMA names; see runtime/model/decoder.h), and back.
#pragma once
#include <ATen/core/Tensor.h>

#include <functional>
#include <string>

#include "runtime/model/decoder.h"
#include "runtime/text/tokenizer.h"

namespace secateur::io {

struct LoadedModel {
  model::ModelConfig config;
  model::NamedTensors tensors;   // canonical names; CPU; dtype as stored (GGUF: float32 after dequantisation)
  std::string source;            // "gguf" | "hf"
};

// "float32" | "bfloat16" | "float16" -> the ATen dtype; Error naming the allowed values otherwise.
at::ScalarType parse_dtype(const std::string& name);

// path: a .gguf file, or an HF directory / its config.json.
LoadedModel load_model(const std::string& path);

// The ModelConfig alone.
model::ModelConfig load_config(const std::string& path);

// A fingerprint of the checkpoint's files, whatever grid reads them: the .gguf file, or an HF
// directory's config.json and every *.safetensors file — each one's name, size and 16 samples of
// 4 KiB at evenly spaced offsets. Two different weights (another model, a fine-tune, a pruned copy)
// get different fingerprints; a copy of the same files the same one.
uint64_t checkpoint_fingerprint(const std::string& path);

// This rank's slices of every weight (ShardPlan): from HF safetensors only the slices are read;
// a GGUF or a GPT-2 checkpoint is read whole and then sliced.
model::NamedTensors load_shard(const std::string& path, const model::ModelConfig& config,
                               const model::ShardPlan& plan);

// A Decoder on `device` in `dtype` (this rank's shard when tp has more than one rank), with
// weights copied out of any file mapping.
model::Decoder load_decoder(const std::string& path, at::Device device, at::ScalarType dtype,
                            parallel::Group tp = {});

// The tokenizer of a .gguf file (its metadata) or of an HF directory (tokenizer.json).
text::Tokenizer load_tokenizer(const std::string& path);

// Writes an HF directory transformers loads: config.json, model.safetensors (sharded past
// max_shard_bytes), generation_config.json and, if given, tokenizer files. Written into
// "<dir>.partial" and renamed at the end, so a crash never leaves a complete-looking dir.
void save_hf_model(const std::string& dir, const model::ModelConfig& config, const model::NamedTensors& tensors,
                   at::ScalarType dtype, const text::Tokenizer* tokenizer = nullptr,
                   uint64_t max_shard_bytes = 4ull << 30);

// The same directory written by all ranks of `world` at once, each writing only the parts it is
// given (`placement[i]` says where parts[i] lies in the whole tensor; dim -1 = the whole tensor):
// rank 0 writes the files' layout and the small files, then every rank writes its parts in place,
// then rank 0 renames "<dir>.partial" to dir. Together the ranks must cover every tensor of
// `config` (LLaMA family only: GPT-2 fuses q/k/v into one tensor). Collective over world.
void save_hf_model_parallel(const std::string& dir, const model::ModelConfig& config, const model::NamedTensors& parts,
                            const std::vector<model::Slice>& placement, at::ScalarType dtype,
                            const text::Tokenizer* tokenizer, parallel::Group world,
                            uint64_t max_shard_bytes = 4ull << 30);

// Rows [begin, end) along dim 0 of weight w (any dtype; converted when written).
using RowSource = std::function<at::Tensor(const model::Weight& w, int64_t begin, int64_t end)>;

// The same directory written by one process that never holds more than one piece of about
// piece_bytes of it: the layout first, then every weight in pieces of whole rows from `rows`,
// each written in place. Into "<dir>.partial", renamed at the end (removed on failure).
void save_hf_model_streamed(const std::string& dir, const model::ModelConfig& config, at::ScalarType dtype,
                            const text::Tokenizer* tokenizer, uint64_t max_shard_bytes, const RowSource& rows,
                            uint64_t piece_bytes = 64ull << 20);

}  // namespace secateur::io
