// HF config.json -> ModelConfig, and the round trip: the config written back must read back to
// the very same JSON.
#include <nlohmann/json.hpp>

#include "runtime/io/hf_config.h"
#include "runtime/model/spec.h"
#include "tools/fuzz/fuzz.h"

using namespace secateur;

extern "C" int LLVMFuzzerInitialize(int*, char***) { return 0; }

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fuzz::write_input(data, size, "config.json");
  fuzz::expect_clean([&] {
    const model::ModelConfig c = io::read_hf_config(path);
    (void)model::weights(c);
    const nlohmann::json once = io::config_to_hf(c, "float32");
    const nlohmann::json twice = io::config_to_hf(io::config_from_hf(once, "round trip"), "float32");
    if (once != twice) fuzz::finding("config.json does not survive a round trip: " + once.dump() + " vs " + twice.dump());
  });
  return 0;
}
