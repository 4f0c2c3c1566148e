// HF tokenizer.json: the BPE model, merges, added tokens, normalizer and pre-tokenizer; then
// encoding, decoding, and the files written back, which must encode the same text the same way.
#include <filesystem>

#include "runtime/text/tokenizer.h"
#include "tools/fuzz/fuzz.h"

using namespace secateur;

extern "C" int LLVMFuzzerInitialize(int*, char***) { return 0; }

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fuzz::write_input(data, size, "tokenizer.json");
  const std::string sample = "Hello, world! It's 2026 -- \xc3\xa9t\xc3\xa9 \xe4\xb8\xad\n\n  <|im_start|>x</s>\xff";
  fuzz::expect_clean([&] {
    const text::Tokenizer tok = text::Tokenizer::from_hf_json(path);
    const std::vector<int32_t> ids = tok.encode(sample);
    (void)tok.decode(ids, true);
    const std::string out = fuzz::scratch_dir() + "/written";
    std::filesystem::create_directories(out);
    tok.write_hf_files(out);
    const text::Tokenizer back = text::Tokenizer::from_hf_json(out + "/tokenizer.json");
    if (back.encode(sample) != ids) fuzz::finding("the tokenizer.json written back encodes differently");
  });
  return 0;
}
