// Every ggml dequantiser on arbitrary blocks: the first byte picks the type, the rest are its
// blocks. A length that is not a whole number of blocks must be refused.
#include <vector>

#include "runtime/io/dequant.h"
#include "tools/fuzz/fuzz.h"

using namespace secateur;

extern "C" int LLVMFuzzerInitialize(int*, char***) { return 0; }

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::vector<uint32_t> types = [] {
    std::vector<uint32_t> t;
    for (uint32_t id = 0; id < 64; ++id) {
      if (io::ggml_type_dequantizable(id)) t.push_back(id);
    }
    return t;
  }();
  if (size < 1) return 0;
  const uint32_t type = types[data[0] % types.size()];
  const io::GgmlTypeTraits* tr = io::ggml_type_traits(type);
  const int64_t blocks = static_cast<int64_t>(size - 1) / tr->type_size;
  const int64_t n = blocks * tr->block_size;
  std::vector<float> out(static_cast<size_t>(n) + 1);
  fuzz::expect_clean([&] { io::dequantize_row(type, data + 1, out.data(), n); });
  if (tr->block_size > 1 && n > 0) {
    bool refused = false;
    try {
      io::dequantize_row(type, data + 1, out.data(), n - 1);
    } catch (const Error&) {
      refused = true;
    }
    if (!refused) fuzz::finding(std::string("a partial block of ") + tr->name + " was decoded");
  }
  for (size_t i = 0; i + 1 < size; i += 2) {
    const uint16_t h = static_cast<uint16_t>(data[i] | data[i + 1] << 8);
    (void)io::half_to_float(h);
    (void)io::bf16_to_float(h);
  }
  return 0;
}
