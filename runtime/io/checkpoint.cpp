#include "runtime/io/checkpoint.h"

#include <ATen/ATen.h>

#include <fmt/ranges.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "runtime/config/choices.h"
#include "runtime/core/check.h"
#include "runtime/core/hash.h"
#include "runtime/io/atomic_file.h"
#include "runtime/io/gguf.h"
#include "runtime/io/hf_config.h"
#include "runtime/io/safetensors.h"
#include "parallel/collectives.h"
#include "parallel/tensor_parallel/sharded_io.h"

namespace secateur::io {

namespace fs = std::filesystem;
using model::ModelConfig;
using model::NamedTensors;

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// llama.cpp stores q/k rows permuted so RoPE can rotate interleaved pairs; HF rotates halves.
// GGUF row order within a head is (i, half) with half fastest; HF's is (half, i).
at::Tensor unpermute_rope_rows(const at::Tensor& w, int64_t heads) {
  const int64_t rows = w.size(0), cols = w.size(1), hd = rows / heads;
  return w.reshape({heads, hd / 2, 2, cols}).transpose(1, 2).reshape({rows, cols});
}

ModelConfig gguf_config(const GgufFile& g) {
  const std::string& path = g.path();
  const std::string arch = g.get_string("general.architecture");
  const model::ArchSpec* spec = model::find_arch_by_gguf(arch);
  SECATEUR_CHECK(spec != nullptr, "[io/checkpoint] {}: GGUF architecture '{}' is not supported ({})", path, arch,
                 model::gguf_archs());
  const auto key = [&](const char* k) { return arch + "." + k; };
  ModelConfig c;
  c.family = spec->family;
  c.arch = spec->name;
  // Counts checked before they size or divide anything; every layer has tensors in the file.
  const auto count = [&](const char* k, int64_t v, int64_t most) {
    SECATEUR_CHECK(v > 0 && v <= most, "[io/checkpoint] {}: '{}' = {} must be in [1, {}]", path, key(k), v, most);
    return v;
  };
  const int64_t layers = count("block_count", g.get_int(key("block_count")), static_cast<int64_t>(g.tensors().size()));
  const int64_t heads = count("attention.head_count", g.get_int(key("attention.head_count")), int64_t{1} << 20);
  const int64_t kv = g.get_int(key("attention.head_count_kv"), heads);
  c.hidden = count("embedding_length", g.get_int(key("embedding_length")), int64_t{1} << 24);
  c.n_heads.assign(layers, heads);
  c.n_kv_heads.assign(layers, kv);
  c.d_ff.assign(layers, g.get_int(key("feed_forward_length")));
  c.head_dim = g.get_int(key("rope.dimension_count"), c.hidden / heads);
  c.max_positions = g.get_int(key("context_length"), 2048);
  c.rope_theta = g.get_float(key("rope.freq_base"), 10000.0);
  c.norm_eps = g.get_float(key("attention.layer_norm_rms_epsilon"), 1e-5);
  const std::string& embd_name = spec->find(model::Role::embed)->gguf;
  const GgufTensorInfo* embd = g.find(embd_name);
  SECATEUR_CHECK(embd != nullptr, "[io/checkpoint] {}: no tensor '{}'", path, embd_name);
  c.vocab_size = embd->shape.at(0);
  c.tied_embeddings = g.find(spec->find(model::Role::lm_head)->gguf) == nullptr;
  c.bos_id = g.get_int("tokenizer.ggml.bos_token_id", -1);
  c.eos_id = g.get_int("tokenizer.ggml.eos_token_id", -1);
  c.pad_id = g.get_int("tokenizer.ggml.padding_token_id", -1);
  c.validate();
  return c;
}

LoadedModel load_gguf(const std::string& path) {
  const GgufFile g(path);
  const ModelConfig c = gguf_config(g);
  LoadedModel m{c, {}, "gguf"};
  for (const model::Weight& w : model::weights(c)) {           // the spec's GGUF names
    SECATEUR_CHECK(!w.spec->gguf.empty(), "[io/checkpoint] {}: '{}' has no GGUF name in the {} spec", path, w.name,
                   model::spec_of(c).name);
    const std::string from = w.layer < 0 ? w.spec->gguf : fmt::format("blk.{}.{}", w.layer, w.spec->gguf);
    SECATEUR_CHECK(g.find(from) != nullptr, "[io/checkpoint] {}: missing tensor '{}'", path, from);
    at::Tensor t = g.dequantize(from);
    SECATEUR_CHECK(t.sizes() == at::IntArrayRef(w.shape), "[io/checkpoint] {}: tensor '{}' has shape [{}], its "
                   "metadata needs [{}]", path, from, fmt::join(t.sizes(), ", "), fmt::join(w.shape, ", "));
    if (w.spec->gguf_rope_rows) t = unpermute_rope_rows(t, w.shape[0] / c.head_dim);
    m.tensors.emplace_back(w.name, std::move(t));
  }
  return m;
}

// The checkpoint name map of the spec (TensorSpec::hf): a tensor's name in an HF checkpoint, under
// `root` (GPT-2 checkpoints come with and without "transformer.").
std::string hf_name(const model::ArchSpec& a, const model::Weight& w, const std::string& root) {
  if (w.spec->hf.empty()) return w.name;
  return root + (w.layer < 0 ? "" : fmt::format("{}{}.", a.hf_layer_prefix, w.layer)) + w.spec->hf;
}

// The tensors that share w's HF tensor (GPT-2's q, k, v in c_attn), by part.
std::vector<const model::Weight*> parts_of(const std::vector<model::Weight>& all, const model::Weight& w) {
  std::vector<const model::Weight*> parts;
  for (const model::Weight& o : all) {
    if (o.layer != w.layer || o.spec->hf != w.spec->hf || o.spec->hf_part < 0) continue;
    if (static_cast<int>(parts.size()) <= o.spec->hf_part) parts.resize(o.spec->hf_part + 1);
    parts[o.spec->hf_part] = &o;
  }
  return parts;
}

NamedTensors hf_to_canonical(const SafetensorsCheckpoint& ck, const ModelConfig& c) {
  const model::ArchSpec& a = model::spec_of(c);
  const std::vector<model::Weight> all = model::weights(c);
  std::string root = a.hf_prefix;
  for (const model::Weight& w : all) {
    if (w.spec->hf.empty()) continue;
    if (!ck.has(hf_name(a, w, root))) root.clear();
    break;
  }
  NamedTensors t;
  for (const model::Weight& w : all) {
    const std::string n = hf_name(a, w, root);
    if (w.spec->hf.empty()) {                 // canonical; a missing one is named by the Decoder
      if (ck.has(n)) t.emplace_back(w.name, ck.tensor(n));
      continue;
    }
    SECATEUR_CHECK(ck.has(n), "[io/checkpoint] {} checkpoint has no tensor '{}'", a.name, n);
    at::Tensor x = ck.tensor(n);
    if (w.spec->hf_part >= 0) {
      std::vector<int64_t> sizes;
      for (const model::Weight* p : parts_of(all, w)) sizes.push_back(p ? p->shape[0] : 0);
      x = x.split_with_sizes(sizes, w.spec->hf_transposed ? 1 : 0)[w.spec->hf_part];
    }
    t.emplace_back(w.name, w.spec->hf_transposed ? x.t() : x);
  }
  return t;
}

NamedTensors canonical_to_hf(const ModelConfig& c, const NamedTensors& in) {
  const model::ArchSpec& a = model::spec_of(c);
  const std::vector<model::Weight> all = model::weights(c);
  std::map<std::string, at::Tensor> m(in.begin(), in.end());
  NamedTensors t;
  for (const model::Weight& w : all) {
    const std::string n = hf_name(a, w, a.hf_prefix);
    at::Tensor x;
    if (w.spec->hf_part < 0) {
      x = m.at(w.name);
    } else if (w.spec->hf_part == 0) {        // the shared tensor, written once, at its first part
      std::vector<at::Tensor> parts;
      for (const model::Weight* p : parts_of(all, w)) parts.push_back(m.at(p->name));
      x = at::cat(parts, 0);
    } else {
      continue;
    }
    t.emplace_back(n, w.spec->hf_transposed ? x.t() : x);
  }
  return t;
}

LoadedModel load_hf(const std::string& path) {
  const fs::path dir = fs::is_directory(path) ? fs::path(path) : fs::path(path).parent_path();
  LoadedModel m{read_hf_config((dir / "config.json").string()), {}, "hf"};
  m.tensors = hf_to_canonical(SafetensorsCheckpoint(dir.string()), m.config);   // a tied copy of the head is left out
  return m;
}

const char* dtype_name(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return "float32";
    case at::kBFloat16: return "bfloat16";
    case at::kHalf: return "float16";
    default: SECATEUR_FAIL("[io/checkpoint] cannot save weights as {}", c10::toString(t));
  }
}

void write_json(const fs::path& path, const nlohmann::json& j) { write_file_atomic(path.string(), j.dump(2) + "\n"); }

}  // namespace

at::ScalarType parse_dtype(const std::string& name) {
  constexpr at::ScalarType kTypes[] = {at::kFloat, at::kBFloat16, at::kHalf};   // in config::choices::dtype's order
  static_assert(std::size(kTypes) == std::size(config::choices::dtype));
  return kTypes[config::choice_index(config::choices::dtype, "dtype", name)];
}

LoadedModel load_model(const std::string& path) {
  SECATEUR_CHECK(fs::exists(path), "[io/checkpoint] model path {} does not exist", path);
  if (ends_with(path, ".gguf")) return load_gguf(path);
  const fs::path p(path);
  SECATEUR_CHECK(fs::is_directory(p) ? fs::exists(p / "config.json") : p.filename() == "config.json",
                 "[io/checkpoint] {} is neither a .gguf file nor an HF directory with config.json", path);
  return load_hf(path);
}

namespace {

// An HF checkpoint under canonical names: load_shard reads each rank's slices into fresh memory.
bool reads_slices(const std::string& path, const ModelConfig& config) {
  return !ends_with(path, ".gguf") && model::spec_of(config).hf_canonical();
}

}  // namespace

model::NamedTensors load_shard(const std::string& path, const ModelConfig& config, const model::ShardPlan& plan) {
  if (reads_slices(path, config)) {   // read only this rank's slices
    const fs::path dir = fs::is_directory(path) ? fs::path(path) : fs::path(path).parent_path();
    const SafetensorsCheckpoint ck(dir.string());
    NamedTensors out;
    // Check the whole shapes against the config first: a slice alone could fit by accident.
    for (const auto& [spec, layer, n, shape] : model::weights(config)) {
      SECATEUR_CHECK(ck.has(n), "[io/checkpoint] {}: the config needs tensor '{}', which is missing", path, n);
      SECATEUR_CHECK(ck.info(n).shape == shape, "[io/checkpoint] {}: '{}' has shape {} in the checkpoint, the config needs {}",
                     path, n, fmt::join(ck.info(n).shape, "x"), fmt::join(shape, "x"));
      out.emplace_back(n, parallel::read_slice(ck, n, plan.slice_of(n, config)));
    }
    return out;
  }
  LoadedModel m = load_model(path);        // GGUF (quantised rows) and GPT-2 (fused c_attn): whole, then sliced
  for (auto& [name, t] : m.tensors) {
    const auto s = plan.slice_of(name, config);
    if (s.dim >= 0) t = t.narrow(s.dim, s.range.begin, s.range.size());
  }
  return m.tensors;
}

model::Decoder load_decoder(const std::string& path, at::Device device, at::ScalarType dtype, parallel::Group tp) {
  const ModelConfig config = load_config(path);
  const auto plan = model::ShardPlan::make(config, tp.rank(), tp.size());
  model::NamedTensors tensors = load_shard(path, config, plan);
  // Slices read into fresh memory are kept as they are when already right; anything else may be a view
  // of a file mapping, and is copied out of it.
  const bool copy = !reads_slices(path, config);
  for (auto& [name, t] : tensors) t = t.to(device, dtype, /*non_blocking=*/false, copy).contiguous();
  return model::Decoder(config, tensors, tp);
}

uint64_t checkpoint_fingerprint(const std::string& path) {
  SECATEUR_CHECK(fs::exists(path), "[io/checkpoint] model path {} does not exist", path);
  std::vector<fs::path> files;
  if (fs::is_directory(path)) {
    files.push_back(fs::path(path) / "config.json");
    for (const auto& e : fs::directory_iterator(path)) {
      if (e.path().extension() == ".safetensors") files.push_back(e.path());
    }
    std::sort(files.begin() + 1, files.end());
  } else {
    files.push_back(path);
  }
  Fnv1a h;
  std::vector<char> chunk(4096);
  for (const fs::path& f : files) {
    std::ifstream in(f, std::ios::binary);
    SECATEUR_CHECK(in.good(), "[io/checkpoint] cannot read {}", f.string());
    const auto size = static_cast<int64_t>(fs::file_size(f));
    h.text(f.filename().string());
    h.integer(size);
    for (int64_t i = 0; i < 16; ++i) {
      in.seekg(std::max<int64_t>(0, (size - static_cast<int64_t>(chunk.size())) * i / 15));
      in.read(chunk.data(), static_cast<std::streamsize>(chunk.size()));
      h.bytes(chunk.data(), static_cast<size_t>(in.gcount()));
      in.clear();
    }
  }
  return h.value();
}

ModelConfig load_config(const std::string& path) {
  SECATEUR_CHECK(fs::exists(path), "[io/checkpoint] model path {} does not exist", path);
  if (ends_with(path, ".gguf")) return gguf_config(GgufFile(path));
  const fs::path p(path);
  return read_hf_config(((fs::is_directory(p) ? p : p.parent_path()) / "config.json").string());
}

text::Tokenizer load_tokenizer(const std::string& path) {
  if (!ends_with(path, ".gguf")) {
    const fs::path dir = fs::is_directory(path) ? fs::path(path) : fs::path(path).parent_path();
    return text::Tokenizer::from_hf_json((dir / "tokenizer.json").string());
  }
  const GgufFile g(path);
  text::TokenizerSpec s;
  const std::string model = g.get_string("tokenizer.ggml.model");
  SECATEUR_CHECK(model == "gpt2", "[io/checkpoint] {}: tokenizer model '{}' is not supported (gpt2 byte-level BPE)",
                 path, model);
  s.tokens = g.get_string_array("tokenizer.ggml.tokens");
  s.merges = g.get_string_array("tokenizer.ggml.merges");
  if (g.has("tokenizer.ggml.token_type")) {
    for (int64_t t : g.get_int_array("tokenizer.ggml.token_type")) s.token_types.push_back(static_cast<int32_t>(t));
  }
  s.pre = g.get_string("tokenizer.ggml.pre", "gpt2");
  s.bos_id = static_cast<int32_t>(g.get_int("tokenizer.ggml.bos_token_id", -1));
  s.eos_id = static_cast<int32_t>(g.get_int("tokenizer.ggml.eos_token_id", -1));
  s.unk_id = static_cast<int32_t>(g.get_int("tokenizer.ggml.unknown_token_id", -1));
  s.pad_id = static_cast<int32_t>(g.get_int("tokenizer.ggml.padding_token_id", -1));
  s.add_bos = g.get_bool("tokenizer.ggml.add_bos_token", false);
  s.chat_template = g.get_string("tokenizer.chat_template", "");
  const std::string context_key = g.get_string("general.architecture", "") + ".context_length";
  if (g.has(context_key)) s.model_max_length = g.get_int(context_key, s.model_max_length);
  // No normalizer: llama.cpp and transformers' GGUF loader apply none (Qwen2's own tokenizer.json
  // has NFC; the two differ only on text that is not in NFC).
  try {
    return text::Tokenizer(std::move(s));
  } catch (const Error& e) {   // e.g. an unknown tokenizer.ggml.pre: the message lists the known ones
    SECATEUR_FAIL("{} (in {})", e.what(), path);
  }
}

namespace {

// Everything of an HF directory but the weights (with the modeling file when its config needs one).
void write_side_files(const fs::path& dir, const ModelConfig& config, at::ScalarType dtype,
                      const text::Tokenizer* tokenizer) {
  write_json(dir / "config.json", config_to_hf(config, dtype_name(dtype)));
  if (needs_modeling_file(config)) {
    write_file_atomic((dir / (std::string(kModelingModule) + ".py")).string(), modeling_file_source());
  }
  nlohmann::json gen = {{"do_sample", false}};
  if (config.bos_id >= 0) gen["bos_token_id"] = config.bos_id;
  if (config.eos_id >= 0) gen["eos_token_id"] = config.eos_id;
  write_json(dir / "generation_config.json", gen);
  if (tokenizer) tokenizer->write_hf_files(dir.string());
}

}  // namespace

void save_hf_model(const std::string& dir, const ModelConfig& config, const NamedTensors& tensors,
                   at::ScalarType dtype, const text::Tokenizer* tokenizer, uint64_t max_shard_bytes) {
  if (model::spec_of(config).hf_canonical()) {   // one piece converted at a time, never the whole model
    std::map<std::string, const at::Tensor*> by_name;
    for (const auto& [name, t] : tensors) by_name[name] = &t;
    for (const model::Weight& w : model::weights(config)) {
      SECATEUR_CHECK(by_name.count(w.name), "[io/checkpoint] {}: weight '{}' missing from the model", dir, w.name);
    }
    save_hf_model_streamed(dir, config, dtype, tokenizer, max_shard_bytes,
                           [&](const model::Weight& w, int64_t begin, int64_t end) {
                             return by_name.at(w.name)->narrow(0, begin, end - begin);
                           });
    return;
  }
  const fs::path final_dir(dir), tmp_dir = fs::path(dir + ".partial");
  fs::remove_all(tmp_dir);
  fs::create_directories(tmp_dir);
  try {
    NamedTensors out;
    for (const auto& [name, t] : tensors) out.emplace_back(name, t.to(at::kCPU, dtype).contiguous());
    out = canonical_to_hf(config, out);
    write_safetensors_dir(tmp_dir.string(), out, max_shard_bytes, {{"format", "pt"}});
    write_side_files(tmp_dir, config, dtype, tokenizer);
  } catch (...) {                                  // a failed write (disk full): the previous export stays
    std::error_code ec;
    fs::remove_all(tmp_dir, ec);
    throw;
  }
  fs::remove_all(final_dir);
  fs::rename(tmp_dir, final_dir);
}

namespace {

// "<dir>.partial" with the files' layout (headers, data areas of the right size) and the small files.
void write_layout(const fs::path& tmp_dir, const ModelConfig& config, at::ScalarType dtype,
                  const text::Tokenizer* tokenizer, uint64_t max_shard_bytes) {
  fs::remove_all(tmp_dir);
  fs::create_directories(tmp_dir);
  NamedTensors layout;
  for (const auto& [spec, layer, name, shape] : model::weights(config)) {
    layout.emplace_back(name, at::empty(shape, at::TensorOptions().dtype(dtype).device(at::kMeta)));
  }
  write_safetensors_dir(tmp_dir.string(), layout, max_shard_bytes, {{"format", "pt"}}, /*data=*/false);
  write_side_files(tmp_dir, config, dtype, tokenizer);
}

void publish(const fs::path& tmp_dir, const fs::path& final_dir) {
  fs::remove_all(final_dir);
  fs::rename(tmp_dir, final_dir);
}

}  // namespace

void save_hf_model_parallel(const std::string& dir, const ModelConfig& config, const NamedTensors& parts,
                            const std::vector<model::Slice>& placement, at::ScalarType dtype,
                            const text::Tokenizer* tokenizer, parallel::Group world, uint64_t max_shard_bytes) {
  SECATEUR_CHECK(model::spec_of(config).hf_canonical(), "[io/checkpoint] {}: a GPT-2 checkpoint is written by one rank "
                 "(save_hf_model), not in parallel", dir);
  const fs::path tmp_dir = fs::path(dir + ".partial");
  if (world.rank() == 0) write_layout(tmp_dir, config, dtype, tokenizer, max_shard_bytes);
  parallel::barrier(world);
  parallel::write_slices(SafetensorsCheckpoint(tmp_dir.string()), parts, placement, dtype);
  parallel::barrier(world);
  if (world.rank() == 0) publish(tmp_dir, dir);
  parallel::barrier(world);
}

void save_hf_model_streamed(const std::string& dir, const ModelConfig& config, at::ScalarType dtype,
                            const text::Tokenizer* tokenizer, uint64_t max_shard_bytes, const RowSource& rows,
                            uint64_t piece_bytes) {
  SECATEUR_CHECK(model::spec_of(config).hf_canonical(), "[io/checkpoint] {}: a GPT-2 checkpoint cannot be streamed "
                 "(its q/k/v are fused)", dir);
  const fs::path tmp_dir = fs::path(dir + ".partial");
  try {
    write_layout(tmp_dir, config, dtype, tokenizer, max_shard_bytes);
    const SafetensorsCheckpoint layout(tmp_dir.string());
    parallel::SliceWriter writer(layout);
    const auto item = static_cast<int64_t>(c10::elementSize(dtype));
    for (const model::Weight& w : model::weights(config)) {
      int64_t row_bytes = item;
      for (size_t i = 1; i < w.shape.size(); ++i) row_bytes *= w.shape[i];
      const int64_t step = std::max<int64_t>(1, static_cast<int64_t>(piece_bytes) / std::max<int64_t>(1, row_bytes));
      for (int64_t begin = 0; begin < w.shape[0]; begin += step) {
        const int64_t end = std::min(w.shape[0], begin + step);
        writer.write(w.name, rows(w, begin, end), model::Slice{0, {begin, end}}, dtype);
      }
    }
    writer.finish();
  } catch (...) {
    std::error_code ec;
    fs::remove_all(tmp_dir, ec);
    throw;
  }
  publish(tmp_dir, dir);
}

}  // namespace secateur::io
