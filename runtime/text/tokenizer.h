// runtime/text/tokenizer.h — byte-level BPE (GPT-2 family) that reproduces Hugging Face
// `tokenizers` ids exactly, plus reading and writing the HF tokenizer.json / tokenizer_config.json.
// A Tokenizer is built from a TokenizerSpec (the lead's GGUF glue fills one from the GGUF
// tokenizer arrays) or from an HF tokenizer.json. Pre-tokenisation lives in pretokenize.h,
// the HF file formats in hf_tokenizer_json.cpp. No LibTorch here.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace secateur::text {

// GGUF token types (llama.cpp's LLAMA_TOKEN_TYPE_*).
enum TokenType : int32_t { token_normal = 1, token_unknown = 2, token_control = 3, token_user_defined = 4,
                           token_unused = 5, token_byte = 6 };

struct TokenizerSpec {
  std::vector<std::string> tokens;      // byte-level token strings (GPT-2 bytes_to_unicode mapping); id = index
  std::vector<int32_t> token_types;     // GGUF token types: 1 normal, 3 control, 4 user-defined, ...; empty = all normal
  std::vector<std::string> merges;      // "left right", rank = index
  std::string pre = "gpt2";             // pre-tokenizer: "gpt2", "smollm" or "qwen2" (pretokenize.h)
  std::string normalizer;               // "" (none) or "NFC" (normalize.h), applied to the text between added tokens
  int32_t bos_id = -1, eos_id = -1, unk_id = -1, pad_id = -1;
  bool add_bos = false;                 // prepend BOS in encode()
  std::string chat_template;            // carried into tokenizer_config.json when non-empty
  int64_t model_max_length = 8192;      // tokenizer_config.json's model_max_length (SmolLM2's context)
};

class Pretokenizer;   // pretokenize.h

// Control tokens (type 3) are HF added tokens with special=true; user-defined tokens (type 4) are
// added tokens with special=false. Both are cut out of the raw text before normalisation and
// pre-tokenisation (HF's normalized=false), in one leftmost-longest, non-overlapping scan, no
// stripping; with parse_special=false a control-token match is left as plain text (and still hides
// shorter overlapping matches), exactly as HF does with encode_special_tokens=true. All methods are
// const and safe to call from several threads.
class Tokenizer {
 public:
  explicit Tokenizer(TokenizerSpec spec);
  static Tokenizer from_hf_json(const std::string& path);              // an HF tokenizer.json (BPE, ByteLevel)
  void write_hf_files(const std::string& dir) const;                   // dir/tokenizer.json + dir/tokenizer_config.json

  std::vector<int32_t> encode(std::string_view text, bool parse_special = true) const;
  // Raw bytes (no U+FFFD replacement, so a prefix of a multi-byte character survives); added tokens
  // are written as their text; skip_special drops control tokens, as HF's skip_special_tokens.
  std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) const;

  int32_t vocab_size() const;
  const std::string& token(int32_t id) const;
  int32_t token_id(const std::string& token) const;                    // -1 if absent
  int32_t token_type(int32_t id) const;                                // TokenType of id
  bool is_special(int32_t id) const { return token_type(id) == token_control; }
  const TokenizerSpec& spec() const;

 private:
  struct Merge { int32_t rank; int32_t new_id; };
  struct WordCache;   // pre-token -> ids, one per encode() call
  void bpe_word(std::string_view word, std::vector<int32_t>& out) const;
  void encode_plain(std::string_view text, std::vector<int32_t>& out, WordCache& cache) const;
  void split_added(std::string_view text, bool parse_special,
                   std::vector<std::pair<std::string_view, int32_t>>& pieces) const;

  TokenizerSpec spec_;
  std::unordered_map<std::string, int32_t> ids_;          // token string -> id
  std::unordered_map<uint64_t, Merge> merges_;            // (left id << 32 | right id) -> rank, merged id
  int32_t byte_ids_[256];                                 // id of the one-byte token of each byte, -1 if none
  std::vector<int32_t> added_ids_;                        // control + user-defined, longest first
  bool added_first_byte_[256] = {};                       // first bytes of added tokens
  std::shared_ptr<const Pretokenizer> pre_;
};

// GPT-2's bytes_to_unicode: the UTF-8 text of the character that stands for byte b in token strings.
const std::string& byte_to_unicode(uint8_t b);

}  // namespace secateur::text
