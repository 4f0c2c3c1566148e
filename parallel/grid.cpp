// parallel/grid.cpp — MPI start-up, the DP x TP split, device choice and the fatal exit.
#include "parallel/grid.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <mpi.h>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "parallel/mpi_comm.h"
#include "runtime/core/check.h"
#include "runtime/core/log.h"

#ifdef SECATEUR_WITH_CUDA
#include <cuda_runtime_api.h>

#include "parallel/nccl_comm.h"
#endif

namespace secateur::parallel {

namespace {

// MPI is initialised by the first Grid::init and finalised by the last live grid's finalize().
bool g_mpi_ours = false;
int g_live_grids = 0;

// The launcher's node-local rank, or -1 when it does not say.
int local_rank_from_env() {
  for (const char* name : {"OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID"}) {
    const char* v = std::getenv(name);
    if (v && *v) return std::atoi(v);
  }
  return -1;
}

const char* thread_level_name(int level) {
  switch (level) {
    case MPI_THREAD_SINGLE: return "single";
    case MPI_THREAD_FUNNELED: return "funneled";
    case MPI_THREAD_SERIALIZED: return "serialized";
    case MPI_THREAD_MULTIPLE: return "multiple";
  }
  return "?";
}

#ifdef SECATEUR_WITH_CUDA
void cuda_check(cudaError_t rc, const char* what) {
  if (rc == cudaSuccess) return;
  SECATEUR_FAIL("[parallel/grid] {} failed: {}", what, cudaGetErrorString(rc));
}
#endif

}  // namespace

GridCoords grid_coords(int rank, int world, int tp) {
  SECATEUR_CHECK(tp >= 1, "[parallel/grid] tp must be >= 1, got {}", tp);
  SECATEUR_CHECK(tp <= world, "[parallel/grid] tp={} is larger than the world of {} rank(s): launch at least {} ranks",
                 tp, world, tp);
  SECATEUR_CHECK(world % tp == 0,
                 "[parallel/grid] world size {} is not divisible by tp={}: launch a multiple of {} ranks "
                 "(world = dp x tp)", world, tp, tp);
  SECATEUR_CHECK(rank >= 0 && rank < world, "[parallel/grid] rank {} outside world of {}", rank, world);
  return {rank % tp, rank / tp, tp, world / tp};
}

namespace {

// MPI with serialized threads, unless the caller started it; returns the thread level granted.
int start_mpi(int* argc, char*** argv) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  int provided = MPI_THREAD_SINGLE;
  if (!initialized) {
    MPI_Init_thread(argc, argv, MPI_THREAD_SERIALIZED, &provided);
    g_mpi_ours = true;
  } else {
    MPI_Query_thread(&provided);
  }
  return provided;
}

// The number of GPUs this rank sees (0 for device cpu); picks this rank's GPU before MPI and
// NCCL touch CUDA when the launcher already says the local rank.
int select_gpu_early(c10::DeviceType device) {
  SECATEUR_CHECK(device == c10::DeviceType::CPU || device == c10::DeviceType::CUDA,
                 "[parallel/grid] device must be cpu or cuda, got {}", c10::DeviceTypeName(device, true));
#ifndef SECATEUR_WITH_CUDA
  SECATEUR_CHECK(device == c10::DeviceType::CPU, "[parallel/grid] device cuda requested, but this build has no CUDA");
  return 0;
#else
  int n_gpus = 0;
  if (device == c10::DeviceType::CUDA) {
    cuda_check(cudaGetDeviceCount(&n_gpus), "cudaGetDeviceCount");
    SECATEUR_CHECK(n_gpus > 0, "[parallel/grid] device cuda requested, but no GPU is visible");
    const int env_local = local_rank_from_env();
    if (env_local >= 0) cuda_check(cudaSetDevice(env_local % n_gpus), "cudaSetDevice");
  }
  return n_gpus;
#endif
}

}  // namespace

std::unique_ptr<Grid> Grid::init(int* argc, char*** argv, int tp, c10::DeviceType device) {
  std::unique_ptr<Grid> g(new Grid());
  g->device_type_ = device;
  const int n_gpus = select_gpu_early(device);
  g->thread_level_ = thread_level_name(start_mpi(argc, argv));
  g->mpi_world_ = MpiComm::world();
  g->rank_ = g->mpi_world_->rank();
  g->world_size_ = g->mpi_world_->size();
  // Every rank computes the same verdict from the same world size: all of them throw, none hangs.
  g->coords_ = grid_coords(g->rank_, g->world_size_, tp);
  const std::unique_ptr<MpiComm> node = g->mpi_world_->split_shared();
  g->split_groups(*node, tp);
  g->world_ = g->mpi_world_.get();
  g->tp_ = g->mpi_tp_.get();
  g->dp_ = g->mpi_dp_.get();
  if (device == c10::DeviceType::CUDA) g->start_nccl(*node, n_gpus);
  ++g_live_grids;
  g->live_ = true;
  return g;
}

void Grid::split_groups(MpiComm& node, int tp) {
  char host[MPI_MAX_PROCESSOR_NAME] = {0};
  int host_len = 0;
  MPI_Get_processor_name(host, &host_len);
  host_.assign(host, static_cast<size_t>(host_len));

  // The node: local size always, local rank from it when the launcher did not say.
  local_size_ = node.size();
  const int launcher_local = local_rank_from_env();
  local_rank_ = launcher_local >= 0 ? launcher_local : node.rank();

  // tp ranks are consecutive (fast index), dp ranks stride by tp; key = rank keeps world order.
  mpi_tp_ = mpi_world_->split_mpi(coords_.dp_rank, rank_, "tp");
  mpi_dp_ = mpi_world_->split_mpi(coords_.tp_rank, rank_, "dp");

  // A TP group should stay inside one node (its all-reduces sit on the critical path).
  at::Tensor node_id = at::full({1}, static_cast<int64_t>(rank_), at::TensorOptions(at::kLong));
  node.broadcast(node_id, 0);   // the node's lowest world rank names it
  const int64_t id = node_id.data_ptr<int64_t>()[0];
  if (mpi_tp_->all_reduce_int(id, ReduceOp::min) != mpi_tp_->all_reduce_int(id, ReduceOp::max) &&
      coords_.tp_rank == 0) {
    spdlog::warn("[parallel/grid] TP group of dp_rank {} spans nodes: tp={} exceeds the ranks per node", coords_.dp_rank,
                 tp);
  }
}

void Grid::start_nccl(MpiComm& node, int n_gpus) {
#ifndef SECATEUR_WITH_CUDA
  (void)node;
  (void)n_gpus;
  SECATEUR_FAIL("[parallel/grid] device cuda requested, but this build has no CUDA");
#else
  device_index_ = local_rank_ % n_gpus;
  cuda_check(cudaSetDevice(device_index_), "cudaSetDevice");
  cudaDeviceProp prop{};
  cuda_check(cudaGetDeviceProperties(&prop, device_index_), "cudaGetDeviceProperties");
  gpu_name_ = prop.name;
  // NCCL refuses two ranks on one GPU; say so clearly (by UUID: with per-task GPU binding every
  // rank sees its own GPU as device 0).
  std::string uuid;
  for (char c : prop.uuid.bytes) uuid += fmt::format("{:02x}", static_cast<unsigned char>(c));
  const std::vector<std::string> uuids = node.all_gather_strings(uuid);
  for (size_t a = 0; a < uuids.size(); ++a) {
    for (size_t b = a + 1; b < uuids.size(); ++b) {
      SECATEUR_CHECK(uuids[a] != uuids[b],
                     "[parallel/grid] node-local ranks {} and {} on {} share one GPU ({} visible to this rank); "
                     "NCCL needs one GPU per rank: launch at most one rank per GPU, or use device cpu", a, b, host_,
                     n_gpus);
    }
  }
  auto world = NcclComm::create(*mpi_world_, device_index_, "world");
  nccl_tp_ = world->split_nccl(coords_.dp_rank, rank_, "tp");
  nccl_dp_ = world->split_nccl(coords_.tp_rank, rank_, "dp");
  nccl_world_ = std::move(world);
  world_ = nccl_world_.get();
  tp_ = nccl_tp_.get();
  dp_ = nccl_dp_.get();
#endif
}

Grid::~Grid() {
  if (finalized_) return;
  if (live_) --g_live_grids;
  // Not finalised: an error path (abort_job follows) or a caller that forgot. Destroying NCCL
  // comms may wait for peers, so leave every handle to the process exit.
  (void)nccl_dp_.release();
  (void)nccl_tp_.release();
  (void)nccl_world_.release();
  (void)mpi_dp_.release();
  (void)mpi_tp_.release();
  (void)mpi_world_.release();
}

std::string Grid::device_name() const {
  if (device_type_ == c10::DeviceType::CPU) return "cpu";
  return gpu_name_.empty() ? fmt::format("cuda:{}", device_index_) : fmt::format("cuda:{} ({})", device_index_, gpu_name_);
}

std::string Grid::table() {
  const std::string row = fmt::format("{:>5}  {:<24}  {:>5}  {:>3}  {:>3}  {}", rank_, host_, local_rank_,
                                      coords_.dp_rank, coords_.tp_rank, device_name());
  const std::vector<std::string> rows = mpi_world_->all_gather_strings(row);
  std::string out = fmt::format("grid: world {} = dp {} x tp {} (tp_rank = rank % tp) | comms {} | MPI threads {}\n",
                                world_size_, coords_.dp_size, coords_.tp_size,
                                device_type_ == c10::DeviceType::CUDA ? "nccl" : "mpi", thread_level_);
  out += fmt::format("{:>5}  {:<24}  {:>5}  {:>3}  {:>3}  {}\n", "rank", "host", "local", "dp", "tp", "device");
  for (const std::string& r : rows) out += r + "\n";
  return out;
}

void Grid::finalize() {
  if (finalized_) return;
  world_->barrier();   // pending device work done, every rank here
  nccl_dp_.reset();
  nccl_tp_.reset();
  nccl_world_.reset();
  mpi_dp_.reset();
  mpi_tp_.reset();
  mpi_world_.reset();
  world_ = tp_ = dp_ = nullptr;
  finalized_ = true;
  live_ = false;
  int mpi_finalized = 0;
  MPI_Finalized(&mpi_finalized);
  if (--g_live_grids == 0 && g_mpi_ours && !mpi_finalized) MPI_Finalize();
}

void abort_job(const std::string& message) {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  const bool mpi_up = initialized && !finalized;
  auto [rank, world] = log::rank_from_env();
  if (mpi_up) {
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world);
  }
  if (auto logger = spdlog::default_logger()) logger->flush();
  std::fprintf(stderr, "[rank %d/%d] %s\n", rank, world, message.c_str());
  std::fflush(stderr);
  if (mpi_up) MPI_Abort(MPI_COMM_WORLD, 1);
  std::_Exit(1);
}

}  // namespace secateur::parallel
