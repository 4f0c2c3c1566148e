// parallel/tensor_parallel/shard.h — how tensors are split over a TP group (Megatron style).
// A split names the axis it cuts (column: output rows, row: input columns, vocab: embedding /
// LM-head rows); a rank holds one contiguous slice of that axis. The shard plan holds, per layer,
// this rank's ranges of kv-groups (a group and its query heads stay on one rank) and of MLP
// neurons, and its vocabulary rows: as even as possible, possibly uneven or empty (3 kv-groups
// over TP=2 give 2 + 1, over TP=4 one rank holds no attention at all). Which tensor is split how
// is the model spec's fact (runtime/model/spec.h); the byte runs of a slice are what the sharded
// read and the in-place sharded write (sharded_io.h) move.
#pragma once
#include <cstdint>
#include <vector>

#include "parallel/split.h"

namespace secateur::parallel {

enum class Split { replicated, column, row, vocab };

// The axis a split cuts: 0 for column and vocab, 1 for row, -1 for replicated.
int split_axis(Split s);

// The part of a tensor a rank holds: `range` of axis `dim`; dim -1 = the whole tensor.
struct Slice {
  int dim = -1;
  Range range;
  bool whole() const { return dim < 0; }
};

// Where a slice lies in a row-major tensor of `shape` with elements of element_size bytes:
// `count` contiguous runs of `bytes` each, the first at byte `offset`, each `stride` after the
// previous one (a block of rows is one run; a block of columns is one run per row).
struct ByteRuns {
  int64_t count = 1, offset = 0, bytes = 0, stride = 0;
};
ByteRuns byte_runs(const std::vector<int64_t>& shape, int64_t element_size, const Slice& s);

struct ShardPlan {
  struct Widths {          // of one layer of the whole model
    int64_t kv_heads = 0, group = 1, neurons = 0;   // group = query heads per kv-head
  };
  struct Layer {
    Range kv_heads, heads, neurons;   // heads = kv_heads scaled by the group size
  };
  int rank = 0, size = 1;
  std::vector<Layer> layers;
  Range vocab;

  static ShardPlan make(const std::vector<Widths>& layers, int64_t vocab, int rank, int size);
  bool sharded() const { return size > 1; }
};

}  // namespace secateur::parallel
