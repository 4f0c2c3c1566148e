// parallel/nccl_comm.cpp — NcclComm: NCCL collectives on the current c10 CUDA stream.
// Linked against the libnccl.so.2 LibTorch loads (see parallel/CMakeLists.txt).
#include "parallel/nccl_comm.h"

#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <nccl.h>

#include "runtime/core/check.h"

namespace secateur::parallel {

struct NcclComm::Native {
  ncclComm_t comm = nullptr;
  ~Native() {
    if (comm) ncclCommDestroy(comm);
  }
};

namespace {

void nccl_check(ncclResult_t rc, ncclComm_t comm, const std::string& who, const char* what) {
  if (rc == ncclSuccess) return;
  const char* last = comm ? ncclGetLastError(comm) : nullptr;
  SECATEUR_FAIL("[parallel/{}] {} failed: {}{}{}", who, what, ncclGetErrorString(rc), last && *last ? ": " : "",
                last ? last : "");
}

ncclDataType_t nccl_type(at::ScalarType s) {
  switch (s) {
    case at::kFloat: return ncclFloat32;
    case at::kDouble: return ncclFloat64;
    case at::kBFloat16: return ncclBfloat16;
    case at::kHalf: return ncclFloat16;
    case at::kInt: return ncclInt32;
    case at::kLong: return ncclInt64;
    case at::kByte: return ncclUint8;
    default: SECATEUR_FAIL("[parallel/nccl] no NCCL type for dtype {}", c10::toString(s));
  }
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum: return ncclSum;
    case ReduceOp::avg: return ncclAvg;
    case ReduceOp::min: return ncclMin;
    case ReduceOp::max: return ncclMax;
  }
  return ncclSum;
}

}  // namespace

NcclComm::NcclComm(std::unique_ptr<Native> native, std::unique_ptr<MpiComm> host, int device, std::string label)
    : native_(std::move(native)), host_(std::move(host)), device_(device), label_(std::move(label)) {
  int nranks = 0, rank = 0;
  nccl_check(ncclCommCount(native_->comm, &nranks), native_->comm, name(), "ncclCommCount");
  nccl_check(ncclCommUserRank(native_->comm, &rank), native_->comm, name(), "ncclCommUserRank");
  SECATEUR_CHECK(nranks == host_->size() && rank == host_->rank(),
                 "[parallel/{}] NCCL sees rank {}/{}, MPI sees rank {}/{}", name(), rank, nranks, host_->rank(),
                 host_->size());
}

NcclComm::~NcclComm() = default;   // Native's destructor calls ncclCommDestroy

std::unique_ptr<NcclComm> NcclComm::create(MpiComm& group, int device, const std::string& label) {
  std::unique_ptr<MpiComm> host = group.split_mpi(0, group.rank(), label);   // our own duplicate
  ncclUniqueId id{};
  if (host->rank() == 0) nccl_check(ncclGetUniqueId(&id), nullptr, "nccl:" + label, "ncclGetUniqueId");
  host->broadcast_bytes(&id, sizeof(id), 0);
  const c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device));
  auto native = std::make_unique<Native>();
  nccl_check(ncclCommInitRank(&native->comm, host->size(), id, host->rank()), nullptr, "nccl:" + label,
             "ncclCommInitRank");
  return std::unique_ptr<NcclComm>(new NcclComm(std::move(native), std::move(host), device, label));
}

void NcclComm::check(const at::Tensor& t, const char* op) const {
  check_tensor(t, *this, op, true);
  SECATEUR_CHECK(t.device().index() == device_, "[parallel/{}] {}: tensor is on {}, this comm is on cuda:{}", name(),
                 op, t.device().str(), device_);
}

void NcclComm::all_reduce(at::Tensor& t, ReduceOp op) {
  check(t, "all_reduce");
  SECATEUR_CHECK(!(op == ReduceOp::avg && is_integral_dtype(t)),
                 "[parallel/{}] all_reduce: avg is defined for floating dtypes only, got {}", name(),
                 c10::toString(t.scalar_type()));
  const c10::cuda::CUDAGuard guard(t.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(t.device().index()).stream();
  nccl_check(ncclAllReduce(t.data_ptr(), t.data_ptr(), static_cast<size_t>(t.numel()), nccl_type(t.scalar_type()),
                           nccl_op(op), native_->comm, stream),
             native_->comm, name(), "ncclAllReduce");
}

at::Tensor NcclComm::all_gather(const at::Tensor& t) {
  check(t, "all_gather");
  std::vector<int64_t> shape = t.dim() == 0 ? std::vector<int64_t>{1} : t.sizes().vec();
  shape[0] *= size();
  const c10::cuda::CUDAGuard guard(t.device());
  at::Tensor out = at::empty(shape, t.options());   // allocated on the current stream
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(t.device().index()).stream();
  nccl_check(ncclAllGather(t.data_ptr(), out.data_ptr(), static_cast<size_t>(t.numel()), nccl_type(t.scalar_type()),
                           native_->comm, stream),
             native_->comm, name(), "ncclAllGather");
  return out;
}

at::Tensor NcclComm::all_gather_v(const at::Tensor& t, std::vector<int64_t>* dim0_sizes) {
  check(t, "all_gather_v");
  // The sizes are host metadata: they travel over MPI, so the device stream is not synced.
  std::vector<int64_t> d0 = gather_dim0_sizes(*host_, *this, t);
  std::vector<int64_t> shape = t.dim() == 0 ? std::vector<int64_t>{1} : t.sizes().vec();
  int64_t inner = 1;   // elements per dim-0 row
  for (size_t d = 1; d < shape.size(); ++d) inner *= shape[d];
  int64_t total = 0;
  for (int64_t n : d0) total += n;
  shape[0] = total;
  const c10::cuda::CUDAGuard guard(t.device());
  at::Tensor out = at::empty(shape, t.options());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(t.device().index()).stream();
  // NCCL has no all-gather-v: one broadcast per rank into its slot, fused in one group.
  const ncclDataType_t type = nccl_type(t.scalar_type());
  auto* dst = static_cast<char*>(out.data_ptr());
  nccl_check(ncclGroupStart(), native_->comm, name(), "ncclGroupStart");
  int64_t offset = 0;
  for (int r = 0; r < size(); ++r) {
    const int64_t count = d0[r] * inner;
    if (count > 0) {
      nccl_check(ncclBroadcast(t.data_ptr(), dst + offset * t.element_size(), static_cast<size_t>(count), type, r,
                               native_->comm, stream),
                 native_->comm, name(), "ncclBroadcast (all_gather_v)");
    }
    offset += count;
  }
  nccl_check(ncclGroupEnd(), native_->comm, name(), "ncclGroupEnd");
  if (dim0_sizes) *dim0_sizes = std::move(d0);
  return out;
}

void NcclComm::broadcast(at::Tensor& t, int root) {
  check(t, "broadcast");
  SECATEUR_CHECK(root >= 0 && root < size(), "[parallel/{}] broadcast: root {} outside [0, {})", name(), root, size());
  const c10::cuda::CUDAGuard guard(t.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(t.device().index()).stream();
  nccl_check(ncclBroadcast(t.data_ptr(), t.data_ptr(), static_cast<size_t>(t.numel()), nccl_type(t.scalar_type()),
                           root, native_->comm, stream),
             native_->comm, name(), "ncclBroadcast");
}

void NcclComm::synchronize() { c10::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(device_)).synchronize(); }

void NcclComm::barrier() {
  synchronize();
  host_->barrier();
}

std::unique_ptr<Comm> NcclComm::split(int color, int key) { return split_nccl(color, key, label_ + "/split"); }

std::unique_ptr<NcclComm> NcclComm::split_nccl(int color, int key, const std::string& label) {
  std::unique_ptr<MpiComm> host = host_->split_mpi(color, key, label);
  auto native = std::make_unique<Native>();
  const c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device_));
  nccl_check(ncclCommSplit(native_->comm, color < 0 ? NCCL_SPLIT_NOCOLOR : color, key, &native->comm, nullptr),
             native_->comm, name(), "ncclCommSplit");
  SECATEUR_CHECK((native->comm == nullptr) == (host == nullptr),
                 "[parallel/{}] split: NCCL and MPI disagree on membership (color {})", name(), color);
  if (!host) return nullptr;
  return std::unique_ptr<NcclComm>(new NcclComm(std::move(native), std::move(host), device_, label));
}

}  // namespace secateur::parallel
