// parallel/split.h — how work and tensors are split over the ranks of a group: contiguous
// ranges, as even as possible (sizes differ by at most one; a range may be empty).
#pragma once
#include <cstdint>

namespace secateur::parallel {

struct Range {
  int64_t begin = 0, end = 0;
  int64_t size() const { return end - begin; }
};

// The i-th of n contiguous parts of [0, total).
inline Range split_range(int64_t total, int rank, int size) {
  const int64_t base = total / size, extra = total % size;
  const int64_t begin = rank * base + (rank < extra ? rank : extra);
  return {begin, begin + base + (rank < extra ? 1 : 0)};
}

}  // namespace secateur::parallel
