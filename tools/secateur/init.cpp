// tools/secateur/init.cpp — see init.h.
#include "tools/secateur/init.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <filesystem>
#include <iostream>
#include <optional>

#include "runtime/core/check.h"
#include "runtime/core/hash.h"
#include "runtime/io/checkpoint.h"
#include "runtime/io/hf_config.h"
#include "runtime/io/safetensors.h"
#include "runtime/model/shapes.h"
#include "runtime/model/spec.h"

namespace secateur::tools {

namespace {

at::Tensor random_rows(const model::Weight& w, int64_t begin, int64_t end, uint64_t seed) {
  std::vector<int64_t> shape = w.shape;
  shape[0] = end - begin;
  if (w.spec->norm) return at::ones(shape);
  if (w.spec->bias) return at::zeros(shape);
  Fnv1a h;
  h.integer(static_cast<int64_t>(seed));
  h.text(w.name);
  h.integer(begin);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(h.value());
  return at::empty(shape).normal_(0.0, 0.02, gen);
}

}  // namespace

model::ModelConfig shape_config(const std::string& shape) {
  namespace fs = std::filesystem;
  if (shape.size() > 5 && shape.substr(shape.size() - 5) == ".json") return io::read_hf_config(shape);
  if (fs::exists(shape)) return io::load_config(shape);
  return model::named_shape(shape);
}

int init_checkpoint(const InitOptions& opt) {
  SECATEUR_CHECK(!opt.shape.empty() && !opt.out.empty(), "[init] give --shape and --out");
  SECATEUR_CHECK(opt.shards >= 1, "[init] --shards must be >= 1, got {}", opt.shards);
  const auto t0 = std::chrono::steady_clock::now();
  model::ModelConfig c = shape_config(opt.shape);
  c.validate();
  const at::ScalarType dtype = io::parse_dtype(opt.dtype);
  std::optional<text::Tokenizer> tok;
  if (!opt.tokenizer.empty()) {
    tok = io::load_tokenizer(opt.tokenizer);
    if (tok->vocab_size() > c.vocab_size) {
      spdlog::warn("[init] the tokenizer of {} has {} tokens: vocab_size {} raised to it", opt.tokenizer,
                   tok->vocab_size(), c.vocab_size);
      c.vocab_size = tok->vocab_size();
    }
    c.bos_id = tok->spec().bos_id;
    c.eos_id = tok->spec().eos_id;
    c.pad_id = tok->spec().pad_id;
  }
  std::vector<uint64_t> sizes;
  uint64_t total = 0;
  for (const model::Weight& w : model::weights(c)) {
    uint64_t n = c10::elementSize(dtype);
    for (int64_t d : w.shape) n *= static_cast<uint64_t>(d);
    sizes.push_back(n);
    total += n;
  }
  const uint64_t max_shard = io::max_shard_bytes_for(sizes, opt.shards);
  spdlog::info("[init] {}: {} parameters ({:.2f} GB in {}) -> {}", opt.shape, c.n_params(), total / 1e9, opt.dtype,
               opt.out);
  io::save_hf_model_streamed(opt.out, c, dtype, tok ? &*tok : nullptr, max_shard,
                             [&](const model::Weight& w, int64_t b, int64_t e) { return random_rows(w, b, e, opt.seed); });
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::cout << fmt::format("{}: {} parameters, {:.2f} GB written in {:.1f} s\n", opt.out, c.n_params(), total / 1e9, s);
  return 0;
}

}  // namespace secateur::tools
