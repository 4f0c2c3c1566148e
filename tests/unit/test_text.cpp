// tests/unit/test_text.cpp — runtime/text: byte-level BPE on hand-built vocabularies, the three
// pre-tokenizer patterns and NFC on tricky text, the HF file round trip, and the janeaustenr reader
// on the real Debian database (skipped where it is absent). Exactness against HF `tokenizers` on
// real vocabularies (SmolLM2, Qwen2.5) and on every code point is a fidelity test, not here.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <functional>
#include <fstream>

#include "runtime/core/check.h"
#include "runtime/text/austen.h"
#include "runtime/text/normalize.h"
#include "runtime/text/pretokenize.h"
#include "runtime/text/rdata.h"
#include "runtime/text/tokenizer.h"

namespace secateur::text {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
namespace fs = std::filesystem;

// A fresh directory per test, removed at the end.
class ScratchDir {
 public:
  ScratchDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = fs::temp_directory_path() /
            (std::string("secateur_text_") + info->name() + "_" + std::to_string(::getpid()));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~ScratchDir() { fs::remove_all(path_); }
  std::string operator/(const std::string& name) const { return (path_ / name).string(); }
  std::string str() const { return path_.string(); }

 private:
  fs::path path_;
};

// The 256 one-byte tokens (ids 0..255 = bytes 0..255), then extra tokens, then merges.
TokenizerSpec byte_spec(const std::vector<std::string>& extra, const std::vector<std::string>& merges,
                        const std::string& pre = "gpt2") {
  TokenizerSpec spec;
  for (int b = 0; b < 256; ++b) spec.tokens.push_back(byte_to_unicode(static_cast<uint8_t>(b)));
  for (const auto& t : extra) spec.tokens.push_back(t);
  spec.merges = merges;
  spec.pre = pre;
  return spec;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

std::vector<std::string> pieces(const std::string& pre, const std::string& text) {
  Pretokenizer p(pre);
  std::vector<std::string_view> views;
  p.split(text, views);
  return {views.begin(), views.end()};
}

TEST(ByteLevel, PrintableAsciiMapsToItselfAndSpaceToGWithDot) {
  EXPECT_EQ(byte_to_unicode('a'), "a");
  EXPECT_EQ(byte_to_unicode(' '), "\xC4\xA0");    // U+0120 'Ġ'
  EXPECT_EQ(byte_to_unicode('\n'), "\xC4\x8A");   // U+010A 'Ċ'
  EXPECT_EQ(byte_to_unicode(0xFF), "\xC3\xBF");   // U+00FF itself
}

TEST(Tokenizer, TinyVocabularyMergesByRank) {
  // ids 256.. : he ll hell hello Ġw or Ġwor
  Tokenizer tok(byte_spec({"he", "ll", "hell", "hello", "Ġw", "or", "Ġwor"},
                          {"h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or"}));
  EXPECT_EQ(tok.vocab_size(), 263);
  EXPECT_THAT(tok.encode("hello world"), ElementsAre(259, 262, 'l', 'd'));
  EXPECT_EQ(tok.decode(tok.encode("hello world")), "hello world");
  EXPECT_EQ(tok.token(259), "hello");
  EXPECT_EQ(tok.token_id("Ġwor"), 262);
  EXPECT_EQ(tok.token_id("absent"), -1);
}

TEST(Tokenizer, LowerRankWinsAndTiesGoLeftmost) {
  // "abc": merges "b c" (rank 0) before "a b" (rank 1) -> a, bc. "aaa" -> aa, a.
  Tokenizer tok(byte_spec({"bc", "ab", "aa"}, {"b c", "a b", "a a"}));
  EXPECT_THAT(tok.encode("abc"), ElementsAre('a', 256));
  EXPECT_THAT(tok.encode("aaa"), ElementsAre(258, 'a'));
}

TEST(Tokenizer, SmolLMSplitsEveryDigitAlone) {
  const std::vector<std::string> extra = {"Ġ2", "20", "202"};
  const std::vector<std::string> merges = {"Ġ 2", "2 0", "20 2"};
  Tokenizer gpt2(byte_spec(extra, merges, "gpt2"));
  Tokenizer smollm(byte_spec(extra, merges, "smollm"));
  EXPECT_THAT(gpt2.encode("x 2024"), ElementsAre('x', 256, '0', '2', '4'));         // x, Ġ2, 0, 2, 4
  EXPECT_THAT(smollm.encode("x 2024"), ElementsAre('x', ' ', '2', '0', '2', '4'));   // no merge crosses a digit
  EXPECT_THAT(pieces("smollm", "ab12 c3"), ElementsAre("ab", "1", "2", " c", "3"));
  EXPECT_THAT(pieces("smollm", "a  1"), ElementsAre("a", "  ", "1"));   // look-ahead stops at the digit piece
  EXPECT_THAT(pieces("gpt2", "a  1"), ElementsAre("a", " ", " 1"));
}

TEST(Pretokenizer, WhitespaceRunKeepsItsLastSpaceForTheNextWord) {
  // \s+(?!\S) takes "  " and leaves " b"; at the end of the text the whole run is one piece.
  EXPECT_THAT(pieces("gpt2", "a   b"), ElementsAre("a", "  ", " b"));
  EXPECT_THAT(pieces("gpt2", "a   "), ElementsAre("a", "   "));
  EXPECT_THAT(pieces("gpt2", "x\n\n  y"), ElementsAre("x", "\n\n ", " y"));
  EXPECT_THAT(pieces("gpt2", "don't stop"), ElementsAre("don", "'t", " stop"));
  EXPECT_THAT(pieces("gpt2", "café, 你好!"), ElementsAre("café", ",", " 你好", "!"));
  Tokenizer tok(byte_spec({"ĠĠ", "Ġb"}, {"Ġ Ġ", "Ġ b"}));
  EXPECT_THAT(tok.encode("a   b"), ElementsAre('a', 256, 257));
}

TEST(Pretokenizer, UnknownNameIsRejectedListingTheKnownOnes) {
  EXPECT_THAT(error_of([] { Pretokenizer p("llama3"); }),
              HasSubstr("unknown pre-tokenizer 'llama3' (known: gpt2, smollm, qwen2)"));
}

// ---- Qwen2's pattern (expected pieces: HF tokenizers' Split with transformers' PRETOKENIZE_REGEX) ----

TEST(Qwen2Pretokenizer, ContractionsMatchInAnyCase) {
  EXPECT_THAT(pieces("qwen2", "HE'S I'M DON'T they'RE We'VE she'LL he'D It'Sa"),
              ElementsAre("HE", "'S", " I", "'M", " DON", "'T", " they", "'RE", " We", "'VE", " she", "'LL", " he",
                          "'D", " It", "'S", "a"));
  EXPECT_THAT(pieces("qwen2", "x'ſa"), ElementsAre("x", "'ſ", "a"));   // U+017F folds to s, as in Oniguruma
  EXPECT_THAT(pieces("gpt2", "DON'T don't"), ElementsAre("DON", "'", "T", " don", "'t"));   // GPT-2: lower case only
}

TEST(Qwen2Pretokenizer, EveryNumericCharacterIsAPieceOfItsOwn) {
  EXPECT_THAT(pieces("qwen2", "abc 1234 x12y 3.14"),
              ElementsAre("abc", " ", "1", "2", "3", "4", " x", "1", "2", "y", " ", "3", ".", "1", "4"));
  EXPECT_THAT(pieces("qwen2", "\u0661\u0662 \u00BD \u216B"),   // Arabic-Indic digits, one half, Roman twelve
              ElementsAre("\u0661", "\u0662", " ", "\u00BD", " ", "\u216B"));
}

TEST(Qwen2Pretokenizer, NewlinesStickToTheRunBeforeThem) {
  EXPECT_THAT(pieces("qwen2", "a\n\n\nb  \n  c\r\n\r\nd \t\n"),
              ElementsAre("a", "\n\n\n", "b", "  \n", " ", " c", "\r\n\r\n", "d", " \t\n"));
  EXPECT_THAT(pieces("qwen2", "end.\n\n  next"), ElementsAre("end", ".\n\n", " ", " next"));
  EXPECT_THAT(pieces("qwen2", "!!!\n\n"), ElementsAre("!!!\n\n"));
}

TEST(Qwen2Pretokenizer, SpacesBeforeAWordLeaveItOneAndTrailingSpacesStayTogether) {
  EXPECT_THAT(pieces("qwen2", "x  y"), ElementsAre("x", " ", " y"));
  EXPECT_THAT(pieces("qwen2", "  lead"), ElementsAre(" ", " lead"));
  EXPECT_THAT(pieces("qwen2", "trailing   "), ElementsAre("trailing", "   "));
  EXPECT_THAT(pieces("qwen2", "a \n"), ElementsAre("a", " \n"));
}

TEST(Qwen2Pretokenizer, AnyNonLetterMayLeadAWord) {
  EXPECT_THAT(pieces("qwen2", "(?i) don't"), ElementsAre("(?", "i", ")", " don", "'t"));
  EXPECT_THAT(pieces("qwen2", "Привет мир 你好世界 مرحبا"), ElementsAre("Привет", " мир", " 你好世界", " مرحبا"));
  // Letters and digits new in Unicode 16 (Garay), which PCRE2 10.42 does not know but Oniguruma does.
  EXPECT_THAT(pieces("qwen2", "a\U00010D4Ab x\U00010D40\U00010D41"),
              ElementsAre("a\U00010D4Ab", " x", "\U00010D40", "\U00010D41"));
}

TEST(Qwen2Pretokenizer, PunctuationAndEmojiRunsTakeOneLeadingSpace) {
  EXPECT_THAT(pieces("qwen2", "Hello!!! ... ?! \U0001F600\U0001F600 \U0001F389!! ---> \"q\""),
              ElementsAre("Hello", "!!!", " ...", " ?!", " \U0001F600\U0001F600", " \U0001F389!!", " --->", " \"",
                          "q", "\""));
}

TEST(Qwen2Pretokenizer, WhitespaceIsOnigurumasUnicodeSpace) {
  // U+00A0, U+2003 and U+3000 are spaces (category Z), so they may lead a word; U+180E and U+200B are
  // not (PCRE2's own \s would take U+180E); U+0085 is.
  EXPECT_THAT(pieces("qwen2", "a\u00A0b\u2003c\u3000d"), ElementsAre("a", "\u00A0b", "\u2003c", "\u3000d"));
  EXPECT_THAT(pieces("qwen2", "\u180E x\u200B y\xC2\x85z"),
              ElementsAre("\u180E", " x", "\u200B", " y", "\xC2\x85z"));
}

TEST(Qwen2Pretokenizer, InvalidUtf8IsAPieceOfItsOwn) {
  EXPECT_THAT(pieces("qwen2", "ab\xFF\xFE" "cd 1"), ElementsAre("ab", "\xFF\xFE", "cd", " ", "1"));
}

TEST(Tokenizer, Qwen2MergesNeverJoinDigits) {
  const std::vector<std::string> extra = {"Ġ2", "20", "202"};
  const std::vector<std::string> merges = {"Ġ 2", "2 0", "20 2"};
  Tokenizer qwen2(byte_spec(extra, merges, "qwen2"));
  EXPECT_THAT(qwen2.encode("x 2024"), ElementsAre('x', ' ', '2', '0', '2', '4'));
}

TEST(HfPattern, TranslationSpellsOutOnigurumasClasses) {
  const std::string gpt2 = hf_pattern_to_pcre2(kGpt2Pattern);
  EXPECT_THAT(gpt2, HasSubstr(R"( ?[^\t\n\x{0B}\f\r\x{85}\p{Z}\p{L}\x{1C89}-\x{1C8A})"));   // \s and \p{L} in a class
  EXPECT_THAT(gpt2, HasSubstr(R"(|[\t\n\x{0B}\f\r\x{85}\p{Z}]+(?![^\t\n\x{0B}\f\r\x{85}\p{Z}])|)"));   // \s+(?!\S)
  EXPECT_EQ(hf_pattern_to_pcre2(R"([^\r\n]x\'')"), R"([^\r\n]x\'')");
  EXPECT_THAT(error_of([] { hf_pattern_to_pcre2(R"(\p{Lu}+)"); }), HasSubstr("'\\p{Lu}' has no HF-exact class"));
  EXPECT_THAT(error_of([] { hf_pattern_to_pcre2(R"(\d+)"); }), HasSubstr("'\\d' has no HF-exact class"));
  EXPECT_THAT(error_of([] { hf_pattern_to_pcre2(R"([a\S])"); }), HasSubstr("\\S inside a character class"));
  EXPECT_THAT(error_of([] { hf_pattern_to_pcre2("[a"); }), HasSubstr("unterminated character class"));
}

// ---- NFC (expected strings: HF tokenizers' normalizers.NFC) ----

std::string nfc_of(const std::string& text) {
  std::string out;
  return to_nfc(text, out) ? out : text;
}

TEST(Nfc, ComposesAndLeavesNormalisedTextAlone) {
  std::string out = "untouched";
  EXPECT_FALSE(to_nfc("plain ascii", out));
  EXPECT_FALSE(to_nfc("caf\u00E9 \u00C5", out));
  EXPECT_EQ(out, "untouched");
  EXPECT_EQ(nfc_of("cafe\u0301"), "caf\u00E9");
  EXPECT_EQ(nfc_of("\u212B"), "\u00C5");                          // ANGSTROM SIGN -> A with ring
  EXPECT_EQ(nfc_of("\u0958"), "\u0915\u093C");                    // a composition exclusion decomposes
  EXPECT_EQ(nfc_of("\u1100\u1161\u11A8"), "\uAC01");              // Hangul jamo compose
  EXPECT_EQ(nfc_of("a\u0301\u0323"), "\u1EA1\u0301");              // combining marks reordered, then composed
  EXPECT_EQ(nfc_of(">\u0338"), "\u226F");
}

TEST(Nfc, CharactersNewerThanUnicode9AreLeftAsHfLeavesThem) {
  // U+1DF6 (Unicode 10, combining class 232): current Unicode reorders it after U+0323 and composes
  // a + U+0323; HF's Unicode 9.0 tables treat it as a starter, so nothing changes.
  EXPECT_EQ(nfc_of("a\u1DF6\u0323"), "a\u1DF6\u0323");
  EXPECT_EQ(nfc_of("e\u0301\u1DF6e\u0301"), "\u00E9\u1DF6\u00E9");
}

TEST(Nfc, InvalidUtf8IsKeptAndSplitsTheRuns) {
  EXPECT_EQ(nfc_of("A\u030A\xFF e\xC3"), "\u00C5\xFF e\xC3");
  EXPECT_EQ(nfc_of("e\xFF\u0301"), "e\xFF\u0301");
}


TokenizerSpec chat_spec() {
  TokenizerSpec spec = byte_spec({"<|im_start|>", "<|im_end|>", "<tool>", "hi"}, {"h i"});
  spec.token_types.assign(spec.tokens.size(), token_normal);
  spec.token_types[256] = token_control;
  spec.token_types[257] = token_control;
  spec.token_types[258] = token_user_defined;
  spec.bos_id = 256;
  spec.eos_id = 257;
  return spec;
}

TEST(Tokenizer, NfcNormalizerEncodesComposedAndDecomposedTextAlike) {
  TokenizerSpec spec = chat_spec();
  spec.pre = "qwen2";
  spec.normalizer = "NFC";
  Tokenizer nfc(spec);
  EXPECT_EQ(nfc.encode("cafe\u0301 <tool>e\u0301"), nfc.encode("caf\u00E9 <tool>\u00E9"));
  EXPECT_EQ(nfc.decode(nfc.encode("cafe\u0301")), "caf\u00E9");
  // Added tokens are cut out of the raw text first (HF's normalized=false): U+0338 after "<tool>"
  // does not turn its ">" into U+226F.
  EXPECT_EQ(nfc.encode("<tool>\u0338").front(), 258);
  spec.normalizer = "";
  Tokenizer plain(spec);
  EXPECT_NE(plain.encode("cafe\u0301"), plain.encode("caf\u00E9"));
  spec.normalizer = "NFKC";
  EXPECT_THAT(error_of([&] { Tokenizer t(spec); }), HasSubstr("unknown normalizer 'NFKC' (known: none, NFC)"));
}

TEST(Tokenizer, SpecialTokensAreMatchedInRawText) {
  Tokenizer tok(chat_spec());
  EXPECT_THAT(tok.encode("<|im_start|>hi<|im_end|>"), ElementsAre(256, 259, 257));
  EXPECT_THAT(tok.encode(" <|im_end|> "), ElementsAre(' ', 257, ' '));   // no stripping
  // parse_special=false: control tokens are plain text, user-defined ones are still matched.
  const auto plain = tok.encode("<|im_end|><tool>", false);
  EXPECT_EQ(plain.size(), std::string("<|im_end|>").size() + 1);
  EXPECT_EQ(plain.back(), 258);
  EXPECT_EQ(tok.decode(tok.encode("<|im_start|>hi<|im_end|>")), "<|im_start|>hi<|im_end|>");
  EXPECT_EQ(tok.decode(tok.encode("<|im_start|>hi<tool><|im_end|>"), true), "hi<tool>");
  EXPECT_TRUE(tok.is_special(256));
  EXPECT_FALSE(tok.is_special(258));
}

TEST(Tokenizer, AddBosPrependsBos) {
  TokenizerSpec spec = chat_spec();
  spec.add_bos = true;
  Tokenizer tok(spec);
  EXPECT_THAT(tok.encode("hi"), ElementsAre(256, 259));
}

TEST(Tokenizer, DecodeInvertsEncodeOnNonAsciiAndInvalidUtf8) {
  Tokenizer tok(byte_spec({"Ã©", "ca", "caf", "cafÃ©"}, {"Ã ©", "c a", "ca f", "caf Ã©"}, "smollm"));   // é = C3 A9
  EXPECT_THAT(tok.encode("café"), ElementsAre(259));
  for (const std::string& text : std::vector<std::string>{"café naïve — Ωμέγα, 你好世界 🎉🙂 ½ ٣ x²\t\n\r\n  end  ", "bad \xFF\xFE bytes \xC3",
                                 std::string("nul\0byte", 8)})
    EXPECT_EQ(tok.decode(tok.encode(text)), text);
}

TEST(Tokenizer, BadSpecsAreRejected) {
  EXPECT_THAT(error_of([] { Tokenizer t(byte_spec({}, {"a zz"})); }), HasSubstr("'zz' is not in the vocabulary"));
  EXPECT_THAT(error_of([] { Tokenizer t(byte_spec({"a"}, {})); }), HasSubstr("appears twice"));
  EXPECT_THAT(error_of([] { Tokenizer t(byte_spec({}, {"ab"})); }), HasSubstr("is not 'left right'"));
  Tokenizer tok(byte_spec({}, {}));
  EXPECT_THAT(error_of([&] { tok.decode({5, 300}); }), HasSubstr("token id 300 outside the vocabulary"));
}

TEST(HfFiles, WriteThenReadEncodesTheSame) {
  ScratchDir dir;
  TokenizerSpec spec = chat_spec();
  spec.pre = "smollm";
  spec.merges.push_back("Ġ 1");
  spec.tokens.push_back("Ġ1");
  spec.token_types.push_back(token_normal);
  spec.chat_template = "{{ messages }}";
  Tokenizer tok(spec);
  tok.write_hf_files(dir.str());
  ASSERT_TRUE(fs::exists(dir / "tokenizer.json"));
  ASSERT_TRUE(fs::exists(dir / "tokenizer_config.json"));
  EXPECT_FALSE(fs::exists(dir / "tokenizer.json.tmp"));

  Tokenizer back = Tokenizer::from_hf_json(dir / "tokenizer.json");
  EXPECT_EQ(back.spec().pre, "smollm");
  EXPECT_EQ(back.spec().tokens, spec.tokens);
  EXPECT_EQ(back.spec().token_types, spec.token_types);
  EXPECT_EQ(back.spec().merges, spec.merges);
  EXPECT_EQ(back.spec().bos_id, 256);
  EXPECT_EQ(back.spec().eos_id, 257);
  EXPECT_EQ(back.spec().chat_template, "{{ messages }}");
  for (const std::string text : {"<|im_start|>hi 12 <tool> x1", "plain 1 1  1", "ünïcode"})
    EXPECT_EQ(back.encode(text), tok.encode(text)) << text;

  std::ifstream cfg(dir / "tokenizer_config.json");
  std::string cfg_text((std::istreambuf_iterator<char>(cfg)), std::istreambuf_iterator<char>());
  EXPECT_THAT(cfg_text, HasSubstr("\"tokenizer_class\": \"PreTrainedTokenizerFast\""));
}

TEST(HfFiles, MergesAsPairsAreAccepted) {
  ScratchDir dir;
  Tokenizer tok(byte_spec({"hi"}, {"h i"}));
  tok.write_hf_files(dir.str());
  std::ifstream in(dir / "tokenizer.json");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t at = text.find("\"h i\"");
  ASSERT_NE(at, std::string::npos);
  text.replace(at, 5, "[\"h\", \"i\"]");
  std::ofstream(dir / "tokenizer.json", std::ios::trunc) << text;
  EXPECT_THAT(Tokenizer::from_hf_json(dir / "tokenizer.json").encode("hi"), ElementsAre(256));
}

TEST(HfFiles, MalformedTokenizerJsonIsRejectedNamingTheFile) {
  ScratchDir dir;
  const std::string path = dir / "tokenizer.json";
  std::ofstream(path) << "{\"model\": {\"type\": \"BPE\", \"vocab\": ";
  EXPECT_THAT(error_of([&] { Tokenizer::from_hf_json(path); }), HasSubstr(path + ": invalid JSON"));
  std::ofstream(path, std::ios::trunc) << "{\"model\": {\"type\": \"WordPiece\"}}";
  EXPECT_THAT(error_of([&] { Tokenizer::from_hf_json(path); }), HasSubstr(path + ": model type 'WordPiece'"));
  std::ofstream(path, std::ios::trunc)
      << R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 2}, "merges": []},
             "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false}})";
  EXPECT_THAT(error_of([&] { Tokenizer::from_hf_json(path); }), HasSubstr(path + ": token ids are not contiguous"));
  EXPECT_THAT(error_of([&] { Tokenizer::from_hf_json(dir / "missing.json"); }), HasSubstr("cannot open"));
}

TEST(HfFiles, Qwen2WithNfcRoundTripsAsTransformersWritesIt) {
  ScratchDir dir;
  TokenizerSpec spec = chat_spec();
  spec.pre = "qwen2";
  spec.normalizer = "NFC";
  Tokenizer tok(spec);
  tok.write_hf_files(dir.str());
  std::ifstream in(dir / "tokenizer.json");
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_THAT(text, HasSubstr(R"("normalizer": {
    "type": "NFC"
  })"));
  EXPECT_THAT(text, HasSubstr(R"("Regex": "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|)"));
  EXPECT_THAT(text, HasSubstr(R"("behavior": "Isolated")"));
  EXPECT_THAT(text, HasSubstr(R"("use_regex": false)"));

  Tokenizer back = Tokenizer::from_hf_json(dir / "tokenizer.json");
  EXPECT_EQ(back.spec().pre, "qwen2");
  EXPECT_EQ(back.spec().normalizer, "NFC");
  for (const std::string t : {"<|im_start|>hi 12 <tool> x1", "HE'S  cafe\u0301\n\n", "ünïcode 😀!!"})
    EXPECT_EQ(back.encode(t), tok.encode(t)) << t;
}

TEST(HfFiles, OtherSplitPatternsAndNormalizersAreRejected) {
  ScratchDir dir;
  Tokenizer(byte_spec({}, {}, "qwen2")).write_hf_files(dir.str());
  const std::string path = dir / "tokenizer.json";
  std::ifstream in(path);
  const std::string good((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto with = [&](const std::string& from, const std::string& to) {
    std::string text = good;
    const size_t at = text.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    if (at != std::string::npos) text.replace(at, from.size(), to);
    std::ofstream(path, std::ios::trunc) << text;
    return error_of([&] { Tokenizer::from_hf_json(path); });
  };
  EXPECT_THAT(with("|\\\\p{N}|", "|\\\\p{N}{1,3}|"), HasSubstr(path + ": unsupported pre_tokenizer"));   // Llama 3's
  EXPECT_THAT(with("\"Isolated\"", "\"Removed\""), HasSubstr("unsupported pre_tokenizer"));
  EXPECT_THAT(with("\"use_regex\": false", "\"use_regex\": true"), HasSubstr("use_regex=true is not supported"));
  EXPECT_THAT(with("\"normalizer\": null", "\"normalizer\": {\"type\": \"NFKC\"}"),
              HasSubstr(path + ": normalizer {\"type\":\"NFKC\"} is not supported (supported: none, NFC)"));
}

TEST(HfFiles, NormalizedAddedTokenWithANormalizerIsRejected) {
  ScratchDir dir;
  TokenizerSpec spec = chat_spec();
  spec.normalizer = "NFC";
  Tokenizer(spec).write_hf_files(dir.str());
  const std::string path = dir / "tokenizer.json";
  std::ifstream in(path);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::string from = "\"normalized\": false";
  const size_t at = text.find(from);
  ASSERT_NE(at, std::string::npos);
  text.replace(at, from.size(), "\"normalized\": true");
  std::ofstream(path, std::ios::trunc) << text;
  EXPECT_THAT(error_of([&] { Tokenizer::from_hf_json(path); }),
              HasSubstr("added token '<|im_start|>' has normalized=true"));
}

// ---- Austen ----

std::string austen_rdb() {
  const char* env = std::getenv("SECATEUR_AUSTEN_RDB");
  return env ? env : "/usr/lib/R/site-library/janeaustenr/data/Rdata.rdb";
}

#define SKIP_WITHOUT_AUSTEN()                                                    \
  if (!fs::exists(austen_rdb())) GTEST_SKIP() << "no janeaustenr database at " << austen_rdb()

TEST(Austen, SixNovelsWithTheirTitles) {
  SKIP_WITHOUT_AUSTEN();
  EXPECT_THAT(austen_names(austen_rdb()), ElementsAre("emma", "mansfieldpark", "northangerabbey", "persuasion",
                                                      "prideprejudice", "sensesensibility"));
  const std::string persuasion = austen_novel(austen_rdb(), "persuasion");
  EXPECT_EQ(persuasion.substr(0, 11), "Persuasion\n");
  EXPECT_THAT(persuasion.substr(0, 200), HasSubstr("Jane Austen"));
  EXPECT_GT(persuasion.size(), 400000u);
  EXPECT_NE(persuasion.back(), '\n');
  EXPECT_EQ(austen_novel(austen_rdb(), "emma").substr(0, 5), "EMMA\n");
  EXPECT_THAT(austen_novel(austen_rdb(), "prideprejudice"), HasSubstr("It is a truth universally acknowledged"));
}

TEST(Austen, UnknownNameListsTheNovels) {
  SKIP_WITHOUT_AUSTEN();
  EXPECT_THAT(error_of([] { austen_novel(austen_rdb(), "ulysses"); }),
              HasSubstr("no novel 'ulysses' (known: emma, mansfieldpark"));
}

// XDR "X\n" version 2 header, then the given big-endian ints.
std::string r_serialized(const std::vector<uint32_t>& ints) {
  std::string s = "X\n";
  for (uint32_t v : std::vector<uint32_t>{2, 0x030500, 0x020300}) s += {char(v >> 24), char(v >> 16), char(v >> 8), char(v)};
  for (uint32_t v : ints) s += {char(v >> 24), char(v >> 16), char(v >> 8), char(v)};
  return s;
}

TEST(RData, ReadsAStringVectorWithNa) {
  // STRSXP of 2: "ab" and NA_STRING
  const auto obj = rdata::unserialize(r_serialized({16, 2, 0x40009, 2}) + "ab" + r_serialized({0x9, 0xFFFFFFFF}).substr(14),
                                      "test");
  ASSERT_EQ(obj.type, rdata::str);
  EXPECT_THAT(obj.strings, ElementsAre("ab", ""));
  EXPECT_THAT(obj.string_na, ElementsAre(false, true));
}

TEST(RData, UnexpectedTypeAndTruncationNameTheByte) {
  EXPECT_THAT(error_of([] { rdata::unserialize(r_serialized({7}), "db.rdb: record at offset 42"); }),
              HasSubstr("db.rdb: record at offset 42: R serialisation: unexpected SEXP type 7"));
  EXPECT_THAT(error_of([] { rdata::unserialize(r_serialized({16, 1, 0x40009, 10}) + "abc", "x"); }),
              HasSubstr("10 bytes wanted, 3 left (truncated) at byte 30"));
  EXPECT_THAT(error_of([] { rdata::unserialize("A\n", "x"); }), HasSubstr("no \"X\\n\" header"));
}

// Copies the database into dir, the .rdb cut to its first rdb_bytes bytes (or patched).
std::string copy_database(const ScratchDir& dir, size_t rdb_bytes, size_t patch_at = 0) {
  const std::string rdx = austen_rdb().substr(0, austen_rdb().size() - 4) + ".rdx";
  fs::copy_file(rdx, dir / "Rdata.rdx");
  std::ifstream in(austen_rdb(), std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  bytes.resize(std::min(bytes.size(), rdb_bytes));
  if (patch_at) bytes.replace(patch_at, 64, std::string(64, '\x55'));
  std::ofstream(dir / "Rdata.rdb", std::ios::binary).write(bytes.data(), bytes.size());
  return dir / "Rdata.rdb";
}

TEST(Austen, TruncatedDatabaseIsRejectedNamingTheOffset) {
  SKIP_WITHOUT_AUSTEN();
  ScratchDir dir;
  const std::string rdb = copy_database(dir, 900000);   // persuasion's record starts at 878612
  EXPECT_EQ(austen_novel(rdb, "emma").substr(0, 4), "EMMA");
  const std::string err = error_of([&] { austen_novel(rdb, "persuasion"); });
  EXPECT_THAT(err, HasSubstr(rdb));
  EXPECT_THAT(err, HasSubstr("at offset 878612"));
  EXPECT_THAT(err, HasSubstr("past the end of the file"));
}

TEST(Austen, CorruptZlibStreamIsRejectedNamingTheOffset) {
  SKIP_WITHOUT_AUSTEN();
  ScratchDir dir;
  const std::string rdb = copy_database(dir, SIZE_MAX, 878612 + 1000);   // inside persuasion's stream
  const std::string err = error_of([&] { austen_novel(rdb, "persuasion"); });
  EXPECT_THAT(err, HasSubstr("record 'persuasion' at offset 878612"));
  EXPECT_THAT(err, HasSubstr("zlib"));
}

TEST(Austen, MissingIndexIsRejected) {
  ScratchDir dir;
  EXPECT_THAT(error_of([&] { austen_names(dir / "Rdata.rdb"); }), HasSubstr("Rdata.rdx: cannot open"));
  EXPECT_THAT(error_of([&] { austen_names(dir / "novels.txt"); }), HasSubstr("named *.rdb"));
}

}  // namespace
}  // namespace secateur::text
