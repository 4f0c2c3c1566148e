// parallel/grid.h — the process grid: world = DP x TP, TP the fast index
// (tp_rank = rank % tp, dp_rank = rank / tp, as Megatron and torchtitan lay it out), so the
// ranks of one TP group are consecutive and, with mpirun's by-slot mapping, on one node.
// The grid owns every communicator; the model asks it for world(), tp() or dp() and never
// builds one itself. On a CUDA grid those are NCCL comms (their host() is the MPI sibling);
// on a CPU grid they are MPI comms.
//
//   auto grid = parallel::Grid::init(&argc, &argv, /*tp=*/2);       // collective
//   try { ... grid->tp().all_reduce(partial, ReduceOp::sum); ... }
//   catch (const std::exception& e) { parallel::abort_job(e.what()); }
//   grid->finalize();
#pragma once
#include <c10/core/DeviceType.h>

#include <memory>
#include <string>

#include "parallel/comm.h"

namespace secateur::parallel {

class MpiComm;

// Where a rank sits, from (rank, world, tp) alone; world % tp != 0 is a secateur::Error.
struct GridCoords {
  int tp_rank, dp_rank, tp_size, dp_size;
};
GridCoords grid_coords(int rank, int world, int tp);

class Grid {
 public:
  // Collective over the whole job. Initialises MPI once (MPI_Init_thread; a process started
  // without mpirun is a world of one), checks world % tp == 0, finds the node-local rank
  // (OMPI_COMM_WORLD_LOCAL_RANK, then SLURM_LOCALID, else MPI_Comm_split_type SHARED), picks
  // the device (CUDA: cudaSetDevice(local_rank % n_gpus)) and builds the world/TP/DP comms.
  static std::unique_ptr<Grid> init(int* argc, char*** argv, int tp, c10::DeviceType device = c10::DeviceType::CPU);
  ~Grid();   // frees nothing collective: a failing rank must reach abort_job, not hang here
  Grid(const Grid&) = delete;
  Grid& operator=(const Grid&) = delete;

  Comm& world() { return *world_; }
  Comm& tp() { return *tp_; }
  Comm& dp() { return *dp_; }

  int rank() const { return rank_; }
  int world_size() const { return world_size_; }
  int tp_rank() const { return coords_.tp_rank; }
  int dp_rank() const { return coords_.dp_rank; }
  int tp_size() const { return coords_.tp_size; }
  int dp_size() const { return coords_.dp_size; }
  int local_rank() const { return local_rank_; }
  int local_size() const { return local_size_; }
  c10::DeviceType device_type() const { return device_type_; }
  int device_index() const { return device_index_; }   // -1 on CPU
  std::string device_name() const;                     // "cpu", "cuda:0 (NVIDIA H100 ...)"

  // The start-up table: one line per rank (rank, host, local rank, dp, tp, device), gathered
  // over MPI. Collective; every rank gets it, rank 0 prints it.
  std::string table();

  // Collective, at the end of a successful run: waits for pending work, frees the comms and,
  // when this is the last live grid and Secateur initialised MPI, finalises MPI. Idempotent.
  void finalize();

 private:
  Grid() = default;
  void split_groups(MpiComm& node, int tp);            // host, node-local rank, the TP and DP groups
  void start_nccl(MpiComm& node, int n_gpus);          // the device of this rank, NCCL world/TP/DP
  int rank_ = 0, world_size_ = 1, local_rank_ = 0, local_size_ = 1, device_index_ = -1;
  GridCoords coords_{0, 0, 1, 1};
  c10::DeviceType device_type_ = c10::DeviceType::CPU;
  std::string host_, gpu_name_, thread_level_;
  bool live_ = false, finalized_ = false;
  std::unique_ptr<MpiComm> mpi_world_, mpi_tp_, mpi_dp_;
  std::unique_ptr<Comm> nccl_world_, nccl_tp_, nccl_dp_;
  Comm* world_ = nullptr;
  Comm* tp_ = nullptr;
  Comm* dp_ = nullptr;
};

// Logs "[rank r/N] <message>" to stderr and ends the whole job with MPI_Abort(MPI_COMM_WORLD, 1)
// (or exits with status 1 when MPI is not running). The one way a failing rank leaves, so an
// exception on any rank brings every rank down instead of leaving the others in a collective.
[[noreturn]] void abort_job(const std::string& message);

}  // namespace secateur::parallel
