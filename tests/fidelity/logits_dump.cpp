// tests/fidelity/logits_dump.cpp — logits of Secateur's decoder for the token ids in a JSON
// file ([[ids...], ...]), written as float32 safetensors "logits.<i>" [T, V], for
// logits_fidelity.py to compare with transformers. Also checks that decoding with the KV
// cache, one token at a time, reproduces the full forward pass ("cache.<i>" holds those logits).
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "runtime/io/checkpoint.h"
#include "runtime/io/safetensors.h"

int main(int argc, char** argv) {
  if (argc != 5) {
    std::cerr << "usage: logits_dump MODEL DTYPE IDS.json OUT.safetensors\n";
    return 2;
  }
  try {
    using namespace secateur;
    at::NoGradGuard no_grad;
    const model::Decoder m = io::load_decoder(argv[1], at::kCPU, io::parse_dtype(argv[2]));
    std::ifstream in(argv[3]);
    const auto texts = nlohmann::json::parse(in);
    std::vector<std::pair<std::string, at::Tensor>> out;
    for (size_t i = 0; i < texts.size(); ++i) {
      const auto ids_vec = texts[i].get<std::vector<int64_t>>();
      const at::Tensor ids = at::tensor(ids_vec, at::kLong).view({1, -1});        // [1, T]
      out.emplace_back("logits." + std::to_string(i), m.logits(ids).squeeze(0).to(at::kFloat));
      model::KVCache cache;                                                        // prefill half, then step
      const int64_t T = ids.size(1), half = T / 2;
      std::vector<at::Tensor> steps = {m.logits(ids.narrow(1, 0, std::max<int64_t>(half, 1)), &cache).squeeze(0)};
      for (int64_t t = std::max<int64_t>(half, 1); t < T; ++t) steps.push_back(m.logits(ids.narrow(1, t, 1), &cache).squeeze(0));
      out.emplace_back("cache." + std::to_string(i), at::cat(steps, 0).to(at::kFloat));
    }
    io::write_safetensors(argv[4], out);
  } catch (const std::exception& e) {
    std::cerr << "logits_dump: error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
