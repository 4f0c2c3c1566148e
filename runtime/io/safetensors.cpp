// runtime/io/safetensors.cpp — safetensors parsing/validation, zero-copy views, sharded checkpoints, writer.
#include "runtime/io/safetensors.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include <cstring>
#include <filesystem>
#include <limits>
#include <set>
#include <unordered_set>

#include "runtime/core/check.h"
#include "runtime/io/atomic_file.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "safetensors and GGUF readers assume a little-endian host");

namespace secateur::io {
namespace {

namespace fs = std::filesystem;
using ordered_json = nlohmann::ordered_json;

struct DtypeEntry {
  const char* name;
  at::ScalarType type;
};
const DtypeEntry kDtypes[] = {
    {"F64", at::kDouble},   {"F32", at::kFloat},    {"F16", at::kHalf},     {"BF16", at::kBFloat16},
    {"I64", at::kLong},     {"I32", at::kInt},      {"I16", at::kShort},    {"I8", at::kChar},
    {"U8", at::kByte},      {"BOOL", at::kBool},    {"U16", at::kUInt16},   {"U32", at::kUInt32},
    {"U64", at::kUInt64},   {"F8_E4M3", at::kFloat8_e4m3fn}, {"F8_E5M2", at::kFloat8_e5m2},
};

const DtypeEntry* find_dtype(const std::string& name) {
  for (const auto& e : kDtypes)
    if (name == e.name) return &e;
  return nullptr;
}

std::string shape_str(const std::vector<int64_t>& shape) { return fmt::format("[{}]", fmt::join(shape, ", ")); }

// A tensor about to be written: its name, dtype name, shape and byte size.
struct Planned {
  const std::string* name;
  const at::Tensor* tensor;
  std::string dtype;
  uint64_t nbytes;
};

std::vector<Planned> plan(const std::string& where, const std::vector<std::pair<std::string, at::Tensor>>& tensors) {
  std::vector<Planned> out;
  out.reserve(tensors.size());
  std::unordered_set<std::string> seen;
  for (const auto& [name, t] : tensors) {
    SECATEUR_CHECK(!name.empty(), "[io/safetensors] {}: empty tensor name", where);
    SECATEUR_CHECK(name != "__metadata__", "[io/safetensors] {}: '__metadata__' cannot be a tensor name", where);
    SECATEUR_CHECK(seen.insert(name).second, "[io/safetensors] {}: duplicate tensor name '{}'", where, name);
    SECATEUR_CHECK(t.defined(), "[io/safetensors] {}: tensor '{}' is undefined", where, name);
    std::string dtype;
    try {
      dtype = safetensors_dtype_name(t.scalar_type());
    } catch (const Error& e) {
      SECATEUR_FAIL("[io/safetensors] {}: tensor '{}': {}", where, name, e.what());
    }
    out.push_back({&name, &t, dtype, static_cast<uint64_t>(t.numel()) * t.element_size()});
  }
  return out;
}

void write_planned(const std::string& path, const std::vector<Planned>& tensors,
                   const std::map<std::string, std::string>& metadata, bool data = true) {
  ordered_json header = ordered_json::object();
  if (!metadata.empty()) {
    ordered_json meta = ordered_json::object();
    for (const auto& [k, v] : metadata) meta[k] = v;
    header["__metadata__"] = std::move(meta);
  }
  uint64_t offset = 0;
  for (const Planned& p : tensors) {
    header[*p.name] = ordered_json{{"dtype", p.dtype}, {"shape", p.tensor->sizes().vec()},
                                   {"data_offsets", {offset, offset + p.nbytes}}};
    offset += p.nbytes;
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception& e) {
    SECATEUR_FAIL("[io/safetensors] {}: cannot encode header: {}", path, e.what());
  }
  text.append((8 - text.size() % 8) % 8, ' ');
  const uint64_t header_len = text.size();

  AtomicFile out(path);
  out.write(&header_len, 8);
  out.write(text);
  for (const Planned& p : tensors) {
    if (p.nbytes == 0) continue;
    if (!data) {
      out.skip(p.nbytes);
      continue;
    }
    at::Tensor c = p.tensor->detach().cpu().contiguous();
    out.write(c.const_data_ptr(), p.nbytes);
  }
  out.commit();
}

std::string shard_name(size_t i, size_t n) { return fmt::format("model-{:05d}-of-{:05d}.safetensors", i + 1, n); }

bool is_shard_name(const std::string& s) {   // model-DDDDD-of-DDDDD.safetensors
  if (s.size() != 32 || s.compare(0, 6, "model-") != 0 || s.compare(11, 4, "-of-") != 0 ||
      s.compare(20, 12, ".safetensors") != 0)
    return false;
  for (size_t i : {6, 7, 8, 9, 10, 15, 16, 17, 18, 19})
    if (s[i] < '0' || s[i] > '9') return false;
  return true;
}

void remove_quietly(const fs::path& p) {
  std::error_code ec;
  fs::remove(p, ec);
}

}  // namespace

at::ScalarType safetensors_scalar_type(const std::string& dtype) {
  const DtypeEntry* e = find_dtype(dtype);
  SECATEUR_CHECK(e != nullptr, "[io/safetensors] unknown dtype '{}'", dtype);
  return e->type;
}

std::string safetensors_dtype_name(at::ScalarType type) {
  for (const auto& e : kDtypes)
    if (e.type == type) return e.name;
  SECATEUR_FAIL("[io/safetensors] dtype {} cannot be stored in safetensors", c10::toString(type));
}

// ---------------------------------------------------------------------------------------------
// SafetensorsFile

SafetensorsFile::SafetensorsFile(const std::string& path) : file_(MappedFile::open(path)) {
  const uint64_t size = file_->size();
  SECATEUR_CHECK(size >= 8, "[io/safetensors] {}: file is {} bytes, shorter than the 8-byte header length", path,
                 size);
  uint64_t header_len;
  std::memcpy(&header_len, file_->data(), 8);
  SECATEUR_CHECK(header_len <= size - 8, "[io/safetensors] {}: header length {} exceeds file size {}", path,
                 header_len, size);
  data_offset_ = 8 + header_len;
  const uint64_t data_size = size - data_offset_;

  ordered_json header;
  try {
    const char* p = reinterpret_cast<const char*>(file_->data() + 8);
    header = ordered_json::parse(p, p + header_len);
  } catch (const nlohmann::json::exception& e) {
    SECATEUR_FAIL("[io/safetensors] {}: invalid JSON header: {}", path, e.what());
  }
  SECATEUR_CHECK(header.is_object(), "[io/safetensors] {}: header is not a JSON object", path);

  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      SECATEUR_CHECK(entry.is_object(), "[io/safetensors] {}: __metadata__ is not an object", path);
      for (const auto& [k, v] : entry.items()) {
        SECATEUR_CHECK(v.is_string(), "[io/safetensors] {}: __metadata__ value of '{}' is not a string", path, k);
        metadata_[k] = v.get<std::string>();
      }
      continue;
    }
    SECATEUR_CHECK(entry.is_object(), "[io/safetensors] {}: tensor '{}': entry is not an object", path, name);
    auto dt = entry.find("dtype");
    auto sh = entry.find("shape");
    auto off = entry.find("data_offsets");
    SECATEUR_CHECK(dt != entry.end() && dt->is_string(), "[io/safetensors] {}: tensor '{}': missing dtype", path, name);
    SECATEUR_CHECK(sh != entry.end() && sh->is_array(), "[io/safetensors] {}: tensor '{}': missing shape", path, name);
    SECATEUR_CHECK(off != entry.end() && off->is_array() && off->size() == 2 && (*off)[0].is_number_unsigned() &&
                       (*off)[1].is_number_unsigned(),
                   "[io/safetensors] {}: tensor '{}': data_offsets must be two non-negative integers", path, name);
    Info info;
    info.dtype = dt->get<std::string>();
    const DtypeEntry* de = find_dtype(info.dtype);
    SECATEUR_CHECK(de != nullptr, "[io/safetensors] {}: tensor '{}' has unknown dtype '{}'", path, name, info.dtype);
    unsigned __int128 nbytes = c10::elementSize(de->type);
    for (const auto& d : *sh) {
      SECATEUR_CHECK(d.is_number_unsigned() && d.get<uint64_t>() <= uint64_t{1} << 62,
                     "[io/safetensors] {}: tensor '{}': bad shape {}", path, name, sh->dump());
      info.shape.push_back(d.get<int64_t>());
      nbytes *= d.get<uint64_t>();
      if (nbytes > (unsigned __int128)1 << 64) nbytes = (unsigned __int128)1 << 64;   // saturate: surely too big
    }
    info.begin = (*off)[0].get<uint64_t>();
    info.end = (*off)[1].get<uint64_t>();
    SECATEUR_CHECK(info.begin <= info.end && info.end <= data_size,
                   "[io/safetensors] {}: tensor '{}' data_offsets [{}, {}] past end of data ({} bytes)", path, name,
                   info.begin, info.end, data_size);
    SECATEUR_CHECK(info.end - info.begin == nbytes,
                   "[io/safetensors] {}: tensor '{}' data_offsets [{}, {}] span {} bytes, but shape {} of {} needs {}",
                   path, name, info.begin, info.end, info.end - info.begin, shape_str(info.shape), info.dtype,
                   nbytes > std::numeric_limits<uint64_t>::max() ? std::string("more than 2^64")
                                                                 : std::to_string(static_cast<uint64_t>(nbytes)));
    SECATEUR_CHECK(infos_.count(name) == 0, "[io/safetensors] {}: duplicate tensor '{}'", path, name);
    names_.push_back(name);
    infos_.emplace(name, std::move(info));
  }
}

const SafetensorsFile::Info& SafetensorsFile::info(const std::string& name) const {
  auto it = infos_.find(name);
  SECATEUR_CHECK(it != infos_.end(), "[io/safetensors] {}: tensor '{}' is absent ({} tensors in the file)", path(),
                 name, names_.size());
  return it->second;
}

at::Tensor SafetensorsFile::tensor(const std::string& name) const {
  const Info& i = info(name);
  const at::ScalarType st = safetensors_scalar_type(i.dtype);
  const auto options = at::TensorOptions().dtype(st);
  const uint8_t* p = file_->data() + data_offset_ + i.begin;
  const uint64_t nbytes = i.end - i.begin;
  if (nbytes == 0) return at::empty(i.shape, options);
  if (reinterpret_cast<uintptr_t>(p) % c10::elementSize(st) != 0) {   // misaligned for its dtype: copy
    at::Tensor t = at::empty(i.shape, options);
    std::memcpy(t.data_ptr(), p, nbytes);
    return t;
  }
  std::shared_ptr<const MappedFile> keep = file_;
  return at::from_blob(const_cast<uint8_t*>(p), i.shape, [keep](void*) {}, options);
}

at::Tensor SafetensorsFile::slice(const std::string& name, int64_t dim, int64_t begin, int64_t end) const {
  const Info& i = info(name);
  const int64_t rank = static_cast<int64_t>(i.shape.size());
  SECATEUR_CHECK(dim >= -rank && dim < rank, "[io/safetensors] {}: tensor '{}' {} has no dim {}", path(), name,
                 shape_str(i.shape), dim);
  if (dim < 0) dim += rank;
  SECATEUR_CHECK(0 <= begin && begin <= end && end <= i.shape[dim],
                 "[io/safetensors] {}: tensor '{}' {}: slice [{}, {}) of dim {} out of range", path(), name,
                 shape_str(i.shape), begin, end, dim);
  return tensor(name).narrow(dim, begin, end - begin);
}

// ---------------------------------------------------------------------------------------------
// SafetensorsCheckpoint

SafetensorsCheckpoint::SafetensorsCheckpoint(const std::string& dir_or_file) : path_(dir_or_file) {
  std::error_code ec;
  const fs::path p(dir_or_file);
  fs::path single, index;
  if (fs::is_directory(p, ec)) {
    if (fs::exists(p / "model.safetensors", ec))
      single = p / "model.safetensors";
    else if (fs::exists(p / "model.safetensors.index.json", ec))
      index = p / "model.safetensors.index.json";
    else
      SECATEUR_FAIL("[io/safetensors] {}: no model.safetensors or model.safetensors.index.json in this directory",
                    dir_or_file);
  } else if (fs::exists(p, ec)) {
    (p.extension() == ".json" ? index : single) = p;
  } else {
    SECATEUR_FAIL("[io/safetensors] {}: no such file or directory", dir_or_file);
  }

  if (!single.empty()) {
    files_.push_back(std::make_shared<const SafetensorsFile>(single.string()));
    names_ = files_[0]->names();
    for (const auto& n : names_) where_.emplace(n, 0);
    return;
  }

  const std::string index_path = index.string();
  auto bytes = MappedFile::open(index_path);
  nlohmann::json j;
  try {
    const char* b = reinterpret_cast<const char*>(bytes->data());
    j = nlohmann::json::parse(b, b + bytes->size());
  } catch (const nlohmann::json::exception& e) {
    SECATEUR_FAIL("[io/safetensors] {}: invalid JSON: {}", index_path, e.what());
  }
  SECATEUR_CHECK(j.is_object() && j.contains("weight_map") && j["weight_map"].is_object(),
                 "[io/safetensors] {}: no \"weight_map\" object", index_path);
  std::map<std::string, std::string> weight_map;   // tensor -> shard file name
  std::set<std::string> shards;
  for (const auto& [name, shard] : j["weight_map"].items()) {
    SECATEUR_CHECK(shard.is_string(), "[io/safetensors] {}: weight_map entry '{}' is not a string", index_path, name);
    const std::string s = shard.get<std::string>();
    const fs::path sp(s);
    bool escapes = sp.is_absolute() || s.empty();
    for (const auto& part : sp) escapes = escapes || part == "..";
    SECATEUR_CHECK(!escapes, "[io/safetensors] {}: shard path '{}' (for '{}') must be relative, inside the directory",
                   index_path, s, name);
    weight_map.emplace(name, s);
    shards.insert(s);
  }
  const fs::path dir = index.parent_path();
  std::map<std::string, size_t> shard_index;
  for (const auto& s : shards) {   // sorted: model-00001-of-.. first
    const fs::path sp = dir / s;
    SECATEUR_CHECK(fs::is_regular_file(sp, ec), "[io/safetensors] {}: shard '{}' listed in the index is missing ({})",
                   index_path, s, sp.string());
    shard_index[s] = files_.size();
    files_.push_back(std::make_shared<const SafetensorsFile>(sp.string()));
  }
  for (const auto& [name, s] : weight_map) {
    const size_t fi = shard_index.at(s);
    SECATEUR_CHECK(files_[fi]->has(name), "[io/safetensors] {}: index maps tensor '{}' to shard '{}', which lacks it",
                   index_path, name, s);
    where_.emplace(name, fi);
  }
  for (size_t fi = 0; fi < files_.size(); ++fi)
    for (const auto& n : files_[fi]->names()) {
      auto it = where_.find(n);
      if (it != where_.end() && it->second == fi) names_.push_back(n);
    }
}

const SafetensorsFile& SafetensorsCheckpoint::file_of(const std::string& name) const {
  auto it = where_.find(name);
  SECATEUR_CHECK(it != where_.end(), "[io/safetensors] {}: tensor '{}' is absent from the checkpoint ({} tensors)",
                 path_, name, names_.size());
  return *files_[it->second];
}

const SafetensorsFile::Info& SafetensorsCheckpoint::info(const std::string& name) const {
  return file_of(name).info(name);
}

at::Tensor SafetensorsCheckpoint::tensor(const std::string& name) const { return file_of(name).tensor(name); }

at::Tensor SafetensorsCheckpoint::slice(const std::string& name, int64_t dim, int64_t begin, int64_t end) const {
  return file_of(name).slice(name, dim, begin, end);
}

// ---------------------------------------------------------------------------------------------
// Writers

void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  write_planned(path, plan(path, tensors), metadata);
}

namespace {

// Greedy, in order: a tensor opens a new shard when it would take the current one past max_bytes
// (a tensor larger than max_bytes gets a shard of its own). The shard index of each tensor.
std::vector<size_t> assign_shards(const std::vector<uint64_t>& sizes, uint64_t max_bytes) {
  std::vector<size_t> shard_of;
  size_t shard = 0, in_shard = 0;
  uint64_t cur = 0;
  for (uint64_t n : sizes) {
    if (in_shard > 0 && cur + n > max_bytes) {
      ++shard;
      in_shard = 0;
      cur = 0;
    }
    shard_of.push_back(shard);
    ++in_shard;
    cur += n;
  }
  return shard_of;
}

}  // namespace

uint64_t max_shard_bytes_for(const std::vector<uint64_t>& sizes, int64_t n) {
  SECATEUR_CHECK(n >= 1 && !sizes.empty(), "[io/safetensors] {} shards of {} tensors", n, sizes.size());
  uint64_t lo = 1, hi = 0;
  for (uint64_t s : sizes) hi += s;
  while (lo < hi) {   // fewest bytes per shard for which the greedy split needs <= n shards
    const uint64_t mid = lo + (hi - lo) / 2;
    if (static_cast<int64_t>(assign_shards(sizes, mid).back()) + 1 <= n) hi = mid; else lo = mid + 1;
  }
  return hi;
}

void write_safetensors_dir(const std::string& dir, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                           uint64_t max_shard_bytes, const std::map<std::string, std::string>& metadata,
                           bool data) {
  const std::vector<Planned> all = plan(dir, tensors);
  std::error_code ec;
  fs::create_directories(dir, ec);
  SECATEUR_CHECK(fs::is_directory(dir), "[io/safetensors] {}: cannot create directory: {}", dir, ec.message());
  const fs::path d(dir);

  uint64_t total = 0;
  for (const Planned& p : all) total += p.nbytes;

  std::set<std::string> written;
  if (total <= max_shard_bytes) {
    write_planned((d / "model.safetensors").string(), all, metadata, data);
    written.insert("model.safetensors");
    remove_quietly(d / "model.safetensors.index.json");
  } else {
    std::vector<uint64_t> sizes;
    for (const Planned& p : all) sizes.push_back(p.nbytes);
    const std::vector<size_t> shard_of = assign_shards(sizes, max_shard_bytes);
    std::vector<std::vector<Planned>> shards(shard_of.back() + 1);
    for (size_t i = 0; i < all.size(); ++i) shards[shard_of[i]].push_back(all[i]);
    ordered_json weight_map = ordered_json::object();
    for (size_t i = 0; i < shards.size(); ++i) {
      const std::string name = shard_name(i, shards.size());
      write_planned((d / name).string(), shards[i], metadata, data);
      written.insert(name);
      for (const Planned& p : shards[i]) weight_map[*p.name] = name;
    }
    ordered_json index = ordered_json::object();
    index["metadata"] = ordered_json{{"total_size", total}};
    index["weight_map"] = std::move(weight_map);
    write_file_atomic((d / "model.safetensors.index.json").string(), index.dump(2) + "\n");
    written.insert("model.safetensors.index.json");
    remove_quietly(d / "model.safetensors");
  }
  for (const auto& entry : fs::directory_iterator(d, ec)) {
    const std::string name = entry.path().filename().string();
    if (is_shard_name(name) && written.count(name) == 0) remove_quietly(entry.path());
  }
}

}  // namespace secateur::io
