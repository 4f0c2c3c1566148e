#include "parallel/tensor_parallel/shard.h"

#include "runtime/core/check.h"

namespace secateur::parallel {

int split_axis(Split s) {
  switch (s) {
    case Split::column:
    case Split::vocab: return 0;
    case Split::row: return 1;
    case Split::replicated: break;
  }
  return -1;
}

ByteRuns byte_runs(const std::vector<int64_t>& shape, int64_t element_size, const Slice& s) {
  ByteRuns r;
  r.bytes = element_size;
  if (s.whole()) {
    for (int64_t d : shape) r.bytes *= d;
    return r;
  }
  SECATEUR_CHECK(s.dim < static_cast<int>(shape.size()) && s.range.begin >= 0 && s.range.begin <= s.range.end &&
                     s.range.end <= shape[s.dim],
                 "[parallel/shard] no slice [{}, {}) of axis {} in a tensor of {} axes", s.range.begin, s.range.end,
                 s.dim, shape.size());
  int64_t index_bytes = element_size;                            // bytes of one index of axis dim
  for (size_t d = s.dim + 1; d < shape.size(); ++d) index_bytes *= shape[d];
  r.count = 1;
  for (int d = 0; d < s.dim; ++d) r.count *= shape[d];          // outer repetitions
  r.offset = s.range.begin * index_bytes;
  r.bytes = s.range.size() * index_bytes;
  r.stride = shape[s.dim] * index_bytes;
  return r;
}

ShardPlan ShardPlan::make(const std::vector<Widths>& widths, int64_t vocab, int rank, int size) {
  SECATEUR_CHECK(size >= 1 && rank >= 0 && rank < size, "[parallel/shard] bad TP rank {} of {}", rank, size);
  ShardPlan p;
  p.rank = rank;
  p.size = size;
  for (const Widths& w : widths) {
    Layer L;
    L.kv_heads = split_range(w.kv_heads, rank, size);
    L.heads = {L.kv_heads.begin * w.group, L.kv_heads.end * w.group};
    L.neurons = split_range(w.neurons, rank, size);
    p.layers.push_back(L);
  }
  p.vocab = split_range(vocab, rank, size);
  return p;
}

}  // namespace secateur::parallel
