// runtime/io/mapped_file.cpp — mmap/munmap behind MappedFile.
#include "runtime/io/mapped_file.h"

#include <cerrno>
#include <cstring>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "runtime/core/check.h"

namespace secateur::io {

MappedFile::MappedFile(std::string path, uint8_t* data, uint64_t size)
    : path_(std::move(path)), data_(data), size_(size) {}

MappedFile::~MappedFile() {
  if (data_ != nullptr) ::munmap(data_, size_);
}

std::shared_ptr<const MappedFile> MappedFile::open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  SECATEUR_CHECK(fd >= 0, "[io/mmap] {}: cannot open: {}", path, std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    SECATEUR_FAIL("[io/mmap] {}: cannot stat: {}", path, std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    SECATEUR_FAIL("[io/mmap] {}: not a regular file", path);
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  uint8_t* data = nullptr;
  if (size > 0) {
    // Writable copy-on-write pages: torch views of the mapping are non-const, and an accidental
    // in-place op must not crash the process or change the file.
    void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      int err = errno;
      ::close(fd);
      SECATEUR_FAIL("[io/mmap] {}: cannot map {} bytes: {}", path, size, std::strerror(err));
    }
    data = static_cast<uint8_t*>(p);
  }
  ::close(fd);  // the mapping keeps its own reference to the file
  return std::shared_ptr<const MappedFile>(new MappedFile(path, data, size));
}

void MappedFile::prefetch(uint64_t offset, uint64_t n) const {
  if (data_ == nullptr || offset >= size_) return;
  if (n > size_ - offset) n = size_ - offset;
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  const uint64_t begin = offset / page * page;
  ::madvise(data_ + begin, n + (offset - begin), MADV_WILLNEED);
}

}  // namespace secateur::io
