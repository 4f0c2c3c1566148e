// runtime/text/pretokenize.cpp — the PCRE2 side of pre-tokenisation (see pretokenize.h).
#define PCRE2_CODE_UNIT_WIDTH 8
#include "runtime/text/pretokenize.h"

#include <pcre2.h>

#include "runtime/core/check.h"

namespace secateur::text {
namespace {

// Oniguruma's (HF's) Unicode \s is U+0009..U+000D, U+0085 and the Z categories; PCRE2's UCP \s also
// takes U+180E, so the class is spelled out to agree with HF on every code point.
constexpr const char* kSpace = R"(\t\n\x{0B}\f\r\x{85}\p{Z})";

std::string gpt2_pattern() {
  const std::string s = kSpace;
  return "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^" + s + "\\p{L}\\p{N}]+|[" + s + "]+(?![^" + s +
         "])|[" + s + "]+";
}

pcre2_code* compile(const std::string& pattern) {
  int err = 0;
  PCRE2_SIZE err_off = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                   PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &err, &err_off, nullptr);
  if (!code) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof msg);
    SECATEUR_FAIL("[text/pretokenize] PCRE2 cannot compile pattern at offset {}: {}", err_off,
                  reinterpret_cast<const char*>(msg));
  }
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);   // best effort: the interpreter is the fallback
  return code;
}

// Finds the next match of code in text from byte start; returns false when there is none.
bool next_match(const pcre2_code* code, std::string_view text, size_t start, pcre2_match_data* md,
                size_t& begin, size_t& end) {
  int rc = pcre2_match(code, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), start, 0, md, nullptr);
  if (rc == PCRE2_ERROR_JIT_STACKLIMIT)   // deep backtracking: retry in the interpreter
    rc = pcre2_match(code, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), start, PCRE2_NO_JIT, md,
                     nullptr);
  if (rc == PCRE2_ERROR_NOMATCH) return false;
  if (rc < 0) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(rc, msg, sizeof msg);
    SECATEUR_FAIL("[text/pretokenize] PCRE2 match failed at byte {}: {}", start, reinterpret_cast<const char*>(msg));
  }
  const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
  begin = ov[0];
  end = ov[1];
  return true;
}

struct MatchData {
  pcre2_match_data* md;
  explicit MatchData(const pcre2_code* code) : md(pcre2_match_data_create_from_pattern(code, nullptr)) {
    SECATEUR_CHECK(md, "[text/pretokenize] out of memory for PCRE2 match data");
  }
  ~MatchData() { pcre2_match_data_free(md); }
  MatchData(const MatchData&) = delete;
  MatchData& operator=(const MatchData&) = delete;
};

// Byte length of the UTF-8 character starting at p (1 for a stray byte), bounded by n.
size_t char_len(const char* p, size_t n) {
  const auto c = static_cast<unsigned char>(*p);
  size_t len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 1;
  return len <= n ? len : 1;
}

}  // namespace

Pretokenizer::Pretokenizer(const std::string& pre) : name_(pre) {
  SECATEUR_CHECK(pre == "gpt2" || pre == "smollm",
                 "[text/pretokenize] unknown pre-tokenizer '{}' (known: gpt2, smollm)", pre);
  individual_digits_ = pre == "smollm";
  gpt2_ = compile(gpt2_pattern());
  if (individual_digits_) digit_ = compile("\\p{N}");
}

Pretokenizer::~Pretokenizer() {
  pcre2_code_free(static_cast<pcre2_code*>(gpt2_));
  pcre2_code_free(static_cast<pcre2_code*>(digit_));
}

void Pretokenizer::split_gpt2(std::string_view text, void* match_data, std::vector<std::string_view>& out) const {
  auto* code = static_cast<const pcre2_code*>(gpt2_);
  auto* md = static_cast<pcre2_match_data*>(match_data);
  size_t pos = 0, begin = 0, end = 0;
  while (pos < text.size()) {
    if (!next_match(code, text, pos, md, begin, end)) break;
    if (begin > pos) out.push_back(text.substr(pos, begin - pos));   // unmatched gap (invalid UTF-8 only)
    if (end == begin) end = begin + char_len(text.data() + begin, text.size() - begin);   // never for this pattern
    out.push_back(text.substr(begin, end - begin));
    pos = end;
  }
  if (pos < text.size()) out.push_back(text.substr(pos));
}

void Pretokenizer::split(std::string_view text, std::vector<std::string_view>& out) const {
  MatchData md(static_cast<const pcre2_code*>(gpt2_));
  if (!individual_digits_) {
    split_gpt2(text, md.md, out);
    return;
  }
  auto* digit = static_cast<const pcre2_code*>(digit_);
  MatchData dmd(digit);
  size_t pos = 0, begin = 0, end = 0;
  while (pos < text.size() && next_match(digit, text, pos, dmd.md, begin, end)) {
    if (begin > pos) split_gpt2(text.substr(pos, begin - pos), md.md, out);
    out.push_back(text.substr(begin, end - begin));
    pos = end;
  }
  if (pos < text.size()) split_gpt2(text.substr(pos), md.md, out);
}

}  // namespace secateur::text
