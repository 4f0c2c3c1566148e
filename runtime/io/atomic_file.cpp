// runtime/io/atomic_file.cpp — temp file + fsync + rename.
#include "runtime/io/atomic_file.h"

#include <cerrno>
#include <cstdint>
#include <cstring>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "runtime/core/check.h"

namespace secateur::io {
namespace {

std::string parent_dir(const std::string& path) {
  const auto slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

// Best effort: makes the rename itself durable. Some file systems refuse fsync on a directory.
void fsync_dir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

}  // namespace

AtomicFile::AtomicFile(std::string path) : path_(std::move(path)) {
  SECATEUR_CHECK(!path_.empty(), "[io/atomic] empty output path");
  temp_ = path_ + ".tmp." + std::to_string(static_cast<long>(::getpid()));
  fd_ = ::open(temp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  SECATEUR_CHECK(fd_ >= 0, "[io/atomic] {}: cannot create temp file {}: {}", path_, temp_, std::strerror(errno));
}

AtomicFile::~AtomicFile() {
  if (!committed_) discard();
}

void AtomicFile::discard() noexcept {
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
  if (!temp_.empty()) ::unlink(temp_.c_str());
}

void AtomicFile::write(const void* p, size_t n) {
  SECATEUR_CHECK(fd_ >= 0 && !committed_, "[io/atomic] {}: write after commit", path_);
  const char* bytes = static_cast<const char*>(p);
  while (n > 0) {
    const size_t chunk = n < (size_t{1} << 30) ? n : (size_t{1} << 30);
    ssize_t w = ::write(fd_, bytes, chunk);
    if (w < 0 && errno == EINTR) continue;
    SECATEUR_CHECK(w > 0, "[io/atomic] {}: write failed after {} bytes: {}", path_, written_,
                   w < 0 ? std::strerror(errno) : "no progress");
    bytes += w;
    n -= static_cast<size_t>(w);
    written_ += static_cast<uint64_t>(w);
  }
}

void AtomicFile::skip(uint64_t n) {
  SECATEUR_CHECK(fd_ >= 0 && !committed_, "[io/atomic] {}: write after commit", path_);
  SECATEUR_CHECK(::ftruncate(fd_, static_cast<off_t>(written_ + n)) == 0 &&
                     ::lseek(fd_, static_cast<off_t>(written_ + n), SEEK_SET) >= 0,
                 "[io/atomic] {}: cannot extend to {} bytes: {}", path_, written_ + n, std::strerror(errno));
  written_ += n;
}

void AtomicFile::commit() {
  SECATEUR_CHECK(fd_ >= 0 && !committed_, "[io/atomic] {}: commit called twice", path_);
  SECATEUR_CHECK(::fsync(fd_) == 0, "[io/atomic] {}: fsync failed: {}", path_, std::strerror(errno));
  const int rc = ::close(fd_);
  fd_ = -1;
  SECATEUR_CHECK(rc == 0, "[io/atomic] {}: close failed: {}", path_, std::strerror(errno));
  SECATEUR_CHECK(::rename(temp_.c_str(), path_.c_str()) == 0, "[io/atomic] {}: cannot rename {} over it: {}",
                 path_, temp_, std::strerror(errno));
  committed_ = true;
  fsync_dir(parent_dir(path_));
}

void write_file_atomic(const std::string& path, std::string_view bytes) {
  AtomicFile f(path);
  f.write(bytes);
  f.commit();
}

}  // namespace secateur::io
