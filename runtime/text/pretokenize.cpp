// runtime/text/pretokenize.cpp — the PCRE2 side of pre-tokenisation (see pretokenize.h).
#define PCRE2_CODE_UNIT_WIDTH 8
#include "runtime/text/pretokenize.h"

#include <fmt/ranges.h>
#include <pcre2.h>

#include <algorithm>

#include "runtime/core/check.h"

namespace secateur::text {
namespace {

// HF compiles its patterns with Oniguruma; these classes match exactly the code points that
// Oniguruma's do, in the tokenizers 0.23 that tools/requirements.txt pins, with PCRE2 10.42
// (Debian 12). Both were compared on every code point (tests/fidelity/tokenizer_fidelity.py keeps
// checking it through the encoder).
//
// Oniguruma's Unicode \s is U+0009..U+000D, U+0085 and the Z categories; PCRE2's UCP \s also
// takes U+180E, so the class is spelled out.
constexpr std::string_view kSpace = R"(\t\n\x{0B}\f\r\x{85}\p{Z})";
// Oniguruma knows Unicode 16.0, PCRE2 10.42 Unicode 14.0: these letters and numbers of Unicode
// 15.0-16.0 are in Oniguruma's \p{L} / \p{N} and not in PCRE2's (a newer PCRE2 that has them
// loses nothing). PCRE2's \p{L} and \p{N} hold no code point that Oniguruma's lack.
constexpr std::string_view kLetter =
    R"(\p{L}\x{1C89}-\x{1C8A}\x{A7CB}-\x{A7CD}\x{A7DA}-\x{A7DC}\x{105C0}-\x{105F3}\x{10D4A}-\x{10D65})"
    R"(\x{10D6F}-\x{10D85}\x{10EC2}-\x{10EC4}\x{1123F}-\x{11240}\x{11380}-\x{11389}\x{1138B}\x{1138E})"
    R"(\x{11390}-\x{113B5}\x{113B7}\x{113D1}\x{113D3}\x{11BC0}-\x{11BE0}\x{11F02}\x{11F04}-\x{11F10})"
    R"(\x{11F12}-\x{11F33}\x{1342F}\x{13441}-\x{13446}\x{13460}-\x{143FA}\x{16100}-\x{1611D})"
    R"(\x{16D40}-\x{16D6C}\x{18CFF}\x{1B132}\x{1B155}\x{1DF25}-\x{1DF2A}\x{1E030}-\x{1E06D})"
    R"(\x{1E4D0}-\x{1E4EB}\x{1E5D0}-\x{1E5ED}\x{1E5F0}\x{2B739}\x{2EBF0}-\x{2EE5D}\x{31350}-\x{323AF})";
constexpr std::string_view kNumber =
    R"(\p{N}\x{10D40}-\x{10D49}\x{116D0}-\x{116E3}\x{11BF0}-\x{11BF9}\x{11F50}-\x{11F59}\x{16130}-\x{16139})"
    R"(\x{16D70}-\x{16D79}\x{1CCF0}-\x{1CCF9}\x{1D2C0}-\x{1D2D3}\x{1E4F0}-\x{1E4F9}\x{1E5F1}-\x{1E5FA})";
// HF's Digits pre-tokenizer (smollm) is not a regex: it takes Rust's char::is_numeric (categories
// Nd, Nl, No), whose tables in the tokenizers 0.23 build are Unicode 17.0 and have these numbers
// beyond Oniguruma's \p{N}.
constexpr std::string_view kRustNumericExtra = R"(\x{11DE0}-\x{11DE9}\x{16FF4}-\x{16FF6})";

// Appends the PCRE2 spelling of HF's class escape p[i..] (\s, \S, \p{L}, \p{N}) to out, inside a
// character class or standing alone; returns the length of the escape consumed.
size_t translate_class_escape(std::string_view p, size_t i, bool in_class, std::string& out) {
  const char e = p[i + 1];
  std::string_view body;
  bool negated = false;
  size_t len = 2;
  if (e == 's' || e == 'S') {
    body = kSpace;
    negated = e == 'S';
  } else {   // \p{..}
    const size_t close = p.find('}', i);
    const std::string_view name = close == std::string_view::npos ? p.substr(i) : p.substr(i, close + 1 - i);
    SECATEUR_CHECK(name == "\\p{L}" || name == "\\p{N}",
                   "[text/pretokenize] pattern escape '{}' has no HF-exact class (supported: \\s \\S \\p{{L}} \\p{{N}})",
                   name);
    body = name == "\\p{L}" ? kLetter : kNumber;
    len = name.size();
  }
  SECATEUR_CHECK(!(in_class && negated), "[text/pretokenize] \\S inside a character class is not supported");
  if (in_class)
    out += body;
  else
    out.append(negated ? "[^" : "[").append(body).append("]");
  return len;
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

const std::vector<std::string>& pretokenizer_names() {
  static const std::vector<std::string> names = {"gpt2", "smollm", "qwen2"};
  return names;
}

std::string hf_pattern_to_pcre2(std::string_view p) {
  std::string out;
  out.reserve(p.size() * 8);
  bool in_class = false;
  for (size_t i = 0; i < p.size();) {
    const char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {
      const char e = p[i + 1];
      if (e == 's' || e == 'S' || e == 'p') {
        i += translate_class_escape(p, i, in_class, out);
        continue;
      }
      SECATEUR_CHECK(e != 'P' && e != 'd' && e != 'D' && e != 'w' && e != 'W' && e != 'h' && e != 'H',
                     "[text/pretokenize] pattern escape '\\{}' has no HF-exact class (supported: \\s \\S \\p{{L}} "
                     "\\p{{N}})", e);
      out.append(p.substr(i, 2));   // \r, \n, \x.., \', ...: the same in both syntaxes
      i += 2;
      continue;
    }
    if (c == '[') {
      SECATEUR_CHECK(!in_class, "[text/pretokenize] nested character class at offset {} of the pattern is not supported",
                     i);
      in_class = true;
      out += c;
      ++i;
      if (i < p.size() && p[i] == '^') out += p[i++];
      if (i < p.size() && p[i] == ']') out += p[i++];   // a leading ']' is a literal
      continue;
    }
    if (c == ']' && in_class) in_class = false;
    out += c;
    ++i;
  }
  SECATEUR_CHECK(!in_class, "[text/pretokenize] unterminated character class in the pattern");
  return out;
}

Pretokenizer::Pretokenizer(const std::string& pre) : name_(pre) {
  const auto& names = pretokenizer_names();
  SECATEUR_CHECK(std::find(names.begin(), names.end(), pre) != names.end(),
                 "[text/pretokenize] unknown pre-tokenizer '{}' (known: {})", pre, fmt::join(names, ", "));
  individual_digits_ = pre == "smollm";
  regex_ = compile(hf_pattern_to_pcre2(pre == "qwen2" ? kQwen2Pattern : kGpt2Pattern));
  if (individual_digits_) digit_ = compile(fmt::format("[{}{}]", kNumber, kRustNumericExtra));
}

Pretokenizer::~Pretokenizer() {
  pcre2_code_free(static_cast<pcre2_code*>(regex_));
  pcre2_code_free(static_cast<pcre2_code*>(digit_));
}

// HF's Split with behavior=isolated (and ByteLevel's own regex split): every match is a piece, and so
// is every gap between matches (only invalid UTF-8: these patterns match every valid character).
void Pretokenizer::split_regex(std::string_view text, void* match_data, std::vector<std::string_view>& out) const {
  auto* code = static_cast<const pcre2_code*>(regex_);
  auto* md = static_cast<pcre2_match_data*>(match_data);
  size_t pos = 0, begin = 0, end = 0;
  while (pos < text.size()) {
    if (!next_match(code, text, pos, md, begin, end)) break;
    if (begin > pos) out.push_back(text.substr(pos, begin - pos));
    if (end == begin) end = begin + char_len(text.data() + begin, text.size() - begin);   // never for these patterns
    out.push_back(text.substr(begin, end - begin));
    pos = end;
  }
  if (pos < text.size()) out.push_back(text.substr(pos));
}

void Pretokenizer::split(std::string_view text, std::vector<std::string_view>& out) const {
  MatchData md(static_cast<const pcre2_code*>(regex_));
  if (!individual_digits_) {
    split_regex(text, md.md, out);
    return;
  }
  auto* digit = static_cast<const pcre2_code*>(digit_);
  MatchData dmd(digit);
  size_t pos = 0, begin = 0, end = 0;
  while (pos < text.size() && next_match(digit, text, pos, dmd.md, begin, end)) {
    if (begin > pos) split_regex(text.substr(pos, begin - pos), md.md, out);
    out.push_back(text.substr(begin, end - begin));
    pos = end;
  }
  if (pos < text.size()) split_regex(text.substr(pos), md.md, out);
}

}  // namespace secateur::text
