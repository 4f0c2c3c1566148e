// runtime/text/pretokenize.h — splits text into the pre-tokens that BPE then encodes, as HF
// `tokenizers` does for the two pre-tokenizers Secateur supports:
//   "gpt2":   ByteLevel(use_regex=true), i.e. GPT-2's pattern
//             's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//   "smollm": Digits(individual_digits=true) first (every Unicode numeric character alone), then the
//             GPT-2 pattern on each piece separately (so look-ahead stops at a digit).
// PCRE2 in UTF+UCP mode (std::regex has neither \p{..} nor Unicode classes). Invalid UTF-8 bytes are
// never matched and come out as pieces of their own, so the pieces always cover the text exactly.
#pragma once
#include <string>
#include <string_view>
#include <vector>

namespace secateur::text {

class Pretokenizer {
 public:
  explicit Pretokenizer(const std::string& pre);   // "gpt2" or "smollm"; anything else -> Error
  ~Pretokenizer();
  Pretokenizer(const Pretokenizer&) = delete;
  Pretokenizer& operator=(const Pretokenizer&) = delete;

  // Appends the pre-tokens of text to out, in order; they are views into text.
  void split(std::string_view text, std::vector<std::string_view>& out) const;
  const std::string& name() const { return name_; }

 private:
  void split_gpt2(std::string_view text, void* match_data, std::vector<std::string_view>& out) const;

  std::string name_;
  bool individual_digits_ = false;
  void* gpt2_ = nullptr;     // pcre2_code_8*: the GPT-2 pattern
  void* digit_ = nullptr;    // pcre2_code_8*: \p{N}
};

}  // namespace secateur::text
