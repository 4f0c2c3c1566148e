// GGUF: the header, every metadata value (read through the typed getters), the tensor table, the
// dequantisation of every tensor, and the model and tokenizer built from the file.
#include <ATen/Parallel.h>

#include "runtime/io/checkpoint.h"
#include "runtime/io/gguf.h"
#include "runtime/text/tokenizer.h"
#include "tools/fuzz/fuzz.h"

using namespace secateur;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  at::set_num_threads(1);
  return 0;
}

namespace {

void read_value(const io::GgufFile& g, const std::string& key) {
  using T = io::GgufValueType;
  const T type = g.value_type(key);
  if (type == T::STRING) {
    (void)g.get_string(key);
  } else if (type == T::BOOL) {
    (void)g.get_bool(key);
  } else if (type == T::FLOAT32 || type == T::FLOAT64) {
    (void)g.get_float(key);
  } else if (type == T::ARRAY) {
    const T elem = g.array_type(key);
    if (elem == T::STRING) {
      if (g.get_string_array(key).size() != g.array_size(key)) fuzz::finding("string array of the wrong size: " + key);
    } else if (elem == T::FLOAT32 || elem == T::FLOAT64) {
      (void)g.get_float_array(key);
    } else if (elem != T::ARRAY && elem != T::BOOL) {
      (void)g.get_int_array(key);
    }
  } else {
    (void)g.get_int(key);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fuzz::write_input(data, size, "model.gguf");
  fuzz::expect_clean([&] {
    const io::GgufFile g(path);
    for (const std::string& key : g.keys()) fuzz::expect_clean([&] { read_value(g, key); });
    for (const io::GgufTensorInfo& t : g.tensors()) {
      if (t.offset + t.nbytes > size) fuzz::finding("tensor '" + t.name + "' accepted past the end of the file");
      if (!io::ggml_type_dequantizable(t.type) || t.numel() > (1 << 20)) continue;
      const at::Tensor x = g.dequantize(t.name);
      if (x.numel() != t.numel()) fuzz::finding("tensor '" + t.name + "' dequantised to the wrong size");
    }
  });
  fuzz::expect_clean([&] { (void)io::load_model(path); });
  fuzz::expect_clean([&] {
    const text::Tokenizer tok = io::load_tokenizer(path);
    (void)tok.decode(tok.encode("Hello, world! It's 2026 -- \xc3\xa9t\xc3\xa9\n\n  <|im_start|>x"));
  });
  return 0;
}
