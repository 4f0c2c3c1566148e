// tests/fidelity/gguf_dump.cpp — writes every tensor of a GGUF, dequantised to float32, to a
// safetensors file under its GGUF name and in GgufTensorInfo's shape. dequant_fidelity.py compares
// the result with gguf-py. Prints the dequantisation time (whole file, excluding the write) to stderr.
#include <chrono>
#include <cstdio>
#include <exception>
#include <string>
#include <utility>
#include <vector>

#include "runtime/io/gguf.h"
#include "runtime/io/safetensors.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s in.gguf out.safetensors\n", argv[0]);
    return 2;
  }
  try {
    const auto t0 = std::chrono::steady_clock::now();
    secateur::io::GgufFile gguf(argv[1]);
    std::vector<std::pair<std::string, at::Tensor>> out;
    int64_t elements = 0;
    for (const auto& t : gguf.tensors()) {
      out.emplace_back(t.name, gguf.dequantize(t.name));
      elements += t.numel();
    }
    const auto t1 = std::chrono::steady_clock::now();
    secateur::io::write_safetensors(argv[2], out);
    const double ms = std::chrono::duration<double, std::milli>(t1 - t0).count();
    std::fprintf(stderr, "gguf_dump: %zu tensors, %lld elements dequantised in %.1f ms (%.0f Melem/s)\n",
                 out.size(), static_cast<long long>(elements), ms, elements / ms / 1e3);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  return 0;
}
