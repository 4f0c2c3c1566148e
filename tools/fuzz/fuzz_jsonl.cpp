// Instruction data (Alpaca-style JSONL): every line parsed, tokenized and packed into sequences.
#include "runtime/text/tokenizer.h"
#include "runtime/train/data.h"
#include "tools/fuzz/fuzz.h"

using namespace secateur;

extern "C" int LLVMFuzzerInitialize(int*, char***) { return 0; }

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const text::Tokenizer tok = [] {   // the 256 byte tokens and an end of text
    text::TokenizerSpec s;
    for (int b = 0; b < 256; ++b) s.tokens.push_back(text::byte_to_unicode(static_cast<uint8_t>(b)));
    s.tokens.push_back("<|endoftext|>");
    s.token_types.assign(256, text::token_normal);
    s.token_types.push_back(text::token_control);
    s.eos_id = 256;
    return text::Tokenizer(s);
  }();
  const std::string path = fuzz::write_input(data, size, "data.jsonl");
  fuzz::expect_clean([&] {
    constexpr int64_t seq_len = 16;
    const train::TrainData d = train::instruction_data(path, tok, seq_len);
    if (!d.predict.empty() && d.predict.size() != d.tokens.size()) fuzz::finding("targets and tokens differ in length");
    if (d.tokens.size() % seq_len != 0) fuzz::finding("packed data is not whole sequences");
    for (int32_t id : d.tokens) {
      if (id < 0 || id >= tok.vocab_size()) fuzz::finding("a token id outside the vocabulary");
    }
  });
  return 0;
}
