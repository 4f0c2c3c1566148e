// runtime/text/austen.cpp — the janeaustenr lazy-load database. Layout (R's makeLazyLoadDB):
// Rdata.rdx is a gzip-compressed serialised list (variables = name -> (offset, length) in the .rdb,
// references, compressed); each .rdb record is a 4-byte big-endian uncompressed size and a zlib
// stream of one serialised object, here a character vector per novel.
#include "runtime/text/austen.h"

#include <fstream>

#include "runtime/core/check.h"
#include "runtime/text/rdata.h"

namespace secateur::text {
namespace {

struct IndexEntry {
  std::string name;
  int64_t offset, length;
};

std::string rdx_path_of(const std::string& rdb_path) {
  const std::string ext = ".rdb";
  SECATEUR_CHECK(rdb_path.size() > ext.size() && rdb_path.compare(rdb_path.size() - ext.size(), ext.size(), ext) == 0,
                 "[text/austen] {}: expected an R lazy-load database named *.rdb", rdb_path);
  return rdb_path.substr(0, rdb_path.size() - ext.size()) + ".rdx";
}

// length bytes at offset of path (length -1: to the end).
std::string read_range(const std::string& path, int64_t offset, int64_t length) {
  std::ifstream in(path, std::ios::binary);
  SECATEUR_CHECK(in, "[text/austen] {}: cannot open", path);
  in.seekg(0, std::ios::end);
  const int64_t size = in.tellg();
  if (length < 0) length = size - offset;
  SECATEUR_CHECK(offset >= 0 && length >= 0 && offset + length <= size,
                 "[text/austen] {}: record at offset {} with length {} extends past the end of the file (size {})",
                 path, offset, length, size);
  std::string bytes(static_cast<size_t>(length), '\0');
  in.seekg(offset);
  in.read(bytes.data(), length);
  SECATEUR_CHECK(in, "[text/austen] {}: read of {} bytes at offset {} failed", path, length, offset);
  return bytes;
}

uint32_t be32(std::string_view b) {
  return (uint32_t(uint8_t(b[0])) << 24) | (uint32_t(uint8_t(b[1])) << 16) | (uint32_t(uint8_t(b[2])) << 8) |
         uint32_t(uint8_t(b[3]));
}

// A lazy-load record: big-endian uncompressed size, then a zlib stream.
std::string inflate_record(std::string_view record, const std::string& where) {
  SECATEUR_CHECK(record.size() >= 4, "[text/austen] {}: record of {} bytes has no size header", where, record.size());
  return rdata::inflate(record.substr(4), be32(record), where);
}

std::vector<std::string> names_of(const rdata::RObject& obj, size_t n, const std::string& where) {
  const rdata::RObject* names = obj.attribute("names");
  SECATEUR_CHECK(names && names->type == rdata::str && names->strings.size() == n,
                 "[text/austen] {}: list of {} without {} names", where, n, n);
  return names->strings;
}

std::vector<IndexEntry> read_index(const std::string& rdb_path) {
  const std::string rdx = rdx_path_of(rdb_path);
  const std::string file = read_range(rdx, 0, -1);
  const bool gzip = file.size() >= 2 && uint8_t(file[0]) == 0x1F && uint8_t(file[1]) == 0x8B;
  const std::string where = rdx + ": index at offset 0";
  const std::string data = gzip ? rdata::inflate(file, 0, where) : inflate_record(file, where);
  const rdata::RObject top = rdata::unserialize(data, where);
  SECATEUR_CHECK(top.type == rdata::vec, "[text/austen] {}: index is SEXP type {}, not a list (19)", where, top.type);
  const std::vector<std::string> keys = names_of(top, top.items.size(), where);

  const rdata::RObject* variables = nullptr;
  for (size_t i = 0; i < keys.size(); ++i) {
    const rdata::RObject& item = top.items[i];
    if (keys[i] == "variables") variables = &item;
    if (keys[i] == "compressed") {   // TRUE or 1 = zlib; 2 bzip2 and 3 xz are not read here
      const bool zlib = (item.type == rdata::lgl || item.type == rdata::ints) && item.integers.size() == 1 &&
                        item.integers[0] == 1;
      SECATEUR_CHECK(zlib, "[text/austen] {}: records are not zlib-compressed (compressed = {})", where,
                     item.integers.empty() ? -1 : item.integers[0]);
    }
  }
  SECATEUR_CHECK(variables && variables->type == rdata::vec, "[text/austen] {}: no 'variables' list", where);
  const std::vector<std::string> names = names_of(*variables, variables->items.size(), where);
  std::vector<IndexEntry> entries;
  for (size_t i = 0; i < names.size(); ++i) {
    const rdata::RObject& pos = variables->items[i];
    SECATEUR_CHECK(pos.type == rdata::ints && pos.integers.size() == 2,
                   "[text/austen] {}: variable '{}' has no (offset, length) pair", where, names[i]);
    entries.push_back({names[i], pos.integers[0], pos.integers[1]});
  }
  return entries;
}

}  // namespace

std::vector<std::string> austen_names(const std::string& rdb_path) {
  std::vector<std::string> names;
  for (const IndexEntry& e : read_index(rdb_path)) names.push_back(e.name);
  return names;
}

std::string austen_novel(const std::string& rdb_path, const std::string& name) {
  const std::vector<IndexEntry> index = read_index(rdb_path);
  const IndexEntry* entry = nullptr;
  std::string known;
  for (const IndexEntry& e : index) {
    if (e.name == name) entry = &e;
    known += (known.empty() ? "" : ", ") + e.name;
  }
  SECATEUR_CHECK(entry, "[text/austen] {}: no novel '{}' (known: {})", rdx_path_of(rdb_path), name, known);

  const std::string record = read_range(rdb_path, entry->offset, entry->length);
  const std::string where = fmt::format("{}: record '{}' at offset {}", rdb_path, name, entry->offset);
  const rdata::RObject lines = rdata::unserialize(inflate_record(record, where), where);
  SECATEUR_CHECK(lines.type == rdata::str, "[text/austen] {}: SEXP type {}, not a character vector (16)", where,
                 lines.type);
  size_t total = 0;
  for (const std::string& l : lines.strings) total += l.size() + 1;
  std::string text;
  text.reserve(total);
  bool first = true;
  for (size_t i = 0; i < lines.strings.size(); ++i) {
    if (lines.string_na[i]) continue;
    if (!first) text += '\n';
    text += lines.strings[i];
    first = false;
  }
  return text;
}

}  // namespace secateur::text
