#include "runtime/io/checkpoint.h"

#include <ATen/ATen.h>

#include <fcntl.h>
#include <fmt/ranges.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "runtime/core/check.h"
#include "runtime/io/atomic_file.h"
#include "runtime/io/gguf.h"
#include "runtime/io/hf_config.h"
#include "runtime/io/safetensors.h"
#include "parallel/collectives.h"

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
  const int64_t layers = g.get_int(key("block_count"));
  const int64_t heads = g.get_int(key("attention.head_count"));
  const int64_t kv = g.get_int(key("attention.head_count_kv"), heads);
  c.hidden = g.get_int(key("embedding_length"));
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
  if (name == "float32") return at::kFloat;
  if (name == "bfloat16") return at::kBFloat16;
  if (name == "float16") return at::kHalf;
  SECATEUR_FAIL("[io] unknown dtype '{}' (allowed: float32, bfloat16, float16)", name);
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

// A slice of a tensor in a safetensors file, read with pread into fresh memory: whole tensors and
// row ranges in one read, column ranges row by row. Reading through the memory mapping instead
// would leave the touched file pages in this rank's resident set (a column slice touches every
// page), and the point of sharded loading is that a rank holds ~1/TP of the weights.
at::Tensor read_slice(const SafetensorsCheckpoint& ck, const std::string& name, int dim, model::Range range) {
  const SafetensorsFile& f = ck.file_of(name);
  const SafetensorsFile::Info& info = ck.info(name);
  const at::ScalarType st = safetensors_scalar_type(info.dtype);
  const int64_t isz = c10::elementSize(st);
  std::vector<int64_t> shape = info.shape;
  int64_t rows = 1, row_bytes = isz, chunk_offset = 0, chunk_bytes;
  if (dim < 0) {                                   // whole tensor: one chunk
    chunk_bytes = isz;
    for (int64_t d : shape) chunk_bytes *= d;
  } else {
    SECATEUR_CHECK(dim < static_cast<int>(shape.size()) && range.end <= shape[dim],
                   "[io/checkpoint] {}: cannot slice '{}' on dim {} at [{}, {})", f.path(), name, dim, range.begin,
                   range.end);
    for (size_t d = dim + 1; d < shape.size(); ++d) row_bytes *= shape[d];   // bytes of one index of `dim`
    for (int d = 0; d < dim; ++d) rows *= shape[d];                           // outer repetitions
    chunk_offset = range.begin * row_bytes;
    chunk_bytes = range.size() * row_bytes;
    row_bytes *= shape[dim];                                                  // stride of one outer step
    shape[dim] = range.size();
  }
  at::Tensor out = at::empty(shape, at::TensorOptions(st));
  const int fd = ::open(f.path().c_str(), O_RDONLY | O_CLOEXEC);
  SECATEUR_CHECK(fd >= 0, "[io/checkpoint] cannot open {}", f.path());
  auto* dst = static_cast<char*>(out.data_ptr());
  const uint64_t base = f.data_offset() + info.begin + chunk_offset;
  for (int64_t r = 0; r < rows && chunk_bytes > 0; ++r) {
    int64_t done = 0;
    while (done < chunk_bytes) {
      const ssize_t got = ::pread(fd, dst + r * chunk_bytes + done, chunk_bytes - done,
                                  static_cast<off_t>(base + r * row_bytes + done));
      if (got <= 0) {
        ::close(fd);
        SECATEUR_FAIL("[io/checkpoint] {}: short read of '{}'", f.path(), name);
      }
      done += got;
    }
  }
  ::close(fd);
  return out;
}

}  // namespace

model::NamedTensors load_shard(const std::string& path, const ModelConfig& config, const model::ShardPlan& plan) {
  if (!ends_with(path, ".gguf") && model::spec_of(config).hf_canonical()) {   // read only this rank's slices
    const fs::path dir = fs::is_directory(path) ? fs::path(path) : fs::path(path).parent_path();
    const SafetensorsCheckpoint ck(dir.string());
    NamedTensors out;
    // Check the whole shapes against the config first: a slice alone could fit by accident.
    for (const auto& [spec, layer, n, shape] : model::weights(config)) {
      SECATEUR_CHECK(ck.has(n), "[io/checkpoint] {}: the config needs tensor '{}', which is missing", path, n);
      SECATEUR_CHECK(ck.info(n).shape == shape, "[io/checkpoint] {}: '{}' has shape {} in the checkpoint, the config needs {}",
                     path, n, fmt::join(ck.info(n).shape, "x"), fmt::join(shape, "x"));
      const auto s = plan.slice_of(n, config);
      out.emplace_back(n, read_slice(ck, n, s.dim, s.range));
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
  for (auto& [name, t] : tensors) t = t.to(device, dtype, /*non_blocking=*/false, /*copy=*/true).contiguous();
  return model::Decoder(config, tensors, tp);
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
  return text::Tokenizer(std::move(s));
}

namespace {

// Everything of an HF directory but the weights.
void write_side_files(const fs::path& dir, const ModelConfig& config, at::ScalarType dtype,
                      const text::Tokenizer* tokenizer) {
  write_json(dir / "config.json", config_to_hf(config, dtype_name(dtype)));
  nlohmann::json gen = {{"do_sample", false}};
  if (config.bos_id >= 0) gen["bos_token_id"] = config.bos_id;
  if (config.eos_id >= 0) gen["eos_token_id"] = config.eos_id;
  write_json(dir / "generation_config.json", gen);
  if (tokenizer) tokenizer->write_hf_files(dir.string());
}

// pwrite all of n bytes at offset, or throw naming the file.
void write_at(int fd, const std::string& path, const char* p, uint64_t n, uint64_t offset) {
  while (n > 0) {
    const ssize_t w = ::pwrite(fd, p, std::min<uint64_t>(n, 1ull << 30), static_cast<off_t>(offset));
    if (w < 0 && errno == EINTR) continue;
    SECATEUR_CHECK(w > 0, "[io/checkpoint] {}: write at offset {} failed: {}", path, offset,
                   w < 0 ? std::strerror(errno) : "no progress");
    p += w;
    n -= static_cast<uint64_t>(w);
    offset += static_cast<uint64_t>(w);
  }
}

}  // namespace

void save_hf_model(const std::string& dir, const ModelConfig& config, const NamedTensors& tensors,
                   at::ScalarType dtype, const text::Tokenizer* tokenizer, uint64_t max_shard_bytes) {
  const fs::path final_dir(dir), tmp_dir = fs::path(dir + ".partial");
  fs::remove_all(tmp_dir);
  fs::create_directories(tmp_dir);
  NamedTensors out;
  for (const auto& [name, t] : tensors) out.emplace_back(name, t.to(at::kCPU, dtype).contiguous());
  out = canonical_to_hf(config, out);
  write_safetensors_dir(tmp_dir.string(), out, max_shard_bytes, {{"format", "pt"}});
  write_side_files(tmp_dir, config, dtype, tokenizer);
  fs::remove_all(final_dir);
  fs::rename(tmp_dir, final_dir);
}

void save_hf_model_parallel(const std::string& dir, const ModelConfig& config, const NamedTensors& parts,
                            const std::vector<model::ShardPlan::TensorSlice>& placement, at::ScalarType dtype,
                            const text::Tokenizer* tokenizer, parallel::Group world, uint64_t max_shard_bytes) {
  SECATEUR_CHECK(model::spec_of(config).hf_canonical(), "[io/checkpoint] {}: a GPT-2 checkpoint is written by one rank "
                 "(save_hf_model), not in parallel", dir);
  SECATEUR_CHECK(parts.size() == placement.size(), "[io/checkpoint] {}: {} parts but {} placements", dir,
                 parts.size(), placement.size());
  const fs::path final_dir(dir), tmp_dir = fs::path(dir + ".partial");
  if (world.rank() == 0) {
    fs::remove_all(tmp_dir);
    fs::create_directories(tmp_dir);
    NamedTensors layout;
    for (const auto& [spec, layer, name, shape] : model::weights(config)) {
      layout.emplace_back(name, at::empty(shape, at::TensorOptions().dtype(dtype).device(at::kMeta)));
    }
    write_safetensors_dir(tmp_dir.string(), layout, max_shard_bytes, {{"format", "pt"}}, /*data=*/false);
    write_side_files(tmp_dir, config, dtype, tokenizer);
  }
  parallel::barrier(world);
  const SafetensorsCheckpoint ck(tmp_dir.string());
  std::map<std::string, int> fds;                      // file -> descriptor, opened once
  try {
    for (size_t i = 0; i < parts.size(); ++i) {
      const auto& [name, t] = parts[i];
      const SafetensorsFile& file = ck.file_of(name);
      const SafetensorsFile::Info& info = file.info(name);
      const auto& place = placement[i];
      std::vector<int64_t> expect = info.shape;
      if (place.dim >= 0) expect[place.dim] = place.range.size();
      SECATEUR_CHECK(t.sizes().vec() == expect && (place.dim < 0 || place.range.end <= info.shape[place.dim]),
                     "[io/checkpoint] {}: part of '{}' has shape [{}], its place in [{}] wants [{}]", dir, name,
                     fmt::join(t.sizes(), ", "), fmt::join(info.shape, ", "), fmt::join(expect, ", "));
      if (t.numel() == 0) continue;
      const at::Tensor c = t.to(at::kCPU, dtype).contiguous();
      auto [it, fresh] = fds.emplace(file.path(), -1);
      if (fresh) {
        it->second = ::open(file.path().c_str(), O_WRONLY | O_CLOEXEC);
        SECATEUR_CHECK(it->second >= 0, "[io/checkpoint] {}: cannot open for writing: {}", file.path(),
                       std::strerror(errno));
      }
      const uint64_t base = file.data_offset() + info.begin, item = c.element_size();
      const char* p = static_cast<const char*>(c.const_data_ptr());
      if (place.dim <= 0) {                            // whole, or a block of rows: one contiguous run
        const uint64_t row = place.dim < 0 ? 0 : static_cast<uint64_t>(c.numel() / c.size(0)) * item;
        write_at(it->second, file.path(), p, c.numel() * item, base + (place.dim < 0 ? 0 : place.range.begin * row));
      } else {                                         // a block of columns: one run per row
        const uint64_t cols = info.shape[1], mine = c.size(1);
        for (int64_t r = 0; r < c.size(0); ++r) {
          write_at(it->second, file.path(), p + r * mine * item, mine * item,
                   base + (r * cols + place.range.begin) * item);
        }
      }
    }
    for (auto& [path, fd] : fds) {
      SECATEUR_CHECK(::fsync(fd) == 0, "[io/checkpoint] {}: fsync failed: {}", path, std::strerror(errno));
      ::close(fd);
      fd = -1;
    }
  } catch (...) {
    for (auto& [path, fd] : fds) {
      if (fd >= 0) ::close(fd);
    }
    throw;
  }
  parallel::barrier(world);
  if (world.rank() == 0) {
    fs::remove_all(final_dir);
    fs::rename(tmp_dir, final_dir);
  }
  parallel::barrier(world);
}

}  // namespace secateur::io
