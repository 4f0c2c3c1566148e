// parallel/comm.h — the one interface through which Secateur moves tensors between ranks.
// Backends: MpiComm (CPU tensors, parallel/mpi_comm.cpp) and NcclComm (CUDA tensors,
// parallel/nccl_comm.cpp). Nothing outside parallel/ includes <mpi.h> or <nccl.h>; code that
// needs a collective takes a `Comm&` and the Grid (parallel/grid.h) decides which backend it is.
//
// Every operation is collective: all ranks of the group call it, in the same order, with
// tensors of the same dtype (and, where stated, the same shape). Tensors must be contiguous
// and of one of float32, float64, bfloat16, float16, int32, int64, uint8; anything else is a
// secateur::Error naming the op and the tensor's dtype/layout.
#pragma once
#include <ATen/core/Tensor.h>   // at::Tensor

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace secateur::parallel {

// avg is defined for floating dtypes only (an integer mean would silently truncate).
enum class ReduceOp { sum, avg, min, max };
const char* to_string(ReduceOp op);

class Comm {
 public:
  virtual ~Comm() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string name() const = 0;   // e.g. "mpi:tp", "nccl:world"

  // In place; every rank ends with the reduction of all ranks' values.
  // MPI reduces bfloat16/float16 in float32 and casts back (one rounding, not one per hop).
  virtual void all_reduce(at::Tensor& t, ReduceOp op) = 0;

  // Tensors of EQUAL shape on every rank (not checked: use all_gather_v when unsure);
  // the result is concatenated on dim 0 in rank order: [size * d0, ...]. A 0-dim tensor
  // counts as shape [1].
  virtual at::Tensor all_gather(const at::Tensor& t) = 0;

  // Dim-0 sizes may differ per rank (uneven pruned shards, empty ones included); the
  // trailing dims and dtype must agree (checked). Result: [sum of d0, ...] in rank order.
  // When dim0_sizes is given it receives every rank's d0, indexed by rank.
  virtual at::Tensor all_gather_v(const at::Tensor& t, std::vector<int64_t>* dim0_sizes = nullptr) = 0;

  // In place; t has the same shape and dtype on every rank.
  virtual void broadcast(at::Tensor& t, int root) = 0;

  // Returns once every rank has reached it and this rank's enqueued operations have finished.
  virtual void barrier() = 0;

  // Waits for this rank's enqueued operations (a no-op for MPI, a stream sync for NCCL).
  virtual void synchronize() = 0;

  // MPI_Comm_split semantics: ranks with one color form a group, ordered by (key, old rank).
  // color < 0: this rank joins no group and gets nullptr.
  virtual std::unique_ptr<Comm> split(int color, int key) = 0;

  // The comm over the same ranks that moves host (CPU) tensors: *this for MPI, the MPI
  // sibling of an NCCL comm. Scalars and metadata travel there, without device syncs.
  virtual Comm& host() = 0;

  // Host-value helpers (over host()).
  double all_reduce_scalar(double v, ReduceOp op);
  int64_t all_reduce_int(int64_t v, ReduceOp op);
  uint64_t all_reduce_min(uint64_t v);   // e.g. the decision hash: min != max means ranks
  uint64_t all_reduce_max(uint64_t v);   // disagree
};

// ---- shared by the backends (parallel/*.cpp) -------------------------------------------------
// Contiguous, a supported dtype, on the device kind the comm moves; else a secateur::Error.
void check_tensor(const at::Tensor& t, const Comm& comm, const char* op, bool want_cuda);
// Integer (not floating) dtypes: avg is rejected for them.
bool is_integral_dtype(const at::Tensor& t);
// all_gather_v's first step: every rank's dim-0 size of t, gathered over host (a CPU comm of the
// same ranks as `comm`), after checking that dtype and trailing dims agree on every rank (all
// ranks see the same headers, so all of them throw the same error).
std::vector<int64_t> gather_dim0_sizes(Comm& host, const Comm& comm, const at::Tensor& t);

}  // namespace secateur::parallel
