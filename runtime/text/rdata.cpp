// runtime/text/rdata.cpp — R unserialize for the subset in rdata.h, and zlib inflation.
// Format facts (R's serialize.c): a header "X\n", then ints version, writer version, minimal reader
// version, and for version 3 a length-prefixed native encoding name. Each item starts with a flags
// word: type in bits 0-7, "is object" bit 8, has-attributes bit 9, has-tag bit 10, gp levels from
// bit 12. Vectors are a length (-1 then two ints for long vectors) and their elements, then the
// attribute pairlist if any; pairlist cells are attributes, tag, CAR, then CDR.
#include "runtime/text/rdata.h"

#include <zlib.h>

#include <cstring>

#include "runtime/core/check.h"

namespace secateur::text::rdata {
namespace {

constexpr int kMaxDepth = 64;
constexpr int32_t kLatin1Mask = 1 << 2;   // CHARSXP gp bit: Latin-1 encoded

std::string latin1_to_utf8(const std::string& s) {
  std::string out;
  out.reserve(s.size() + s.size() / 8);
  for (unsigned char c : s) {
    if (c < 0x80) {
      out += static_cast<char>(c);
    } else {
      out += static_cast<char>(0xC0 | (c >> 6));
      out += static_cast<char>(0x80 | (c & 0x3F));
    }
  }
  return out;
}

class Reader {
 public:
  Reader(std::string_view data, const std::string& where) : data_(data), where_(where) {}

  RObject read_top() {
    SECATEUR_CHECK(data_.size() >= 2 && data_.substr(0, 2) == "X\n",
                   "[text/austen] {}: not R XDR serialisation (no \"X\\n\" header) at byte 0", where_);
    pos_ = 2;
    const int32_t version = read_int();
    SECATEUR_CHECK(version == 2 || version == 3, "[text/austen] {}: R serialisation version {} at byte 2 (need 2 or 3)",
                   where_, version);
    read_int();   // R version that wrote it
    read_int();   // minimal R version to read it
    if (version == 3) {
      const int32_t n = read_int();
      check(n >= 0 && n <= 64, "bad native-encoding length {}", n);
      take(static_cast<size_t>(n));
    }
    RObject top = read_item(0);
    return top;
  }

 private:
  template <class... Args>
  void check(bool ok, const char* what, Args&&... args) {
    if (!ok)
      SECATEUR_FAIL("[text/austen] {}: R serialisation: {} at byte {} of the decompressed record", where_,
                    fmt::format(fmt::runtime(what), std::forward<Args>(args)...), pos_);
  }

  std::string_view take(size_t n) {
    check(n <= data_.size() - pos_, "{} bytes wanted, {} left (truncated)", n, data_.size() - pos_);
    std::string_view s = data_.substr(pos_, n);
    pos_ += n;
    return s;
  }

  int32_t read_int() {
    const std::string_view b = take(4);
    const uint32_t u = (uint32_t(uint8_t(b[0])) << 24) | (uint32_t(uint8_t(b[1])) << 16) |
                       (uint32_t(uint8_t(b[2])) << 8) | uint32_t(uint8_t(b[3]));
    return static_cast<int32_t>(u);
  }

  double read_double() {
    const std::string_view b = take(8);
    uint64_t u = 0;
    for (char c : b) u = (u << 8) | uint8_t(c);
    double d;
    std::memcpy(&d, &u, sizeof d);
    return d;
  }

  // Vector length, checked against the bytes left (each element takes at least min_bytes).
  size_t read_length(size_t min_bytes) {
    int64_t n = read_int();
    if (n == -1) {   // long vector: upper and lower 32 bits
      const uint64_t hi = static_cast<uint32_t>(read_int()), lo = static_cast<uint32_t>(read_int());
      n = static_cast<int64_t>(hi << 32 | lo);   // a negative upper half gives n < 0: refused below
    }
    check(n >= 0 && static_cast<uint64_t>(n) * min_bytes <= data_.size() - pos_, "bad vector length {}", n);
    return static_cast<size_t>(n);
  }

  RObject read_item(int depth) { return read_item(read_int(), depth); }

  RObject read_item(int32_t flags, int depth) {
    check(depth < kMaxDepth, "objects nested deeper than {}", kMaxDepth);
    const int32_t type = flags & 0xFF;
    const bool has_attr = flags & (1 << 9);   // pairlists handle their own attributes and tags
    const int32_t levels = flags >> 12;
    RObject obj;
    obj.type = type;
    switch (type) {
      case nil_value:
        obj.type = nil;
        return obj;
      case ref: {
        int64_t index = static_cast<uint32_t>(flags) >> 8;
        if (index == 0) index = read_int();
        check(index >= 1 && index <= static_cast<int64_t>(refs_.size()), "reference {} outside the table (size {})",
              index, refs_.size());
        obj.type = sym;
        obj.text = refs_[index - 1];
        return obj;
      }
      case sym: {
        RObject name = read_item(depth + 1);
        check(name.type == chars, "symbol name of type {} (expected CHARSXP 9)", name.type);
        obj.text = name.text;
        refs_.push_back(obj.text);
        return obj;
      }
      case list:
        read_pairlist(flags, obj, depth);
        return obj;
      case chars: {
        const int32_t n = read_int();
        if (n == -1) {
          obj.na = true;
          return obj;
        }
        check(n >= 0, "bad string length {}", n);
        obj.text = std::string(take(static_cast<size_t>(n)));
        if (levels & kLatin1Mask) obj.text = latin1_to_utf8(obj.text);
        break;
      }
      case lgl:
      case ints: {
        const size_t n = read_length(4);
        obj.integers.resize(n);
        for (auto& v : obj.integers) v = read_int();
        break;
      }
      case real: {
        const size_t n = read_length(8);
        obj.reals.resize(n);
        for (auto& v : obj.reals) v = read_double();
        break;
      }
      case str: {
        const size_t n = read_length(8);
        obj.strings.resize(n);
        obj.string_na.resize(n);
        for (size_t i = 0; i < n; ++i) {
          RObject s = read_item(depth + 1);
          check(s.type == chars, "string element {} of type {} (expected CHARSXP 9)", i, s.type);
          obj.strings[i] = std::move(s.text);
          obj.string_na[i] = s.na;
        }
        break;
      }
      case vec: {
        const size_t n = read_length(4);
        obj.items.reserve(n);
        for (size_t i = 0; i < n; ++i) obj.items.push_back(read_item(depth + 1));
        break;
      }
      default:
        check(false, "unexpected SEXP type {} (flags 0x{:08x}; supported: 1 2 9 10 13 14 16 19 254 255)", type,
              static_cast<uint32_t>(flags));
    }
    if (has_attr) read_attributes(obj, depth);
    return obj;
  }

  void read_attributes(RObject& obj, int depth) {
    RObject attrs = read_item(depth + 1);
    check(attrs.type == list || attrs.type == nil, "attributes of type {} (expected a pairlist)", attrs.type);
    obj.attr_names = std::move(attrs.tags);
    obj.attr_values = std::move(attrs.items);
  }

  // A pairlist, walked along its CDRs without recursion; its own attributes are dropped.
  void read_pairlist(int32_t flags, RObject& obj, int depth) {
    while ((flags & 0xFF) == list) {
      if (flags & (1 << 9)) {
        RObject ignored;
        read_attributes(ignored, depth);
      }
      std::string tag;
      if (flags & (1 << 10)) {
        RObject t = read_item(depth + 1);
        check(t.type == sym, "pairlist tag of type {} (expected a symbol)", t.type);
        tag = t.text;
      }
      obj.items.push_back(read_item(depth + 1));
      obj.tags.push_back(std::move(tag));
      flags = read_int();
    }
    check((flags & 0xFF) == nil_value, "pairlist ending in type {} (expected NULL 254)", flags & 0xFF);
  }

  std::string_view data_;
  const std::string& where_;
  size_t pos_ = 0;
  std::vector<std::string> refs_;   // the reference table: symbols, in the order they were read
};

}  // namespace

const RObject* RObject::attribute(const std::string& name) const {
  for (size_t i = 0; i < attr_names.size(); ++i)
    if (attr_names[i] == name) return &attr_values[i];
  return nullptr;
}

RObject unserialize(std::string_view data, const std::string& where) { return Reader(data, where).read_top(); }

std::string inflate(std::string_view data, size_t expected_size, const std::string& where) {
  z_stream zs{};
  // deflate packs at most ~1032 bytes into one: a larger announced size is a corrupt header, not
  // an allocation to make.
  SECATEUR_CHECK(expected_size / 1032 <= data.size() + 64, "[text/austen] {}: the record header announces {} bytes, "
                 "more than a zlib stream of {} bytes can hold", where, expected_size, data.size());
  SECATEUR_CHECK(inflateInit2(&zs, 15 + 32) == Z_OK, "[text/austen] {}: zlib init failed", where);   // zlib or gzip
  // One spare byte when the size is known, so a stream longer than announced shows as overflow.
  std::string out(expected_size ? expected_size + 1 : data.size() * 4 + 1024, '\0');
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  zs.avail_in = static_cast<uInt>(data.size());
  int rc = Z_OK;
  bool overflow = false;
  while (rc == Z_OK) {
    if (zs.total_out == out.size()) {
      overflow = expected_size != 0;
      if (overflow) break;
      out.resize(out.size() * 2);
    }
    zs.next_out = reinterpret_cast<Bytef*>(&out[zs.total_out]);
    zs.avail_out = static_cast<uInt>(out.size() - zs.total_out);
    rc = ::inflate(&zs, Z_NO_FLUSH);
  }
  const size_t produced = zs.total_out, consumed = zs.total_in;
  const std::string msg = zs.msg ? zs.msg : "";
  inflateEnd(&zs);
  SECATEUR_CHECK(!overflow, "[text/austen] {}: zlib stream longer than its announced {} bytes", where, expected_size);
  SECATEUR_CHECK(rc == Z_STREAM_END, "[text/austen] {}: bad zlib stream ({}) after {} of {} input bytes", where,
                 rc == Z_BUF_ERROR ? "truncated" : msg.empty() ? fmt::format("zlib error {}", rc) : msg, consumed,
                 data.size());
  SECATEUR_CHECK(!expected_size || produced == expected_size,
                 "[text/austen] {}: zlib stream gives {} bytes, record header says {}", where, produced, expected_size);
  out.resize(produced);
  return out;
}

}  // namespace secateur::text::rdata
