// runtime/text/tokenizer.cpp — byte-level BPE encode/decode, bit-for-bit with HF `tokenizers`:
// added tokens cut out first, then the normalizer (normalize.h) on the text between them, then
// pre-tokens (pretokenize.h), then per pre-token BPE by merge rank (lowest rank first, leftmost on
// ties, the same priority queue HF's Word::merge_all runs).
#include "runtime/text/tokenizer.h"

#include <algorithm>
#include <array>
#include <deque>

#include "runtime/core/check.h"
#include "runtime/text/normalize.h"
#include "runtime/text/pretokenize.h"

namespace secateur::text {
namespace {

std::array<int32_t, 256> byte_to_code_point() {
  std::array<int32_t, 256> cp{};
  int32_t extra = 0;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    cp[b] = printable ? b : 256 + extra++;
  }
  return cp;
}

std::string utf8(int32_t cp) {
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else if (cp < 0x800) {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else {   // bytes_to_unicode never goes past U+0143
    s += static_cast<char>(0xE0 | (cp >> 12));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return s;
}

constexpr int32_t kMaxByteCodePoint = 324;   // bytes_to_unicode maps into U+0021..U+0143

// Inverse of bytes_to_unicode: code point -> byte, -1 where no byte maps there.
const std::array<int16_t, kMaxByteCodePoint>& code_point_to_byte() {
  static const std::array<int16_t, kMaxByteCodePoint> table = [] {
    std::array<int16_t, kMaxByteCodePoint> t;
    t.fill(-1);
    const auto cp = byte_to_code_point();
    for (int b = 0; b < 256; ++b) t[cp[b]] = static_cast<int16_t>(b);
    return t;
  }();
  return table;
}

// Next code point of s at i (advancing i); -1 for a malformed sequence.
int32_t next_code_point(const std::string& s, size_t& i) {
  const auto c = static_cast<unsigned char>(s[i]);
  int len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
  if (len == 0 || i + len > s.size()) {
    ++i;
    return -1;
  }
  int32_t cp = len == 1 ? c : len == 2 ? (c & 0x1F) : len == 3 ? (c & 0x0F) : (c & 0x07);
  for (int k = 1; k < len; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
  i += len;
  return cp;
}

// HF's ByteLevel decoder: a token whose every character is a byte stand-in becomes those bytes;
// any other token (added tokens, stray text) is copied as it is.
void append_token_bytes(const std::string& tok, std::string& out) {
  const auto& inv = code_point_to_byte();
  const size_t start = out.size();
  for (size_t i = 0; i < tok.size();) {
    const int32_t cp = next_code_point(tok, i);
    if (cp < 0 || cp >= kMaxByteCodePoint || inv[cp] < 0) {
      out.resize(start);
      out += tok;
      return;
    }
    out += static_cast<char>(inv[cp]);
  }
}

uint64_t pair_key(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

}  // namespace

const std::string& byte_to_unicode(uint8_t b) {
  static const std::array<std::string, 256> table = [] {
    std::array<std::string, 256> t;
    const auto cp = byte_to_code_point();
    for (int i = 0; i < 256; ++i) t[i] = utf8(cp[i]);
    return t;
  }();
  return table[b];
}

struct Tokenizer::WordCache {
  std::unordered_map<std::string_view, std::pair<uint32_t, uint32_t>> spans;   // word -> (offset, count) in ids
  std::vector<int32_t> ids;
  std::deque<std::string> normalized;   // pieces the normalizer changed; spans' keys may point into them
};

Tokenizer::Tokenizer(TokenizerSpec spec) : spec_(std::move(spec)) {
  const auto n = static_cast<int64_t>(spec_.tokens.size());
  SECATEUR_CHECK(n > 0 && n < INT32_MAX, "[text/tokenizer] vocabulary size {} out of range", n);
  SECATEUR_CHECK(spec_.token_types.empty() || static_cast<int64_t>(spec_.token_types.size()) == n,
                 "[text/tokenizer] {} token types for {} tokens", spec_.token_types.size(), n);
  for (const auto& [what, id] : {std::pair<const char*, int32_t>{"bos", spec_.bos_id}, {"eos", spec_.eos_id},
                                 {"unk", spec_.unk_id}, {"pad", spec_.pad_id}})
    SECATEUR_CHECK(id >= -1 && id < n, "[text/tokenizer] {} id {} outside the vocabulary (size {})", what, id, n);
  SECATEUR_CHECK(!spec_.add_bos || spec_.bos_id >= 0, "[text/tokenizer] add_bos is set but there is no bos id");
  SECATEUR_CHECK(spec_.normalizer.empty() || spec_.normalizer == "NFC",
                 "[text/tokenizer] unknown normalizer '{}' (known: none, NFC)", spec_.normalizer);

  ids_.reserve(spec_.tokens.size());
  for (int32_t id = 0; id < n; ++id) {
    auto [it, fresh] = ids_.emplace(spec_.tokens[id], id);
    SECATEUR_CHECK(fresh, "[text/tokenizer] token '{}' appears twice (ids {} and {})", spec_.tokens[id], it->second, id);
    const int32_t type = token_type(id);
    if ((type == token_control || type == token_user_defined) && !spec_.tokens[id].empty()) {
      added_ids_.push_back(id);
      added_first_byte_[static_cast<uint8_t>(spec_.tokens[id][0])] = true;
    }
  }
  // Longest first, so the first candidate that matches at a position is the leftmost-longest match.
  std::stable_sort(added_ids_.begin(), added_ids_.end(),
                   [&](int32_t a, int32_t b) { return spec_.tokens[a].size() > spec_.tokens[b].size(); });

  for (int b = 0; b < 256; ++b) {
    auto it = ids_.find(byte_to_unicode(static_cast<uint8_t>(b)));
    byte_ids_[b] = it == ids_.end() ? -1 : it->second;
  }

  merges_.reserve(spec_.merges.size());
  for (size_t rank = 0; rank < spec_.merges.size(); ++rank) {
    const std::string& m = spec_.merges[rank];
    const size_t space = m.find(' ');
    SECATEUR_CHECK(space != std::string::npos && m.find(' ', space + 1) == std::string::npos,
                   "[text/tokenizer] merge {} '{}' is not 'left right'", rank, m);
    const std::string left = m.substr(0, space), right = m.substr(space + 1);
    auto find = [&](const std::string& t) {
      auto it = ids_.find(t);
      SECATEUR_CHECK(it != ids_.end(), "[text/tokenizer] merge {} '{}': '{}' is not in the vocabulary", rank, m, t);
      return it->second;
    };
    const int32_t l = find(left), r = find(right), merged = find(left + right);
    merges_.insert_or_assign(pair_key(l, r), Merge{static_cast<int32_t>(rank), merged});   // HF: the last one wins
  }
  pre_ = std::make_shared<const Pretokenizer>(spec_.pre);
}

int32_t Tokenizer::vocab_size() const { return static_cast<int32_t>(spec_.tokens.size()); }

const std::string& Tokenizer::token(int32_t id) const {
  SECATEUR_CHECK(id >= 0 && id < vocab_size(), "[text/tokenizer] token id {} outside the vocabulary (size {})", id,
                 vocab_size());
  return spec_.tokens[id];
}

int32_t Tokenizer::token_id(const std::string& token) const {
  auto it = ids_.find(token);
  return it == ids_.end() ? -1 : it->second;
}

int32_t Tokenizer::token_type(int32_t id) const {
  SECATEUR_CHECK(id >= 0 && id < vocab_size(), "[text/tokenizer] token id {} outside the vocabulary (size {})", id,
                 vocab_size());
  return spec_.token_types.empty() ? token_normal : spec_.token_types[id];
}

const TokenizerSpec& Tokenizer::spec() const { return spec_; }

void Tokenizer::bpe_word(std::string_view word, std::vector<int32_t>& out) const {
  struct Symbol { int32_t id, prev, next; bool alive; };
  struct Candidate { int32_t rank, pos, new_id; };
  std::vector<Symbol> syms;
  syms.reserve(word.size());
  for (char c : word) {
    int32_t id = byte_ids_[static_cast<uint8_t>(c)];
    if (id < 0) id = spec_.unk_id;          // HF BPE: unknown character -> unk_token, or dropped without one
    if (id < 0) continue;
    const auto pos = static_cast<int32_t>(syms.size());
    syms.push_back({id, pos - 1, pos + 1, true});
  }
  if (syms.empty()) return;
  syms.back().next = -1;

  // Min-heap on (rank, pos), as HF's BinaryHeap<Merge>.
  auto later = [](const Candidate& a, const Candidate& b) { return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos; };
  std::vector<Candidate> heap;
  auto push = [&](int32_t pos) {
    auto it = merges_.find(pair_key(syms[pos].id, syms[syms[pos].next].id));
    if (it == merges_.end()) return;
    heap.push_back({it->second.rank, pos, it->second.new_id});
    std::push_heap(heap.begin(), heap.end(), later);
  };
  for (int32_t i = 0; i + 1 < static_cast<int32_t>(syms.size()); ++i) push(i);

  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), later);
    const Candidate top = heap.back();
    heap.pop_back();
    Symbol& left = syms[top.pos];
    if (!left.alive || left.next < 0) continue;
    Symbol& right = syms[left.next];
    auto it = merges_.find(pair_key(left.id, right.id));
    if (it == merges_.end() || it->second.new_id != top.new_id) continue;   // stale entry
    left.id = top.new_id;
    right.alive = false;
    left.next = right.next;
    if (right.next >= 0) syms[right.next].prev = top.pos;
    if (left.prev >= 0) push(left.prev);
    if (left.next >= 0) push(top.pos);
  }
  for (const Symbol& s : syms)
    if (s.alive) out.push_back(s.id);
}

void Tokenizer::encode_plain(std::string_view text, std::vector<int32_t>& out, WordCache& cache) const {
  std::string nfc;
  if (spec_.normalizer == "NFC" && to_nfc(text, nfc)) text = cache.normalized.emplace_back(std::move(nfc));
  std::vector<std::string_view> words;
  pre_->split(text, words);
  for (std::string_view w : words) {
    if (w.size() == 1 && byte_ids_[static_cast<uint8_t>(w[0])] >= 0) {
      out.push_back(byte_ids_[static_cast<uint8_t>(w[0])]);
      continue;
    }
    auto it = cache.spans.find(w);
    if (it == cache.spans.end()) {
      const auto offset = static_cast<uint32_t>(cache.ids.size());
      bpe_word(w, cache.ids);
      it = cache.spans.emplace(w, std::make_pair(offset, static_cast<uint32_t>(cache.ids.size()) - offset)).first;
    }
    const int32_t* first = cache.ids.data() + it->second.first;
    out.insert(out.end(), first, first + it->second.second);
  }
}

// HF's AddedVocabulary::find_matches: leftmost-longest matches, each scan resuming after the last
// match; a control-token match with parse_special=false is skipped but still consumed.
void Tokenizer::split_added(std::string_view text, bool parse_special,
                            std::vector<std::pair<std::string_view, int32_t>>& pieces) const {
  size_t plain_start = 0;
  for (size_t i = 0; i < text.size();) {
    int32_t hit = -1;
    if (added_first_byte_[static_cast<uint8_t>(text[i])]) {
      for (int32_t id : added_ids_) {
        const std::string& t = spec_.tokens[id];
        if (text.compare(i, t.size(), t) == 0) {
          hit = id;
          break;
        }
      }
    }
    if (hit < 0) {
      ++i;
      continue;
    }
    const size_t end = i + spec_.tokens[hit].size();
    if (parse_special || token_type(hit) != token_control) {
      if (i > plain_start) pieces.emplace_back(text.substr(plain_start, i - plain_start), -1);
      pieces.emplace_back(std::string_view(), hit);
      plain_start = end;
    }
    i = end;
  }
  if (plain_start < text.size()) pieces.emplace_back(text.substr(plain_start), -1);
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool parse_special) const {
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 1);
  if (spec_.add_bos) out.push_back(spec_.bos_id);
  WordCache cache;
  if (added_ids_.empty()) {
    encode_plain(text, out, cache);
    return out;
  }
  std::vector<std::pair<std::string_view, int32_t>> pieces;
  split_added(text, parse_special, pieces);
  for (const auto& [piece, id] : pieces) {
    if (id >= 0)
      out.push_back(id);
    else
      encode_plain(piece, out, cache);
  }
  return out;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special) const {
  std::string out;
  out.reserve(ids.size() * 4);
  for (int32_t id : ids) {
    const int32_t type = token_type(id);   // range-checks id
    if (type == token_control && skip_special) continue;
    if (type == token_control || type == token_user_defined)
      out += spec_.tokens[id];
    else
      append_token_bytes(spec_.tokens[id], out);
  }
  return out;
}

}  // namespace secateur::text
