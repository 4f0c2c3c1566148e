// runtime/io/atomic_file.h — files that appear whole or not at all.
// Every checkpoint, config and report Secateur writes goes through here: the bytes go to
// "<path>.tmp.<pid>", are fsync'ed, and the temp is renamed over <path>; the directory is then
// fsync'ed too. A crash or an exception leaves the old <path> untouched and no temp behind
// (an exception removes the temp; only a killed process can leave one).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace secateur::io {

// Writes `bytes` to `path` atomically; throws secateur::Error naming the path on failure.
void write_file_atomic(const std::string& path, std::string_view bytes);

// Streaming form: write() any number of times, then commit(). Destroying it without commit()
// (e.g. during stack unwinding) removes the temp file and leaves <path> as it was.
class AtomicFile {
 public:
  explicit AtomicFile(std::string path);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* p, size_t n);
  void write(std::string_view s) { write(s.data(), s.size()); }
  void skip(uint64_t n);   // n zero bytes without writing them (a sparse extension), for others to fill in
  void commit();  // fsync, close, rename over path, fsync the directory

  const std::string& path() const { return path_; }
  const std::string& temp_path() const { return temp_; }
  uint64_t bytes_written() const { return written_; }

 private:
  void discard() noexcept;
  std::string path_;
  std::string temp_;
  int fd_ = -1;
  bool committed_ = false;
  uint64_t written_ = 0;
};

}  // namespace secateur::io
