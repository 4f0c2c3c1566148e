// One safetensors file: the header length, the JSON header, dtypes, shapes and data offsets, then
// a zero-copy view and a slice of every tensor, read through.
#include <ATen/Parallel.h>
#include <ATen/ops/sum.h>

#include "runtime/io/safetensors.h"
#include "tools/fuzz/fuzz.h"

using namespace secateur;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  at::set_num_threads(1);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fuzz::write_input(data, size, "model.safetensors");
  fuzz::expect_clean([&] {
    const io::SafetensorsFile f(path);
    for (const std::string& name : f.names()) {
      const io::SafetensorsFile::Info& info = f.info(name);
      if (f.data_offset() + info.end > size || info.begin > info.end) {
        fuzz::finding("tensor '" + name + "' accepted outside the data area");
      }
      const at::Tensor t = f.tensor(name);
      if (static_cast<uint64_t>(t.numel()) * t.element_size() != info.end - info.begin) {
        fuzz::finding("tensor '" + name + "' viewed with the wrong size");
      }
      if (t.numel() > 0 && t.is_floating_point()) (void)at::sum(t.to(at::kFloat)).item<float>();
      if (t.dim() > 0) (void)f.slice(name, -1, 0, t.size(-1) / 2);
    }
  });
  return 0;
}
