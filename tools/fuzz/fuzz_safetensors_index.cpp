// A sharded checkpoint's model.safetensors.index.json over two real shards: the index JSON, its
// weight_map and the names it assigns to each shard.
#include <ATen/Parallel.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/sum.h>

#include <filesystem>

#include "runtime/io/safetensors.h"
#include "tools/fuzz/fuzz.h"

using namespace secateur;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  at::set_num_threads(1);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace fs = std::filesystem;
  static const std::string dir = [] {
    const std::string d = fuzz::scratch_dir() + "/sharded";
    fs::create_directories(d);
    const at::Tensor x = at::arange(12, at::kFloat).reshape({3, 4});
    io::write_safetensors(d + "/model-00001-of-00002.safetensors", {{"a", x}, {"b", x[0].clone()}});
    io::write_safetensors(d + "/model-00002-of-00002.safetensors", {{"c", x.to(at::kBFloat16)}});
    return d;
  }();
  const std::string index = dir + "/model.safetensors.index.json";
  fs::rename(fuzz::write_input(data, size, "index.json"), index);
  fuzz::expect_clean([&] {
    const io::SafetensorsCheckpoint c(dir);
    for (const std::string& name : c.names()) {
      const at::Tensor t = c.tensor(name);
      (void)at::sum(t.to(at::kFloat)).item<float>();
      (void)c.file_of(name).info(name);
    }
  });
  return 0;
}
