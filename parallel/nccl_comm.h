// parallel/nccl_comm.h — the NCCL backend of Comm: collectives on CUDA tensors.
// Built only with SECATEUR_WITH_CUDA. Every op is enqueued on the current c10 CUDA stream of
// the comm's device, so it runs after the compute already queued there and before what
// follows, with no host synchronisation (all_gather_v syncs only on host metadata, which
// travels over the MPI sibling host()). bfloat16/float16 are reduced natively; avg is ncclAvg.
// The NCCL handle stays in nccl_comm.cpp (this header does not include <nccl.h>).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "parallel/comm.h"
#include "parallel/mpi_comm.h"

namespace secateur::parallel {

class NcclComm final : public Comm {
 public:
  // Collective over `group`: rank 0 calls ncclGetUniqueId, MPI broadcasts it, every rank calls
  // ncclCommInitRank on CUDA device `device`. The new comm keeps its own MPI duplicate of group.
  static std::unique_ptr<NcclComm> create(MpiComm& group, int device, const std::string& label);
  ~NcclComm() override;

  int rank() const override { return host_->rank(); }
  int size() const override { return host_->size(); }
  std::string name() const override { return "nccl:" + label_; }
  int device() const { return device_; }

  void all_reduce(at::Tensor& t, ReduceOp op) override;
  at::Tensor all_gather(const at::Tensor& t) override;
  at::Tensor all_gather_v(const at::Tensor& t, std::vector<int64_t>* dim0_sizes = nullptr) override;
  void broadcast(at::Tensor& t, int root) override;
  void barrier() override;       // stream sync, then an MPI barrier
  void synchronize() override;   // the current stream of device()
  std::unique_ptr<Comm> split(int color, int key) override;
  Comm& host() override { return *host_; }

  // ncclCommSplit, with the MPI sibling split the same way.
  std::unique_ptr<NcclComm> split_nccl(int color, int key, const std::string& label);

  struct Native;   // the ncclComm_t; defined in nccl_comm.cpp

 private:
  NcclComm(std::unique_ptr<Native> native, std::unique_ptr<MpiComm> host, int device, std::string label);
  void check(const at::Tensor& t, const char* op) const;
  std::unique_ptr<Native> native_;
  std::unique_ptr<MpiComm> host_;
  int device_;
  std::string label_;
};

}  // namespace secateur::parallel
