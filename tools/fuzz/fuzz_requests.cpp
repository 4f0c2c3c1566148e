// Zero-shot request files (gzip or plain JSONL, lm-eval/OLMo style), grouped into examples.
#include "runtime/eval/tasks.h"
#include "tools/fuzz/fuzz.h"

using namespace secateur;

extern "C" int LLVMFuzzerInitialize(int*, char***) { return 0; }

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fuzz::write_input(data, size, "requests.jsonl.gz");
  fuzz::expect_clean([&] {
    for (const eval::Example& e : eval::read_requests(path)) {
      if (e.choices.empty()) fuzz::finding("an example without choices");
    }
  });
  fuzz::expect_clean([&] { (void)eval::read_requests(path, 1); });
  return 0;
}
