// runtime/text/normalize.h — Unicode NFC exactly as HF `tokenizers` applies its NFC normalizer
// (Qwen2's tokenizer.json has one). HF's NFC comes from the Rust crate
// unicode-normalization-alignments, whose tables are Unicode 9.0: a character assigned later is, to
// it, a starter with no decomposition that composes with nothing. Here ICU (Unicode 15 in Debian 12)
// normalises the runs between such characters and leaves them as they are, which gives HF's result:
// Unicode's normalisation stability policy keeps the NFC of text made of Unicode 9.0 characters the
// same in every later version. Invalid UTF-8 bytes (HF never sees any) are left as they are too.
#pragma once
#include <string>
#include <string_view>

namespace secateur::text {

// true: out holds the NFC of text (out is replaced); false: text is already in NFC (out untouched).
bool to_nfc(std::string_view text, std::string& out);

}  // namespace secateur::text
