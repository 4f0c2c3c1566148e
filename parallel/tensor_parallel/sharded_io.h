// parallel/tensor_parallel/sharded_io.h — a rank's shard to and from a safetensors checkpoint:
// the sharded read takes only this rank's slice of a tensor off the disk; the in-place sharded
// write puts each rank's slices at their place in files whose layout is already written, so no
// rank ever holds the whole model. Both move the byte runs of parallel::byte_runs with
// pread/pwrite into and out of fresh memory: going through the memory mapping instead would
// leave every touched file page in the rank's resident set (a column slice touches every page).
#pragma once
#include <ATen/core/Tensor.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "parallel/tensor_parallel/shard.h"
#include "runtime/io/safetensors.h"

namespace secateur::parallel {

// Slice s of tensor `name` of the checkpoint, in its stored dtype, on the CPU.
at::Tensor read_slice(const io::SafetensorsCheckpoint& ck, const std::string& name, const Slice& s);

// Parts written in place into the files of `layout` (every header already in place, data area
// allocated), converted to dtype; each file opened once; finish() fsyncs every file written.
// write() Errors naming the tensor when a part's shape does not fit its place.
class SliceWriter {
 public:
  explicit SliceWriter(const io::SafetensorsCheckpoint& layout);
  SliceWriter(const SliceWriter&) = delete;
  SliceWriter& operator=(const SliceWriter&) = delete;
  ~SliceWriter();
  void write(const std::string& name, const at::Tensor& part, const Slice& place, at::ScalarType dtype);
  void finish();

 private:
  const io::SafetensorsCheckpoint& layout_;
  std::map<std::string, int> files_;   // path -> open descriptor
};

// Writes parts[i] (converted to dtype) at placement[i] of its tensor in the checkpoint `layout`
// (every file's header already in place, data area allocated), then fsyncs the files written.
// Error naming the tensor when a part's shape does not fit its place.
void write_slices(const io::SafetensorsCheckpoint& layout,
                  const std::vector<std::pair<std::string, at::Tensor>>& parts, const std::vector<Slice>& placement,
                  at::ScalarType dtype);

}  // namespace secateur::parallel
