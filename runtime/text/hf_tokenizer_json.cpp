// runtime/text/hf_tokenizer_json.cpp — Tokenizer <-> Hugging Face files: tokenizer.json (the
// `tokenizers` serialisation: BPE model, added tokens, ByteLevel pre-tokenizer/decoder/post-processor)
// and tokenizer_config.json (what transformers' PreTrainedTokenizerFast reads beside it).
// Only what Secateur's encoder reproduces exactly is accepted; anything else is an error naming it.
// One approximation: HF matches added tokens with normalized=true in a second pass after the
// normalized=false ones; here all added tokens share one pass (this differs only where such a
// token overlaps another added token; with a normalizer such tokens are refused, as HF would match
// them in the normalised text). Files written here always use normalized=false, so they encode in
// HF exactly as here.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <unordered_map>
#include <nlohmann/json.hpp>

#include "runtime/core/check.h"
#include "runtime/text/pretokenize.h"
#include "runtime/text/tokenizer.h"

namespace secateur::text {
namespace {

using json = nlohmann::json;
using ordered_json = nlohmann::ordered_json;

json read_json(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  SECATEUR_CHECK(in, "[text/tokenizer] {}: cannot open", path);
  try {
    return json::parse(in);
  } catch (const json::exception& e) {
    SECATEUR_FAIL("[text/tokenizer] {}: invalid JSON: {}", path, e.what());
  }
}

// Writes text to path via path.tmp and a rename, so a reader never sees half a file.
void write_atomically(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    SECATEUR_CHECK(out, "[text/tokenizer] {}: cannot create", tmp);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    out.flush();
    SECATEUR_CHECK(out, "[text/tokenizer] {}: write failed", tmp);
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  SECATEUR_CHECK(!ec, "[text/tokenizer] cannot rename {} to {}: {}", tmp, path, ec.message());
}

bool is_null_or(const json& j, const char* key, const json& allowed) {
  return !j.contains(key) || j[key].is_null() || j[key] == allowed;
}

ordered_json byte_level(bool trim_offsets, bool use_regex) {
  return {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", trim_offsets}, {"use_regex", use_regex}};
}

// Checks one ByteLevel pre-tokenizer entry: no prefix space, GPT-2's regex split on or off.
void check_byte_level(const json& p, bool use_regex, const std::string& path) {
  SECATEUR_CHECK(p.value("add_prefix_space", false) == false,
                 "[text/tokenizer] {}: ByteLevel pre-tokenizer with add_prefix_space=true is not supported", path);
  SECATEUR_CHECK(p.value("use_regex", true) == use_regex,
                 "[text/tokenizer] {}: ByteLevel pre-tokenizer with use_regex={} is not supported here", path,
                 !use_regex);
}

// Qwen2's Split: its pattern (kQwen2Pattern) as a Regex, isolated, not inverted.
bool is_qwen2_split(const json& p) {
  return p.value("type", "") == "Split" && p.contains("pattern") && p["pattern"].is_object() &&
         p["pattern"].value("Regex", "") == kQwen2Pattern && p.value("behavior", "") == "Isolated" &&
         p.value("invert", true) == false;
}

// "gpt2" for a lone ByteLevel, "smollm" for Sequence[Digits(individual), ByteLevel], "qwen2" for
// Sequence[Split(Qwen2's regex, isolated), ByteLevel(use_regex=false)].
std::string infer_pre(const json& pre, const std::string& path) {
  SECATEUR_CHECK(pre.is_object(), "[text/tokenizer] {}: pre_tokenizer missing (a ByteLevel one is required)", path);
  const std::string type = pre.value("type", "");
  if (type == "ByteLevel") {
    check_byte_level(pre, true, path);
    return "gpt2";
  }
  if (type == "Sequence" && pre.contains("pretokenizers") && pre["pretokenizers"].is_array()) {
    const json& seq = pre["pretokenizers"];
    if (seq.size() == 1 && seq[0].value("type", "") == "ByteLevel") {
      check_byte_level(seq[0], true, path);
      return "gpt2";
    }
    if (seq.size() == 2 && seq[0].value("type", "") == "Digits" && seq[0].value("individual_digits", false) &&
        seq[1].value("type", "") == "ByteLevel") {
      check_byte_level(seq[1], true, path);
      return "smollm";
    }
    if (seq.size() == 2 && is_qwen2_split(seq[0]) && seq[1].value("type", "") == "ByteLevel") {
      check_byte_level(seq[1], false, path);
      return "qwen2";
    }
  }
  SECATEUR_FAIL("[text/tokenizer] {}: unsupported pre_tokenizer {} (supported: ByteLevel, "
                "Sequence[Digits(individual_digits=true), ByteLevel], "
                "Sequence[Split(Qwen2's regex, Isolated), ByteLevel(use_regex=false)])", path, pre.dump());
}

// normalizer: none, or NFC (Qwen2's).
std::string infer_normalizer(const json& j, const std::string& path) {
  if (!j.contains("normalizer") || j["normalizer"].is_null()) return "";
  const json& n = j["normalizer"];
  SECATEUR_CHECK(n.is_object() && n.value("type", "") == "NFC" && n.size() == 1,
                 "[text/tokenizer] {}: normalizer {} is not supported (supported: none, NFC)", path, n.dump());
  return "NFC";
}

// tokenizer_config.json's special tokens are either strings or {"content": ...} objects.
std::string token_text(const json& j) {
  if (j.is_string()) return j.get<std::string>();
  if (j.is_object() && j.contains("content") && j["content"].is_string()) return j["content"].get<std::string>();
  return {};
}

// Reads what tokenizer.json lacks (bos/eos/pad, chat template, model_max_length) from a
// tokenizer_config.json beside it, when there is one. id_of(text, what, file) looks a token up.
template <class IdOf>
void read_config(const std::string& path, const IdOf& id_of, TokenizerSpec& spec) {
  const json cfg = read_json(path);
  SECATEUR_CHECK(cfg.is_object(), "[text/tokenizer] {}: not a JSON object", path);
  for (const auto& [key, id] : {std::pair<const char*, int32_t*>{"bos_token", &spec.bos_id},
                                {"eos_token", &spec.eos_id}, {"unk_token", &spec.unk_id}, {"pad_token", &spec.pad_id}}) {
    const std::string text = cfg.contains(key) ? token_text(cfg[key]) : std::string();
    if (!text.empty()) *id = id_of(text, key, path);
  }
  if (cfg.contains("chat_template") && cfg["chat_template"].is_string())
    spec.chat_template = cfg["chat_template"].get<std::string>();
  if (cfg.contains("model_max_length") && cfg["model_max_length"].is_number_integer())
    spec.model_max_length = cfg["model_max_length"].get<int64_t>();
}

// post_processor: ByteLevel (nothing added) or a TemplateProcessing that puts one special token
// before $A (add_bos), possibly inside a Sequence.
bool infer_add_bos(const json& post, std::string& bos, const std::string& path) {
  if (!post.is_object()) return false;
  const std::string type = post.value("type", "");
  if (type == "ByteLevel") return false;
  if (type == "Sequence" && post.contains("processors")) {
    bool add = false;
    for (const json& p : post["processors"]) add = infer_add_bos(p, bos, path) || add;
    return add;
  }
  if (type == "TemplateProcessing" && post.contains("single") && post["single"].is_array()) {
    const json& single = post["single"];
    if (single.size() == 1 && single[0].contains("Sequence")) return false;
    if (single.size() == 2 && single[0].contains("SpecialToken") && single[1].contains("Sequence")) {
      bos = single[0]["SpecialToken"].value("id", "");
      return true;
    }
  }
  SECATEUR_FAIL("[text/tokenizer] {}: unsupported post_processor {} (supported: ByteLevel, a BOS template)", path,
                post.dump());
}

// The tokens (model.vocab and added_tokens; ids contiguous from 0) and their types.
void read_vocab(const json& j, const std::string& path, TokenizerSpec& spec) {
  std::map<int64_t, std::pair<std::string, int32_t>> by_id;   // id -> (text, type)
  for (const auto& [text, id] : j["model"]["vocab"].items()) {
    SECATEUR_CHECK(id.is_number_integer() && id.get<int64_t>() >= 0 && id.get<int64_t>() < INT32_MAX,
                   "[text/tokenizer] {}: vocab entry '{}' has a bad id {}", path, text, id.dump());
    auto [it, fresh] = by_id.emplace(id.get<int64_t>(), std::make_pair(text, int32_t{token_normal}));
    SECATEUR_CHECK(fresh, "[text/tokenizer] {}: id {} used by '{}' and '{}'", path, id.get<int64_t>(),
                   it->second.first, text);
  }
  if (j.contains("added_tokens") && !j["added_tokens"].is_null()) {
    SECATEUR_CHECK(j["added_tokens"].is_array(), "[text/tokenizer] {}: added_tokens is not an array", path);
    for (const json& a : j["added_tokens"]) {
      SECATEUR_CHECK(a.is_object() && a.contains("id") && a["id"].is_number_integer() && a.contains("content") &&
                         a["content"].is_string(),
                     "[text/tokenizer] {}: added token {} lacks an integer id or string content", path, a.dump());
      SECATEUR_CHECK(!a.value("lstrip", false) && !a.value("rstrip", false) && !a.value("single_word", false),
                     "[text/tokenizer] {}: added token '{}' uses lstrip/rstrip/single_word (not supported)", path,
                     a["content"].get<std::string>());
      SECATEUR_CHECK(spec.normalizer.empty() || !a.value("normalized", !a.value("special", false)),
                     "[text/tokenizer] {}: added token '{}' has normalized=true, which with a normalizer is not "
                     "supported (HF matches it in the normalised text)", path, a["content"].get<std::string>());
      const int64_t id = a["id"].get<int64_t>();
      SECATEUR_CHECK(id >= 0 && id < INT32_MAX, "[text/tokenizer] {}: added token id {} out of range", path, id);
      by_id[id] = {a["content"].get<std::string>(), a.value("special", false) ? token_control : token_user_defined};
    }
  }
  SECATEUR_CHECK(!by_id.empty(), "[text/tokenizer] {}: empty vocabulary", path);
  const int64_t n = by_id.rbegin()->first + 1;
  SECATEUR_CHECK(static_cast<int64_t>(by_id.size()) == n,
                 "[text/tokenizer] {}: token ids are not contiguous ({} tokens, largest id {})", path, by_id.size(),
                 n - 1);
  for (auto& [id, entry] : by_id) {
    spec.tokens.push_back(std::move(entry.first));
    spec.token_types.push_back(entry.second);
  }
}

// The merges, as "a b" strings (HF writes them either way).
void read_merges(const json& model, const std::string& path, TokenizerSpec& spec) {
  size_t rank = 0;
  for (const json& m : model["merges"]) {
    if (m.is_string()) {
      spec.merges.push_back(m.get<std::string>());
    } else {
      SECATEUR_CHECK(m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string(),
                     "[text/tokenizer] {}: merge {} is neither \"a b\" nor [\"a\", \"b\"]: {}", path, rank, m.dump());
      const std::string l = m[0].get<std::string>(), r = m[1].get<std::string>();
      SECATEUR_CHECK(l.find(' ') == std::string::npos && r.find(' ') == std::string::npos,
                     "[text/tokenizer] {}: merge {} has a token with a space (not supported)", path, rank);
      spec.merges.push_back(l + " " + r);
    }
    ++rank;
  }
}

Tokenizer parse_tokenizer_json(const std::string& path) {
  const json j = read_json(path);
  SECATEUR_CHECK(j.is_object() && j.contains("model") && j["model"].is_object(),
                 "[text/tokenizer] {}: no \"model\" object", path);
  const json& model = j["model"];
  SECATEUR_CHECK(model.value("type", "BPE") == "BPE", "[text/tokenizer] {}: model type '{}' is not BPE", path,
                 model.value("type", ""));
  SECATEUR_CHECK(model.contains("vocab") && model["vocab"].is_object(),
                 "[text/tokenizer] {}: model.vocab missing or not an object", path);
  SECATEUR_CHECK(model.contains("merges") && model["merges"].is_array(),
                 "[text/tokenizer] {}: model.merges missing or not an array", path);
  SECATEUR_CHECK(is_null_or(model, "dropout", json()) && is_null_or(model, "continuing_subword_prefix", "") &&
                     is_null_or(model, "end_of_word_suffix", "") && is_null_or(model, "byte_fallback", false) &&
                     is_null_or(model, "ignore_merges", false) && is_null_or(model, "fuse_unk", false),
                 "[text/tokenizer] {}: unsupported BPE options (dropout, subword prefix/suffix, byte_fallback, "
                 "ignore_merges and fuse_unk must be unset)", path);

  TokenizerSpec spec;
  spec.normalizer = infer_normalizer(j, path);
  spec.pre = infer_pre(j.value("pre_tokenizer", json()), path);

  read_vocab(j, path, spec);
  read_merges(model, path, spec);

  std::unordered_map<std::string, int32_t> index;   // text -> id, for the special tokens named by text
  for (size_t id = 0; id < spec.tokens.size(); ++id) index.emplace(spec.tokens[id], static_cast<int32_t>(id));
  auto id_of = [&](const std::string& text, const char* what, const std::string& file) {
    auto it = index.find(text);
    SECATEUR_CHECK(it != index.end(), "[text/tokenizer] {}: {} '{}' is not in the vocabulary", file, what, text);
    return it->second;
  };
  std::string bos_text;
  spec.add_bos = infer_add_bos(j.value("post_processor", json()), bos_text, path);
  if (spec.add_bos) spec.bos_id = id_of(bos_text, "post_processor's BOS", path);
  if (model.contains("unk_token") && model["unk_token"].is_string())
    spec.unk_id = id_of(model["unk_token"].get<std::string>(), "unk_token", path);
  const auto cfg = std::filesystem::path(path).parent_path() / "tokenizer_config.json";
  if (std::filesystem::exists(cfg)) read_config(cfg.string(), id_of, spec);

  try {
    return Tokenizer(std::move(spec));
  } catch (const Error& e) {
    SECATEUR_FAIL("{} (in {})", e.what(), path);
  }
}

}  // namespace

Tokenizer Tokenizer::from_hf_json(const std::string& path) {
  try {
    return parse_tokenizer_json(path);
  } catch (const json::exception& e) {   // a value of another type than the format says (a token id a string...)
    SECATEUR_FAIL("[text/tokenizer] {}: {}", path, e.what());
  }
}

void Tokenizer::write_hf_files(const std::string& dir) const {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  SECATEUR_CHECK(!ec, "[text/tokenizer] cannot create directory {}: {}", dir, ec.message());
  const int32_t n = vocab_size();

  ordered_json added = ordered_json::array();
  for (int32_t id = 0; id < n; ++id) {
    const int32_t type = token_type(id);
    if (type != token_control && type != token_user_defined) continue;
    added.push_back({{"id", id}, {"content", spec_.tokens[id]}, {"single_word", false}, {"lstrip", false},
                     {"rstrip", false}, {"normalized", false}, {"special", type == token_control}});
  }

  ordered_json pre = byte_level(true, true);
  if (spec_.pre == "smollm")
    pre = {{"type", "Sequence"},
           {"pretokenizers", ordered_json::array({{{"type", "Digits"}, {"individual_digits", true}}, pre})}};
  if (spec_.pre == "qwen2") {   // as transformers' Qwen2Tokenizer builds it
    ordered_json split = {{"type", "Split"},
                          {"pattern", {{"Regex", std::string(kQwen2Pattern)}}},
                          {"behavior", "Isolated"},
                          {"invert", false}};
    pre = {{"type", "Sequence"}, {"pretokenizers", ordered_json::array({split, byte_level(true, false)})}};
  }
  const ordered_json normalizer = spec_.normalizer == "NFC" ? ordered_json{{"type", "NFC"}} : ordered_json();

  ordered_json post = byte_level(false, false);
  if (spec_.add_bos) {
    const std::string& bos = spec_.tokens[spec_.bos_id];
    ordered_json special = {{"SpecialToken", {{"id", bos}, {"type_id", 0}}}};
    ordered_json templ = {
        {"type", "TemplateProcessing"},
        {"single", ordered_json::array({special, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
        {"pair", ordered_json::array({special, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}, special,
                                      {{"Sequence", {{"id", "B"}, {"type_id", 1}}}}})},
        {"special_tokens", {{bos, {{"id", bos}, {"ids", {spec_.bos_id}}, {"tokens", {bos}}}}}}};
    post = {{"type", "Sequence"}, {"processors", ordered_json::array({post, templ})}};
  }

  // Appended in id order through ordered_map's vector base: operator[] would search linearly
  // (quadratic for 49k tokens). The constructor has already rejected duplicate tokens.
  ordered_json vocab = ordered_json::object();
  auto& entries = vocab.get_ref<ordered_json::object_t&>();
  entries.reserve(static_cast<size_t>(n));
  for (int32_t id = 0; id < n; ++id) entries.emplace_back(spec_.tokens[id], id);
  ordered_json model = {{"type", "BPE"},
                        {"dropout", nullptr},
                        {"unk_token", spec_.unk_id >= 0 ? ordered_json(spec_.tokens[spec_.unk_id]) : ordered_json()},
                        {"continuing_subword_prefix", nullptr},
                        {"end_of_word_suffix", nullptr},
                        {"fuse_unk", false},
                        {"byte_fallback", false},
                        {"ignore_merges", false},
                        {"vocab", std::move(vocab)},
                        {"merges", spec_.merges}};
  ordered_json tok = {{"version", "1.0"},       {"truncation", nullptr},             {"padding", nullptr},
                      {"added_tokens", added},  {"normalizer", normalizer},          {"pre_tokenizer", pre},
                      {"post_processor", post}, {"decoder", byte_level(true, true)}, {"model", std::move(model)}};

  ordered_json cfg = {{"tokenizer_class", "PreTrainedTokenizerFast"},
                      {"clean_up_tokenization_spaces", false},
                      {"add_prefix_space", false},
                      {"model_max_length", spec_.model_max_length}};
  for (const auto& [key, id] : {std::pair<const char*, int32_t>{"bos_token", spec_.bos_id}, {"eos_token", spec_.eos_id},
                                {"unk_token", spec_.unk_id}, {"pad_token", spec_.pad_id}})
    if (id >= 0) cfg[key] = spec_.tokens[id];
  if (!spec_.chat_template.empty()) cfg["chat_template"] = spec_.chat_template;

  std::string tok_text, cfg_text;
  try {
    tok_text = tok.dump(2) + "\n";
    cfg_text = cfg.dump(2) + "\n";
  } catch (const ordered_json::exception& e) {   // a token or the chat template is not valid UTF-8
    SECATEUR_FAIL("[text/tokenizer] {}: cannot write tokenizer files: {}", dir, e.what());
  }
  const auto base = std::filesystem::path(dir);
  write_atomically((base / "tokenizer.json").string(), tok_text);
  write_atomically((base / "tokenizer_config.json").string(), cfg_text);
}

}  // namespace secateur::text
