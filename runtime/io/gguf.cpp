// runtime/io/gguf.cpp — GGUF header/metadata/tensor-table parser and dequantising loader.
//
// Layout (all little-endian): "GGUF", u32 version, u64 n_tensors, u64 n_kv;
// n_kv x { string key, u32 value_type, value }; n_tensors x { string name, u32 n_dims,
// u64 ne[n_dims], u32 ggml_type, u64 offset }; padding to `general.alignment` (default 32);
// tensor data, each tensor at data_start + offset. string = u64 length + bytes;
// array = u32 element_type + u64 count + elements.
#include "runtime/io/gguf.h"

#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <string_view>

#include "runtime/core/check.h"

namespace secateur::io {
namespace {

constexpr int kMaxDims = 4;          // GGML_MAX_DIMS
constexpr int kMaxArrayDepth = 8;    // nested arrays are legal GGUF; bound the recursion

// Fixed payload size of a scalar value type; 0 for string/array/unknown.
uint64_t scalar_size(uint32_t type) {
  switch (static_cast<GgufValueType>(type)) {
    case GgufValueType::UINT8: case GgufValueType::INT8: case GgufValueType::BOOL: return 1;
    case GgufValueType::UINT16: case GgufValueType::INT16: return 2;
    case GgufValueType::UINT32: case GgufValueType::INT32: case GgufValueType::FLOAT32: return 4;
    case GgufValueType::UINT64: case GgufValueType::INT64: case GgufValueType::FLOAT64: return 8;
    default: return 0;
  }
}

bool known_value_type(uint32_t type) { return type <= static_cast<uint32_t>(GgufValueType::FLOAT64); }

bool is_int_type(uint32_t type) {
  switch (static_cast<GgufValueType>(type)) {
    case GgufValueType::UINT8: case GgufValueType::INT8: case GgufValueType::UINT16: case GgufValueType::INT16:
    case GgufValueType::UINT32: case GgufValueType::INT32: case GgufValueType::UINT64: case GgufValueType::INT64:
      return true;
    default:
      return false;
  }
}

bool is_float_type(uint32_t type) {
  return type == static_cast<uint32_t>(GgufValueType::FLOAT32) || type == static_cast<uint32_t>(GgufValueType::FLOAT64);
}

template <typename T>
T load(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

// Bounds-checked reader over the mapping. `ctx` says what is being parsed, for error messages.
class Cursor {
 public:
  Cursor(const MappedFile& f) : path_(f.path()), data_(f.data()), size_(f.size()) {}

  uint64_t pos() const { return pos_; }
  uint64_t remaining() const { return size_ - pos_; }
  void set_context(std::string ctx) { ctx_ = std::move(ctx); }

  void need(uint64_t n, const char* what) const {
    SECATEUR_CHECK(n <= size_ - pos_,
                   "[io/gguf] {}: truncated: {} of {} needs {} bytes at offset {}, past end of file (size {})",
                   path_, what, ctx_, n, pos_, size_);
  }
  void skip(uint64_t n, const char* what) {
    need(n, what);
    pos_ += n;
  }
  uint32_t u32(const char* what) {
    need(4, what);
    uint32_t v = load<uint32_t>(data_ + pos_);
    pos_ += 4;
    return v;
  }
  uint64_t u64(const char* what) {
    need(8, what);
    uint64_t v = load<uint64_t>(data_ + pos_);
    pos_ += 8;
    return v;
  }
  std::string_view str(const char* what) {
    const uint64_t len_pos = pos_;
    const uint64_t len = u64(what);
    SECATEUR_CHECK(len <= size_ - pos_,
                   "[io/gguf] {}: {} of {} has length {} (at offset {}), past end of file (size {})", path_, what,
                   ctx_, len, len_pos, size_);
    std::string_view s(reinterpret_cast<const char*>(data_ + pos_), len);
    pos_ += len;
    return s;
  }
  // Rejects a count whose elements (at least min_size bytes each) cannot fit in what remains.
  void check_count(uint64_t count, uint64_t min_size, const char* what) const {
    SECATEUR_CHECK(count <= remaining() / min_size,
                   "[io/gguf] {}: absurd {} {} in {} at offset {}: cannot fit in the {} bytes that remain "
                   "(truncated or corrupt file)",
                   path_, what, count, ctx_, pos_, remaining());
  }
  [[noreturn]] void fail(const std::string& msg) const {
    SECATEUR_FAIL("[io/gguf] {}: {}: {} (offset {})", path_, ctx_, msg, pos_);
  }

 private:
  const std::string& path_;
  const uint8_t* data_;
  uint64_t size_;
  uint64_t pos_ = 0;
  std::string ctx_ = "header";
};

// Minimum encoded size of one element of the given type (strings: the length; arrays: type+count).
uint64_t min_value_size(uint32_t type) {
  if (type == static_cast<uint32_t>(GgufValueType::STRING)) return 8;
  if (type == static_cast<uint32_t>(GgufValueType::ARRAY)) return 12;
  return scalar_size(type);
}

void skip_value(Cursor& c, uint32_t type, int depth);

// Cursor sits after the element type and count.
void skip_array_elements(Cursor& c, uint32_t elem_type, uint64_t count, int depth) {
  if (!known_value_type(elem_type)) c.fail(fmt::format("unknown array element type {}", elem_type));
  c.check_count(count, min_value_size(elem_type), "array length");
  if (const uint64_t sz = scalar_size(elem_type); sz != 0) {
    c.skip(count * sz, "array data");   // count * sz <= remaining, checked above
    return;
  }
  for (uint64_t i = 0; i < count; ++i) skip_value(c, elem_type, depth);
}

void skip_value(Cursor& c, uint32_t type, int depth) {
  if (const uint64_t sz = scalar_size(type); sz != 0) {
    c.skip(sz, "value");
  } else if (type == static_cast<uint32_t>(GgufValueType::STRING)) {
    c.str("string");
  } else if (type == static_cast<uint32_t>(GgufValueType::ARRAY)) {
    if (depth >= kMaxArrayDepth) c.fail(fmt::format("arrays nested deeper than {}", kMaxArrayDepth));
    const uint32_t elem_type = c.u32("array element type");
    const uint64_t count = c.u64("array length");
    skip_array_elements(c, elem_type, count, depth + 1);
  } else {
    c.fail(fmt::format("unknown value type {}", type));
  }
}

std::string shape_str(const std::vector<int64_t>& shape) { return fmt::format("[{}]", fmt::join(shape, ", ")); }

// One entry of the tensor table, checked: its name, shape (outermost first), a known ggml type,
// whole blocks per row and a byte size that fits in the file. The cursor is left at its offset.
GgufTensorInfo read_tensor_info(Cursor& c, uint64_t file_size, const std::string& path) {
  GgufTensorInfo t;
  t.name = std::string(c.str("tensor name"));
  c.set_context(fmt::format("tensor '{}'", t.name));
  const uint32_t n_dims = c.u32("n_dims");
  SECATEUR_CHECK(n_dims <= kMaxDims, "[io/gguf] {}: tensor '{}' has n_dims {} > {}", path, t.name, n_dims, kMaxDims);
  uint64_t ne[kMaxDims] = {1, 1, 1, 1};
  unsigned __int128 numel = 1;
  for (uint32_t d = 0; d < n_dims; ++d) {
    ne[d] = c.u64("dimension");
    SECATEUR_CHECK(ne[d] <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()),
                   "[io/gguf] {}: tensor '{}' dimension {} is {}, too large", path, t.name, d, ne[d]);
    numel *= ne[d];
    SECATEUR_CHECK(numel <= static_cast<unsigned __int128>(std::numeric_limits<int64_t>::max()),
                   "[io/gguf] {}: tensor '{}' has too many elements", path, t.name);
  }
  for (uint32_t d = n_dims; d-- > 0;) t.shape.push_back(static_cast<int64_t>(ne[d]));
  t.type = c.u32("ggml type");
  const GgmlTypeTraits* tt = ggml_type_traits(t.type);
  SECATEUR_CHECK(tt != nullptr, "[io/gguf] {}: tensor '{}' has unknown ggml type id {}", path, t.name, t.type);
  SECATEUR_CHECK(ne[0] % static_cast<uint64_t>(tt->block_size) == 0,
                 "[io/gguf] {}: tensor '{}' row length {} is not a multiple of the {} block size {}", path, t.name,
                 ne[0], tt->name, tt->block_size);
  const unsigned __int128 nbytes = numel / static_cast<uint64_t>(tt->block_size) * static_cast<uint64_t>(tt->type_size);
  SECATEUR_CHECK(nbytes <= file_size, "[io/gguf] {}: tensor '{}' ({} {}) needs {} bytes, more than the file size {}",
                 path, t.name, tt->name, shape_str(t.shape), static_cast<uint64_t>(nbytes), file_size);
  t.nbytes = static_cast<uint64_t>(nbytes);
  return t;
}

// The tensor's absolute offset: aligned, and its data inside the file.
uint64_t place_tensor(const GgufTensorInfo& t, uint64_t rel, uint64_t data_offset, uint64_t alignment,
                      uint64_t file_size, const std::string& path) {
  SECATEUR_CHECK(rel % alignment == 0, "[io/gguf] {}: tensor '{}' offset {} is not a multiple of the alignment {}",
                 path, t.name, rel, alignment);
  const unsigned __int128 begin = static_cast<unsigned __int128>(data_offset) + rel;
  const unsigned __int128 end = begin + t.nbytes;
  SECATEUR_CHECK(end <= file_size,
                 "[io/gguf] {}: tensor '{}' data [{}, {}) (offset {} in the data area) is past end of file (size {})",
                 path, t.name, static_cast<uint64_t>(begin < file_size ? begin : file_size),
                 end > std::numeric_limits<uint64_t>::max() ? std::numeric_limits<uint64_t>::max()
                                                             : static_cast<uint64_t>(end),
                 rel, file_size);
  return static_cast<uint64_t>(begin);
}

}  // namespace

const char* gguf_value_type_name(uint32_t type) {
  static const char* const names[] = {"uint8", "int8",  "uint16", "int16",  "uint32", "int32", "float32",
                                      "bool",  "string", "array", "uint64", "int64",  "float64"};
  return known_value_type(type) ? names[type] : "unknown";
}

int64_t GgufTensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

GgufFile::GgufFile(const std::string& path) : file_(MappedFile::open(path)) {
  const MappedFile& f = *file_;
  SECATEUR_CHECK(f.size() >= 4, "[io/gguf] {}: file is {} bytes, too short to be a GGUF file", path, f.size());
  SECATEUR_CHECK(std::memcmp(f.data(), "GGUF", 4) == 0,
                 "[io/gguf] {}: bad magic 0x{:08x} (expected \"GGUF\"), not a GGUF file", path,
                 load<uint32_t>(f.data()));
  Cursor c(f);
  c.skip(4, "magic");
  version_ = c.u32("version");
  SECATEUR_CHECK(version_ == 2 || version_ == 3,
                 "[io/gguf] {}: unsupported GGUF version {} (Secateur reads versions 2 and 3{})", path, version_,
                 version_ > 0xFFFF ? "; a byte-swapped number means a big-endian file" : "");
  const uint64_t n_tensors = c.u64("tensor count");
  const uint64_t n_kv = c.u64("metadata count");
  c.check_count(n_kv, 13, "metadata count");            // key length + type + 1-byte value
  c.check_count(n_tensors, 24, "tensor count");         // name length + n_dims + type + offset

  // Metadata: validate every value now, decode on request later.
  key_order_.reserve(n_kv);
  kv_.reserve(n_kv);
  for (uint64_t i = 0; i < n_kv; ++i) {
    c.set_context(fmt::format("metadata entry {}", i));
    std::string key(c.str("key"));
    c.set_context(fmt::format("key '{}'", key));
    SECATEUR_CHECK(kv_.count(key) == 0, "[io/gguf] {}: duplicate metadata key '{}'", path, key);
    Value v;
    v.type = c.u32("value type");
    if (!known_value_type(v.type)) c.fail(fmt::format("unknown value type {}", v.type));
    if (v.type == static_cast<uint32_t>(GgufValueType::ARRAY)) {
      v.elem_type = c.u32("array element type");
      v.count = c.u64("array length");
      v.pos = c.pos();
      skip_array_elements(c, v.elem_type, v.count, 1);
    } else {
      v.pos = c.pos();
      skip_value(c, v.type, 0);
    }
    key_order_.push_back(key);
    kv_.emplace(std::move(key), v);
  }

  if (has("general.alignment")) {
    const int64_t a = get_int("general.alignment");
    SECATEUR_CHECK(a > 0 && (a & (a - 1)) == 0, "[io/gguf] {}: general.alignment {} is not a power of two", path, a);
    alignment_ = static_cast<uint64_t>(a);
  }

  // Tensor table.
  tensors_.reserve(n_tensors);
  tensor_index_.reserve(n_tensors);
  std::vector<uint64_t> rel_offsets;
  rel_offsets.reserve(n_tensors);
  for (uint64_t i = 0; i < n_tensors; ++i) {
    c.set_context(fmt::format("tensor info {}", i));
    GgufTensorInfo t = read_tensor_info(c, f.size(), path);
    SECATEUR_CHECK(tensor_index_.count(t.name) == 0, "[io/gguf] {}: duplicate tensor '{}'", path, t.name);
    rel_offsets.push_back(c.u64("data offset"));
    tensor_index_.emplace(t.name, tensors_.size());
    tensors_.push_back(std::move(t));
  }

  // Data area: aligned start; each tensor aligned and inside the file.
  data_offset_ = (c.pos() + alignment_ - 1) / alignment_ * alignment_;   // pos <= size: no overflow
  for (size_t i = 0; i < tensors_.size(); ++i) {
    tensors_[i].offset = place_tensor(tensors_[i], rel_offsets[i], data_offset_, alignment_, f.size(), path);
  }
}

bool GgufFile::has(const std::string& key) const { return kv_.count(key) != 0; }

std::vector<std::string> GgufFile::keys() const { return key_order_; }

const GgufFile::Value& GgufFile::value(const std::string& key) const {
  auto it = kv_.find(key);
  SECATEUR_CHECK(it != kv_.end(), "[io/gguf] {}: metadata key '{}' is absent", path(), key);
  return it->second;
}

GgufValueType GgufFile::value_type(const std::string& key) const {
  return static_cast<GgufValueType>(value(key).type);
}

GgufValueType GgufFile::array_type(const std::string& key) const {
  return static_cast<GgufValueType>(array_of(key, "array").elem_type);
}

uint64_t GgufFile::array_size(const std::string& key) const { return array_of(key, "array").count; }

const GgufFile::Value& GgufFile::array_of(const std::string& key, const char* wanted) const {
  const Value& v = value(key);
  SECATEUR_CHECK(v.type == static_cast<uint32_t>(GgufValueType::ARRAY), "[io/gguf] {}: metadata key '{}' is {}, not {}",
                 path(), key, gguf_value_type_name(v.type), wanted);
  return v;
}

int64_t GgufFile::int_at(const std::string& key, uint32_t type, uint64_t pos) const {
  const uint8_t* p = file_->data() + pos;
  switch (static_cast<GgufValueType>(type)) {
    case GgufValueType::UINT8: return load<uint8_t>(p);
    case GgufValueType::INT8: return load<int8_t>(p);
    case GgufValueType::UINT16: return load<uint16_t>(p);
    case GgufValueType::INT16: return load<int16_t>(p);
    case GgufValueType::UINT32: return load<uint32_t>(p);
    case GgufValueType::INT32: return load<int32_t>(p);
    case GgufValueType::INT64: return load<int64_t>(p);
    case GgufValueType::UINT64: {
      const uint64_t u = load<uint64_t>(p);
      SECATEUR_CHECK(u <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()),
                     "[io/gguf] {}: metadata key '{}' value {} does not fit in int64", path(), key, u);
      return static_cast<int64_t>(u);
    }
    default:
      SECATEUR_FAIL("[io/gguf] {}: metadata key '{}' is {}, not an integer", path(), key, gguf_value_type_name(type));
  }
}

double GgufFile::float_at(const std::string& key, uint32_t type, uint64_t pos) const {
  const uint8_t* p = file_->data() + pos;
  if (type == static_cast<uint32_t>(GgufValueType::FLOAT32)) return load<float>(p);
  if (type == static_cast<uint32_t>(GgufValueType::FLOAT64)) return load<double>(p);
  SECATEUR_CHECK(is_int_type(type), "[io/gguf] {}: metadata key '{}' is {}, not a number", path(), key,
                 gguf_value_type_name(type));
  return static_cast<double>(int_at(key, type, pos));
}

int64_t GgufFile::get_int(const std::string& key) const {
  const Value& v = value(key);
  return int_at(key, v.type, v.pos);
}

int64_t GgufFile::get_int(const std::string& key, int64_t fallback) const {
  return has(key) ? get_int(key) : fallback;
}

double GgufFile::get_float(const std::string& key) const {
  const Value& v = value(key);
  return float_at(key, v.type, v.pos);
}

double GgufFile::get_float(const std::string& key, double fallback) const {
  return has(key) ? get_float(key) : fallback;
}

bool GgufFile::get_bool(const std::string& key) const {
  const Value& v = value(key);
  SECATEUR_CHECK(v.type == static_cast<uint32_t>(GgufValueType::BOOL), "[io/gguf] {}: metadata key '{}' is {}, not bool",
                 path(), key, gguf_value_type_name(v.type));
  return file_->data()[v.pos] != 0;
}

bool GgufFile::get_bool(const std::string& key, bool fallback) const { return has(key) ? get_bool(key) : fallback; }

std::string GgufFile::get_string(const std::string& key) const {
  const Value& v = value(key);
  SECATEUR_CHECK(v.type == static_cast<uint32_t>(GgufValueType::STRING),
                 "[io/gguf] {}: metadata key '{}' is {}, not string", path(), key, gguf_value_type_name(v.type));
  const uint64_t len = load<uint64_t>(file_->data() + v.pos);   // validated by the constructor
  return std::string(reinterpret_cast<const char*>(file_->data() + v.pos + 8), len);
}

std::string GgufFile::get_string(const std::string& key, const std::string& fallback) const {
  return has(key) ? get_string(key) : fallback;
}

std::vector<std::string> GgufFile::get_string_array(const std::string& key) const {
  const Value& v = array_of(key, "an array of strings");
  SECATEUR_CHECK(v.elem_type == static_cast<uint32_t>(GgufValueType::STRING),
                 "[io/gguf] {}: metadata key '{}' is an array of {}, not of strings", path(), key,
                 gguf_value_type_name(v.elem_type));
  std::vector<std::string> out;
  out.reserve(v.count);
  const uint8_t* p = file_->data() + v.pos;
  for (uint64_t i = 0; i < v.count; ++i) {
    const uint64_t len = load<uint64_t>(p);
    out.emplace_back(reinterpret_cast<const char*>(p + 8), len);
    p += 8 + len;
  }
  return out;
}

std::vector<int64_t> GgufFile::get_int_array(const std::string& key) const {
  const Value& v = array_of(key, "an array of integers");
  SECATEUR_CHECK(is_int_type(v.elem_type), "[io/gguf] {}: metadata key '{}' is an array of {}, not of integers", path(),
                 key, gguf_value_type_name(v.elem_type));
  const uint64_t sz = scalar_size(v.elem_type);
  std::vector<int64_t> out(v.count);
  for (uint64_t i = 0; i < v.count; ++i) out[i] = int_at(key, v.elem_type, v.pos + i * sz);
  return out;
}

std::vector<double> GgufFile::get_float_array(const std::string& key) const {
  const Value& v = array_of(key, "an array of numbers");
  SECATEUR_CHECK(is_int_type(v.elem_type) || is_float_type(v.elem_type),
                 "[io/gguf] {}: metadata key '{}' is an array of {}, not of numbers", path(), key,
                 gguf_value_type_name(v.elem_type));
  const uint64_t sz = scalar_size(v.elem_type);
  std::vector<double> out(v.count);
  for (uint64_t i = 0; i < v.count; ++i) out[i] = float_at(key, v.elem_type, v.pos + i * sz);
  return out;
}

const GgufTensorInfo* GgufFile::find(const std::string& name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

const GgufTensorInfo& GgufFile::info(const std::string& name) const {
  const GgufTensorInfo* t = find(name);
  SECATEUR_CHECK(t != nullptr, "[io/gguf] {}: tensor '{}' is absent ({} tensors in the file)", path(), name,
                 tensors_.size());
  return *t;
}

at::Tensor GgufFile::dequantize(const std::string& name) const {
  const GgufTensorInfo& t = info(name);
  SECATEUR_CHECK(ggml_type_dequantizable(t.type),
                 "[io/gguf] {}: tensor '{}' has ggml type {} (id {}), which Secateur cannot dequantise "
                 "(supported: {})",
                 path(), name, ggml_type_name(t.type), t.type, fmt::join(dequantizable_type_names(), ", "));
  at::Tensor out = at::empty(t.shape, at::TensorOptions().dtype(at::kFloat));
  const int64_t numel = t.numel();
  if (numel == 0) return out;
  const GgmlTypeTraits& tt = *ggml_type_traits(t.type);
  const int64_t row_len = t.shape.empty() ? 1 : t.shape.back();   // ne[0]
  const int64_t n_rows = numel / row_len;
  const int64_t row_bytes = row_len / tt.block_size * tt.type_size;
  const uint8_t* src = raw_data(t);
  float* dst = out.data_ptr<float>();
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 16) / row_len);   // ~64K elements per task
  at::parallel_for(0, n_rows, grain, [&](int64_t begin, int64_t end) {
    dequantize_row(t.type, src + begin * row_bytes, dst + begin * row_len, (end - begin) * row_len);
  });
  return out;
}

}  // namespace secateur::io
