// runtime/io/gguf.h — reader for GGUF (llama.cpp's model file format), versions 2 and 3.
// The file is memory-mapped; the header, metadata and tensor table are parsed and bounds-checked
// once in the constructor (every length and count against the bytes that remain, every tensor's
// data against the file size), so a damaged file is one secateur::Error, never a crash or a huge
// allocation. Metadata values are decoded from the mapping on request. Tensors come out
// dequantised to float32 (see dequant.h for the supported types).
#pragma once
#include <ATen/core/Tensor.h>   // at::Tensor

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "runtime/io/dequant.h"
#include "runtime/io/mapped_file.h"

namespace secateur::io {

enum class GgufValueType : uint32_t {
  UINT8 = 0, INT8 = 1, UINT16 = 2, INT16 = 3, UINT32 = 4, INT32 = 5, FLOAT32 = 6, BOOL = 7,
  STRING = 8, ARRAY = 9, UINT64 = 10, INT64 = 11, FLOAT64 = 12,
};
const char* gguf_value_type_name(uint32_t type);   // "uint32", "string", ...; "unknown" otherwise

struct GgufTensorInfo {
  std::string name;
  std::vector<int64_t> shape;   // torch order = reversed GGUF ne[]: ne[0] (the row length) is last
  uint32_t type;                // ggml type id (GgmlType)
  uint64_t offset;              // absolute offset of the data in the file
  uint64_t nbytes;              // size of the (possibly quantised) data
  int64_t numel() const;
};

class GgufFile {
 public:
  explicit GgufFile(const std::string& path);

  uint32_t version() const { return version_; }
  const std::string& path() const { return file_->path(); }
  uint64_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }   // absolute start of the tensor data area

  // Metadata. Getters without a fallback throw an Error naming the key if it is absent or of
  // another type; getters with a fallback return it only when the key is absent (a key of the
  // wrong type is still an Error).
  bool has(const std::string& key) const;
  std::vector<std::string> keys() const;                   // in file order
  GgufValueType value_type(const std::string& key) const;  // ARRAY for arrays
  GgufValueType array_type(const std::string& key) const;  // element type of an array
  uint64_t array_size(const std::string& key) const;

  int64_t get_int(const std::string& key) const;           // any integer type (not bool)
  int64_t get_int(const std::string& key, int64_t fallback) const;
  double get_float(const std::string& key) const;          // float32/float64 and integers
  double get_float(const std::string& key, double fallback) const;
  bool get_bool(const std::string& key) const;
  bool get_bool(const std::string& key, bool fallback) const;
  std::string get_string(const std::string& key) const;
  std::string get_string(const std::string& key, const std::string& fallback) const;
  std::vector<std::string> get_string_array(const std::string& key) const;
  std::vector<int64_t> get_int_array(const std::string& key) const;
  std::vector<double> get_float_array(const std::string& key) const;

  // Tensors, in file order.
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo* find(const std::string& name) const;   // nullptr if absent
  const GgufTensorInfo& info(const std::string& name) const;   // Error if absent
  const uint8_t* raw_data(const GgufTensorInfo& t) const { return file_->data() + t.offset; }
  // float32 CPU tensor of shape info.shape (a fresh allocation, rows decoded in parallel).
  // Error naming the tensor and its type if the type cannot be dequantised.
  at::Tensor dequantize(const std::string& name) const;

  std::shared_ptr<const MappedFile> mapping() const { return file_; }

 private:
  struct Value {
    uint32_t type = 0;        // GgufValueType
    uint64_t pos = 0;         // absolute offset of the payload (for arrays: of the first element)
    uint32_t elem_type = 0;   // arrays only
    uint64_t count = 0;       // arrays only
  };
  const Value& value(const std::string& key) const;
  const Value& array_of(const std::string& key, const char* wanted) const;
  int64_t int_at(const std::string& key, uint32_t type, uint64_t pos) const;
  double float_at(const std::string& key, uint32_t type, uint64_t pos) const;

  std::shared_ptr<const MappedFile> file_;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::vector<std::string> key_order_;
  std::unordered_map<std::string, Value> kv_;
  std::vector<GgufTensorInfo> tensors_;
  std::unordered_map<std::string, size_t> tensor_index_;
};

}  // namespace secateur::io
