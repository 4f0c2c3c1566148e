// runtime/io/mapped_file.h — a whole file memory-mapped read-only, shared by everything that views it.
// GGUF and safetensors readers hand out tensors that point straight into the mapping; each such
// tensor holds a shared_ptr to the MappedFile, so the mapping lives until the last view is gone.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

namespace secateur::io {

class MappedFile {
 public:
  // Maps the whole file. An empty file gives size() == 0 and data() == nullptr.
  // The pages are mapped copy-on-write (MAP_PRIVATE): the file on disk is never modified, and a
  // caller that writes into a tensor viewing the mapping changes only its own process's copy.
  static std::shared_ptr<const MappedFile> open(const std::string& path);

  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  uint64_t size() const { return size_; }
  const std::string& path() const { return path_; }

  // Hints the kernel that [offset, offset + n) will be read soon (madvise WILLNEED); never throws.
  void prefetch(uint64_t offset, uint64_t n) const;

 private:
  MappedFile(std::string path, uint8_t* data, uint64_t size);
  std::string path_;
  uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
};

}  // namespace secateur::io
