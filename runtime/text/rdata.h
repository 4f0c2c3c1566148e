// runtime/text/rdata.h — the part of R's serialisation format (XDR "X\n", versions 2 and 3) that
// R lazy-load databases (.rdb/.rdx) of character data use, and the zlib records they are made of.
// Internal to runtime/text (austen.cpp is the user); every malformed input is an Error naming the
// file and the offset.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace secateur::text::rdata {

enum SexpType : int32_t { nil = 0, sym = 1, list = 2, chars = 9, lgl = 10, ints = 13, real = 14, str = 16,
                          vec = 19, nil_value = 254, ref = 255 };

struct RObject {
  int32_t type = nil;
  std::string text;                        // SYMSXP name, CHARSXP bytes (UTF-8)
  bool na = false;                         // CHARSXP NA_STRING
  std::vector<std::string> strings;        // STRSXP elements ("" for NA)
  std::vector<bool> string_na;             // STRSXP: which elements are NA
  std::vector<int32_t> integers;           // INTSXP, LGLSXP
  std::vector<double> reals;               // REALSXP
  std::vector<RObject> items;              // VECSXP elements, LISTSXP values
  std::vector<std::string> tags;           // LISTSXP tags ("" where untagged)
  std::vector<std::string> attr_names;     // attributes, by name
  std::vector<RObject> attr_values;

  const RObject* attribute(const std::string& name) const;   // nullptr if absent
};

// Parses one serialised object; where names the input in errors ("x.rdb: record at offset 12").
RObject unserialize(std::string_view data, const std::string& where);

// Inflates a zlib or gzip stream; expected_size 0 = unknown. where as above.
std::string inflate(std::string_view data, size_t expected_size, const std::string& where);

}  // namespace secateur::text::rdata
