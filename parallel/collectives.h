// parallel/collectives.h — the named collectives that code outside parallel/ calls, over a
// Group: the handle a model, a trainer or a pruner holds for its DP or TP ranks (it never calls
// the comm itself). Each function says what it is for, runs on the comm that moves the tensor's
// device (a CPU tensor goes over the host comm, a CUDA one over NCCL), and is the identity on a
// group of one or on no group at all, so that callers never test sizes.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "parallel/comm.h"
#include "parallel/split.h"

namespace secateur::parallel {

// Some ranks of the job, or none (a world of one): a Comm seen from outside parallel/.
class Group {
 public:
  Group() = default;
  Group(Comm* comm) : comm_(comm) {}   // NOLINT: implicit, a Comm is a group
  Group(Comm& comm) : comm_(&comm) {}  // NOLINT
  int rank() const { return comm_ ? comm_->rank() : 0; }
  int size() const { return comm_ ? comm_->size() : 1; }
  bool alone() const { return size() == 1; }   // no other rank: every collective is the identity
  Comm* comm() const { return comm_; }         // for parallel/ (the mappings, the data-parallel sums)

 private:
  Comm* comm_ = nullptr;
};

int rank_of(Group g);
int size_of(Group g);

// The one way work is split over DP ranks: this rank's contiguous share of n items (windows,
// examples, samples, batches, sequences of a step); shares differ by at most one and may be empty.
Range dp_share(int64_t n, Group dp);

// Sums of partial results (a DP rank's share of the samples, a TP rank's partial sums), in place.
void sum(Group g, at::Tensor& t);
double sum(Group g, double v);
int64_t sum(Group g, int64_t v);
double max(Group g, double v);
at::Tensor max(Group g, const at::Tensor& t);   // a new tensor; no gradient

// The rank's pieces of a tensor split along `dim` (sizes may differ, a piece may be empty),
// joined in rank order: the whole tensor on every rank. No gradient.
at::Tensor gather(Group g, const at::Tensor& piece, int dim = 0);

// Every rank's value, in rank order.
std::vector<double> gather_values(Group g, double v);

// Returns once every rank has reached it (a stage's end, the last write of a checkpoint).
void barrier(Group g);

// One decision everywhere: true on every rank when all ranks hold the same value.
bool agree(Group g, uint64_t v);

}  // namespace secateur::parallel
