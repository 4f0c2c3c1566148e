// runtime/text/normalize.cpp — HF's NFC through ICU (see normalize.h).
#include "runtime/text/normalize.h"

#include <unicode/bytestream.h>
#include <unicode/normalizer2.h>
#include <unicode/uchar.h>
#include <unicode/utf8.h>

#include <cstdint>

#include "runtime/core/check.h"

namespace secateur::text {
namespace {

const icu::Normalizer2& nfc() {
  static const icu::Normalizer2* const instance = [] {
    UErrorCode status = U_ZERO_ERROR;
    const icu::Normalizer2* n = icu::Normalizer2::getNFCInstance(status);
    SECATEUR_CHECK(U_SUCCESS(status) && n, "[text/normalize] ICU has no NFC data: {}", u_errorName(status));
    return n;
  }();
  return *instance;
}

// Whether HF's Unicode 9.0 tables know c (assigned in Unicode 9.0 or before; age 0.0 = unassigned).
bool in_unicode9(UChar32 c) {
  UVersionInfo age;
  u_charAge(c, age);
  return age[0] != 0 && (age[0] < 9 || (age[0] == 9 && age[1] == 0));
}

}  // namespace

bool to_nfc(std::string_view text, std::string& out) {
  size_t first = 0;   // ASCII is NFC and never changes what follows it
  while (first < text.size() && static_cast<unsigned char>(text[first]) < 0x80) ++first;
  if (first == text.size()) return false;
  SECATEUR_CHECK(text.size() < INT32_MAX, "[text/normalize] text of {} bytes is too long for ICU", text.size());

  const icu::Normalizer2& n = nfc();
  UErrorCode status = U_ZERO_ERROR;
  // The last ASCII byte joins the first run: it may compose with what follows ("e" + U+0301).
  int32_t run_begin = static_cast<int32_t>(first > 0 ? first - 1 : 0);
  std::string result(text.substr(0, run_begin));
  result.reserve(text.size() + text.size() / 8);
  icu::StringByteSink<std::string> sink(&result);
  bool changed = false;
  // Runs of valid Unicode 9.0 characters are normalised; anything else is copied and ends a run.
  auto run = [&](int32_t begin, int32_t end) {
    if (end <= begin) return;
    const icu::StringPiece piece(text.data() + begin, end - begin);
    if (n.isNormalizedUTF8(piece, status)) {
      result.append(piece.data(), piece.size());
    } else {
      n.normalizeUTF8(0, piece, sink, nullptr, status);
      changed = true;
    }
  };
  const auto* s = reinterpret_cast<const uint8_t*>(text.data());
  const auto len = static_cast<int32_t>(text.size());
  for (int32_t i = static_cast<int32_t>(first); i < len;) {
    const int32_t at = i;
    UChar32 c = 0;
    U8_NEXT(s, i, len, c);
    if (c >= 0 && in_unicode9(c)) continue;
    run(run_begin, at);
    result.append(text.data() + at, i - at);   // invalid bytes, or a character HF's tables lack
    run_begin = i;
  }
  run(run_begin, len);
  SECATEUR_CHECK(U_SUCCESS(status), "[text/normalize] ICU NFC failed: {}", u_errorName(status));
  if (!changed) return false;
  out = std::move(result);
  return true;
}

}  // namespace secateur::text
