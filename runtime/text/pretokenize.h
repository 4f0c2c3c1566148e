// runtime/text/pretokenize.h — splits text into the pre-tokens that BPE then encodes, as HF
// `tokenizers` does for the three pre-tokenizers Secateur supports:
//   "gpt2":   ByteLevel(use_regex=true), i.e. GPT-2's pattern kGpt2Pattern;
//   "smollm": Digits(individual_digits=true) first (every Unicode numeric character alone), then the
//             GPT-2 pattern on each piece separately (so look-ahead stops at a digit);
//   "qwen2":  Split(kQwen2Pattern, behavior=isolated, invert=false), then ByteLevel(use_regex=false).
// The patterns are kept as HF spells them (Oniguruma syntax, what tokenizer.json carries) and turned
// into PCRE2 (UTF+UCP mode; std::regex has neither \p{..} nor Unicode classes) with \s, \S, \p{L} and
// \p{N} spelled out to match exactly the code points Oniguruma's classes match (pretokenize.cpp).
// Invalid UTF-8 bytes are never matched and come out as pieces of their own, so the pieces always
// cover the text exactly.
#pragma once
#include <string>
#include <string_view>
#include <vector>

namespace secateur::text {

// GPT-2's pattern (HF's ByteLevel pre-tokenizer with use_regex=true).
inline constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// Qwen2's pattern, copied from PRETOKENIZE_REGEX in transformers 5.23's
// models/qwen2/tokenization_qwen2.py (Qwen2Tokenizer's Split pre-tokenizer); transformers'
// integrations/gguf/gguf_tokenizer_mapping.py imports the same constant for GGUF files with
// tokenizer.ggml.pre = "qwen2". Unlike GPT-2's: contractions in any case, one digit per piece, a
// word may take one leading non-letter (not only a space), and newlines stick to the run before them.
inline constexpr std::string_view kQwen2Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// The pre-tokenizer names Pretokenizer accepts, in the order error messages list them.
const std::vector<std::string>& pretokenizer_names();

// An HF (Oniguruma) pattern as PCRE2 source that matches the same code points: \s, \S, \p{L} and
// \p{N} become explicit classes; anything else is copied. Error for a \P{..} or a \p{..} other than
// L and N (there is no table for it).
std::string hf_pattern_to_pcre2(std::string_view hf_pattern);

class Pretokenizer {
 public:
  explicit Pretokenizer(const std::string& pre);   // one of pretokenizer_names(); anything else -> Error
  ~Pretokenizer();
  Pretokenizer(const Pretokenizer&) = delete;
  Pretokenizer& operator=(const Pretokenizer&) = delete;

  // Appends the pre-tokens of text to out, in order; they are views into text.
  void split(std::string_view text, std::vector<std::string_view>& out) const;
  const std::string& name() const { return name_; }

 private:
  void split_regex(std::string_view text, void* match_data, std::vector<std::string_view>& out) const;

  std::string name_;
  bool individual_digits_ = false;
  void* regex_ = nullptr;    // pcre2_code_8*: the GPT-2 or Qwen2 pattern
  void* digit_ = nullptr;    // pcre2_code_8*: \p{N} (smollm only)
};

}  // namespace secateur::text
