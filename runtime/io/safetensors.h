// runtime/io/safetensors.h — HF safetensors: memory-mapped reading, sharded checkpoints, atomic writing.
// A .safetensors file is: u64 header length N (little-endian), N bytes of JSON
// {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ..., "__metadata__": {..}},
// then the data area; offsets are relative to the data area. Tensors read from a file are
// zero-copy views of the mapping (each keeps the mapping alive), so a rank that slices its
// part of a weight touches only those pages.
#pragma once
#include <ATen/core/Tensor.h>   // at::Tensor

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "runtime/io/mapped_file.h"

namespace secateur::io {

// "F32" <-> at::kFloat etc. Known: F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL U16 U32 U64 F8_E4M3 F8_E5M2.
// safetensors_scalar_type throws an Error naming an unknown dtype; safetensors_dtype_name one naming an
// unsupported ScalarType.
at::ScalarType safetensors_scalar_type(const std::string& dtype);
std::string safetensors_dtype_name(at::ScalarType type);

class SafetensorsFile {
 public:
  // Validates the header length against the file size, the JSON, every dtype, and every tensor's
  // data_offsets (inside the data area, and end - begin == numel * itemsize). Overlaps are not checked.
  explicit SafetensorsFile(const std::string& path);

  struct Info {
    std::string dtype;            // "F32", "BF16", ...
    std::vector<int64_t> shape;
    uint64_t begin, end;          // relative to the data area
  };

  const std::string& path() const { return file_->path(); }
  std::vector<std::string> names() const { return names_; }   // in header order (the writer's order)
  bool has(const std::string& name) const { return infos_.count(name) != 0; }
  const Info& info(const std::string& name) const;            // Error "... is absent ..." if missing
  // Zero-copy CPU view of the mapping (copy-on-write pages: writing into it never touches the file).
  // A tensor whose data is not aligned to its element size is copied instead.
  at::Tensor tensor(const std::string& name) const;
  // tensor(name).narrow(dim, begin, end - begin): a view of rows/columns; dim may be negative.
  at::Tensor slice(const std::string& name, int64_t dim, int64_t begin, int64_t end) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }   // "__metadata__"
  uint64_t data_offset() const { return data_offset_; }   // absolute start of the data area

 private:
  std::shared_ptr<const MappedFile> file_;
  uint64_t data_offset_ = 0;
  std::vector<std::string> names_;
  std::unordered_map<std::string, Info> infos_;
  std::map<std::string, std::string> metadata_;
};

// A checkpoint: a directory holding model.safetensors (preferred, as in HF transformers) or
// model.safetensors.index.json + the shards it lists; or the path of a single .safetensors file
// or of an index .json file.
class SafetensorsCheckpoint {
 public:
  explicit SafetensorsCheckpoint(const std::string& dir_or_file);

  // Single file: its header order. Sharded: shards in file-name order, each in its header order,
  // restricted to the names the index's weight_map assigns to that shard.
  std::vector<std::string> names() const { return names_; }
  bool has(const std::string& name) const { return where_.count(name) != 0; }
  const SafetensorsFile::Info& info(const std::string& name) const;
  at::Tensor tensor(const std::string& name) const;
  at::Tensor slice(const std::string& name, int64_t dim, int64_t begin, int64_t end) const;
  const SafetensorsFile& file_of(const std::string& name) const;
  const std::vector<std::shared_ptr<const SafetensorsFile>>& files() const { return files_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::vector<std::shared_ptr<const SafetensorsFile>> files_;
  std::unordered_map<std::string, size_t> where_;   // name -> index in files_
  std::vector<std::string> names_;
};

// Writes contiguous CPU copies (one tensor at a time) through AtomicFile. Header JSON padded with
// spaces to a multiple of 8 bytes; tensors laid out in the given order; "__metadata__" only if
// metadata is non-empty. Duplicate or empty names and unsupported dtypes are Errors (checked
// before anything is written).
void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// Creates dir if needed. If the tensors' total data fits in max_shard_bytes, writes
// dir/model.safetensors; otherwise model-00001-of-0000N.safetensors ... (greedy in the given order;
// a tensor larger than max_shard_bytes gets a shard of its own) and model.safetensors.index.json
// ({"metadata": {"total_size": ..}, "weight_map": {..}}). The metadata goes into every file's
// "__metadata__". Stale files of the other layout (model.safetensors, the index, model-*-of-*
// shards not written now) are removed after the new files are in place. Each file is written
// atomically; the directory as a whole is not (a crash midway can leave old and new files mixed).
// With data = false only the layout is written: headers, and data areas of the right size left as
// zeros, for ranks to fill in place (pwrite); the tensors may then be meta tensors (shape, dtype).
void write_safetensors_dir(const std::string& dir, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                           uint64_t max_shard_bytes, const std::map<std::string, std::string>& metadata = {},
                           bool data = true);

// The smallest max_shard_bytes with which write_safetensors_dir puts tensors of these sizes (in
// this order) into at most n files (n >= 1).
uint64_t max_shard_bytes_for(const std::vector<uint64_t>& sizes, int64_t n);

}  // namespace secateur::io
