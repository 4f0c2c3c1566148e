#include "parallel/tensor_parallel/sharded_io.h"

#include <ATen/ATen.h>
#include <fcntl.h>
#include <fmt/ranges.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>

#include "runtime/core/check.h"

namespace secateur::parallel {

namespace {

// A file descriptor closed on every path out.
struct Fd {
  int fd = -1;
  Fd(const std::string& path, int flags) : fd(::open(path.c_str(), flags | O_CLOEXEC)) {
    SECATEUR_CHECK(fd >= 0, "[parallel/sharded_io] cannot open {}: {}", path, std::strerror(errno));
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

void read_at(int fd, const std::string& path, char* p, uint64_t n, uint64_t offset) {
  while (n > 0) {
    const ssize_t got = ::pread(fd, p, std::min<uint64_t>(n, 1ull << 30), static_cast<off_t>(offset));
    if (got < 0 && errno == EINTR) continue;
    SECATEUR_CHECK(got > 0, "[parallel/sharded_io] {}: short read at offset {}", path, offset);
    p += got;
    n -= static_cast<uint64_t>(got);
    offset += static_cast<uint64_t>(got);
  }
}

void write_at(int fd, const std::string& path, const char* p, uint64_t n, uint64_t offset) {
  while (n > 0) {
    const ssize_t w = ::pwrite(fd, p, std::min<uint64_t>(n, 1ull << 30), static_cast<off_t>(offset));
    if (w < 0 && errno == EINTR) continue;
    SECATEUR_CHECK(w > 0, "[parallel/sharded_io] {}: write at offset {} failed: {}", path, offset,
                   w < 0 ? std::strerror(errno) : "no progress");
    p += w;
    n -= static_cast<uint64_t>(w);
    offset += static_cast<uint64_t>(w);
  }
}

}  // namespace

at::Tensor read_slice(const io::SafetensorsCheckpoint& ck, const std::string& name, const Slice& s) {
  const io::SafetensorsFile& f = ck.file_of(name);
  const io::SafetensorsFile::Info& info = ck.info(name);
  const at::ScalarType st = io::safetensors_scalar_type(info.dtype);
  SECATEUR_CHECK(s.whole() || (s.dim < static_cast<int>(info.shape.size()) && s.range.end <= info.shape[s.dim]),
                 "[parallel/sharded_io] {}: cannot slice '{}' on dim {} at [{}, {})", f.path(), name, s.dim,
                 s.range.begin, s.range.end);
  const ByteRuns runs = byte_runs(info.shape, c10::elementSize(st), s);
  std::vector<int64_t> shape = info.shape;
  if (!s.whole()) shape[s.dim] = s.range.size();
  at::Tensor out = at::empty(shape, at::TensorOptions(st));
  if (runs.bytes == 0) return out;
  const Fd fd(f.path(), O_RDONLY);
  auto* dst = static_cast<char*>(out.data_ptr());
  const uint64_t base = f.data_offset() + info.begin + runs.offset;
  for (int64_t r = 0; r < runs.count; ++r) read_at(fd.fd, f.path(), dst + r * runs.bytes, runs.bytes, base + r * runs.stride);
  return out;
}

SliceWriter::SliceWriter(const io::SafetensorsCheckpoint& layout) : layout_(layout) {}

SliceWriter::~SliceWriter() {
  for (auto& [path, fd] : files_) ::close(fd);
}

void SliceWriter::write(const std::string& name, const at::Tensor& part, const Slice& place, at::ScalarType dtype) {
  const io::SafetensorsFile& file = layout_.file_of(name);
  const io::SafetensorsFile::Info& info = file.info(name);
  std::vector<int64_t> expect = info.shape;
  if (!place.whole()) expect[place.dim] = place.range.size();
  SECATEUR_CHECK(part.sizes().vec() == expect && (place.whole() || place.range.end <= info.shape[place.dim]),
                 "[parallel/sharded_io] {}: part of '{}' has shape [{}], its place in [{}] wants [{}]", file.path(),
                 name, fmt::join(part.sizes(), ", "), fmt::join(info.shape, ", "), fmt::join(expect, ", "));
  if (part.numel() == 0) return;
  const at::Tensor c = part.to(at::kCPU, dtype).contiguous();
  const ByteRuns runs = byte_runs(info.shape, c.element_size(), place);
  auto it = files_.find(file.path());
  if (it == files_.end()) {
    const int fd = ::open(file.path().c_str(), O_WRONLY | O_CLOEXEC);
    SECATEUR_CHECK(fd >= 0, "[parallel/sharded_io] cannot open {}: {}", file.path(), std::strerror(errno));
    it = files_.emplace(file.path(), fd).first;
  }
  const char* p = static_cast<const char*>(c.const_data_ptr());
  const uint64_t base = file.data_offset() + info.begin + runs.offset;
  for (int64_t r = 0; r < runs.count; ++r) write_at(it->second, file.path(), p + r * runs.bytes, runs.bytes, base + r * runs.stride);
}

void SliceWriter::finish() {
  for (auto& [path, fd] : files_) {
    SECATEUR_CHECK(::fsync(fd) == 0, "[parallel/sharded_io] {}: fsync failed: {}", path, std::strerror(errno));
  }
}

void write_slices(const io::SafetensorsCheckpoint& layout,
                  const std::vector<std::pair<std::string, at::Tensor>>& parts, const std::vector<Slice>& placement,
                  at::ScalarType dtype) {
  SECATEUR_CHECK(parts.size() == placement.size(), "[parallel/sharded_io] {} parts but {} placements", parts.size(),
                 placement.size());
  SliceWriter w(layout);
  for (size_t i = 0; i < parts.size(); ++i) w.write(parts[i].first, parts[i].second, placement[i], dtype);
  w.finish();
}

}  // namespace secateur::parallel
