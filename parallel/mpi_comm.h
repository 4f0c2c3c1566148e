// parallel/mpi_comm.h — the MPI backend of Comm: collectives on CPU tensors.
// The MPI handle stays inside mpi_comm.cpp (this header does not include <mpi.h>); what the
// grid needs beyond Comm (the node-local split, raw byte broadcasts for NCCL's bootstrap) is
// offered as methods here. MPI must be initialised (Grid::init) before any MpiComm exists.
#pragma once
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "parallel/comm.h"

namespace secateur::parallel {

class MpiComm final : public Comm {
 public:
  static std::unique_ptr<MpiComm> world();   // wraps MPI_COMM_WORLD (never freed)
  ~MpiComm() override;                        // frees split communicators

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string name() const override { return "mpi:" + label_; }

  void all_reduce(at::Tensor& t, ReduceOp op) override;
  at::Tensor all_gather(const at::Tensor& t) override;
  at::Tensor all_gather_v(const at::Tensor& t, std::vector<int64_t>* dim0_sizes = nullptr) override;
  void broadcast(at::Tensor& t, int root) override;
  void barrier() override;
  void synchronize() override {}
  std::unique_ptr<Comm> split(int color, int key) override;
  Comm& host() override { return *this; }

  // split() with the concrete type; label names the group in name() ("tp", "dp", ...).
  std::unique_ptr<MpiComm> split_mpi(int color, int key, const std::string& label);
  // The ranks sharing this rank's node (MPI_Comm_split_type SHARED), ordered by rank.
  std::unique_ptr<MpiComm> split_shared(const std::string& label = "node");
  // Raw bytes from root to every rank (NCCL's unique id).
  void broadcast_bytes(void* data, size_t n, int root);
  // Every rank's string, indexed by rank (the start-up table).
  std::vector<std::string> all_gather_strings(const std::string& s);

  struct Native;   // the MPI_Comm; defined in mpi_comm.cpp

 private:
  MpiComm(std::unique_ptr<Native> native, std::string label);
  std::unique_ptr<Native> native_;
  std::string label_;
  int rank_ = 0, size_ = 1;
};

}  // namespace secateur::parallel
