// parallel/mpi_comm.cpp — MpiComm, plus what every backend shares: the tensor checks of
// comm.h and the host-value helpers of Comm (they run over host(), which is an MpiComm).
#include "parallel/mpi_comm.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <mpi.h>

#include <algorithm>
#include <climits>
#include <cstring>

#include "runtime/core/check.h"

namespace secateur::parallel {

// ---- shared by every backend --------------------------------------------------------------

const char* to_string(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum: return "sum";
    case ReduceOp::avg: return "avg";
    case ReduceOp::min: return "min";
    case ReduceOp::max: return "max";
  }
  return "?";
}

bool is_integral_dtype(const at::Tensor& t) { return !at::isFloatingType(t.scalar_type()); }

void check_tensor(const at::Tensor& t, const Comm& comm, const char* op, bool want_cuda) {
  SECATEUR_CHECK(t.defined(), "[parallel/{}] {}: tensor is undefined", comm.name(), op);
  switch (t.scalar_type()) {
    case at::kFloat: case at::kDouble: case at::kBFloat16: case at::kHalf:
    case at::kInt: case at::kLong: case at::kByte:
      break;
    default:
      SECATEUR_FAIL("[parallel/{}] {}: dtype {} is not supported (float32, float64, bfloat16, float16, "
                    "int32, int64, uint8)", comm.name(), op, c10::toString(t.scalar_type()));
  }
  SECATEUR_CHECK(t.is_contiguous(), "[parallel/{}] {}: tensor must be contiguous (shape [{}], strides [{}])",
                 comm.name(), op, fmt::join(t.sizes(), ", "), fmt::join(t.strides(), ", "));
  SECATEUR_CHECK(t.is_cuda() == want_cuda, "[parallel/{}] {}: tensor is on {}, this comm moves {} tensors",
                 comm.name(), op, t.device().str(), want_cuda ? "CUDA" : "CPU");
}

std::vector<int64_t> gather_dim0_sizes(Comm& host, const Comm& comm, const at::Tensor& t) {
  // Header per rank: [dtype, ndim, d0, d1, ..., d7]; a 0-dim tensor counts as [1].
  constexpr int64_t kMaxDims = 8, kHeader = 2 + kMaxDims;
  const std::vector<int64_t> shape = t.dim() == 0 ? std::vector<int64_t>{1} : t.sizes().vec();
  at::Tensor mine = at::zeros({kHeader}, at::TensorOptions(at::kLong));
  int64_t* m = mine.data_ptr<int64_t>();
  m[0] = static_cast<int64_t>(t.scalar_type());
  m[1] = static_cast<int64_t>(shape.size());
  std::copy_n(shape.begin(), std::min<int64_t>(m[1], kMaxDims), m + 2);
  const at::Tensor all = host.all_gather(mine);   // [size * kHeader]
  const int64_t* h0 = all.data_ptr<int64_t>();
  std::vector<int64_t> d0(static_cast<size_t>(host.size()));
  for (int r = 0; r < host.size(); ++r) {
    const int64_t* h = h0 + r * kHeader;
    SECATEUR_CHECK(h[1] <= kMaxDims, "[parallel/{}] all_gather_v: at most {} dims, rank {} has {}", comm.name(),
                   kMaxDims, r, h[1]);
    const bool same = h[0] == m[0] && h[1] == m[1] && std::equal(h + 3, h + 2 + h[1], m + 3);
    if (!same) {
      SECATEUR_FAIL("[parallel/{}] all_gather_v: rank {} has {} [{}], rank {} has {} [{}]; only dim 0 may differ",
                    comm.name(), r, c10::toString(static_cast<at::ScalarType>(h[0])),
                    fmt::join(h + 2, h + 2 + h[1], ", "), host.rank(), c10::toString(t.scalar_type()),
                    fmt::join(shape, ", "));
    }
    d0[r] = h[2];
  }
  return d0;
}

double Comm::all_reduce_scalar(double v, ReduceOp op) {
  at::Tensor t = at::full({1}, v, at::TensorOptions(at::kDouble));
  host().all_reduce(t, op);
  return t.data_ptr<double>()[0];
}

int64_t Comm::all_reduce_int(int64_t v, ReduceOp op) {
  at::Tensor t = at::full({1}, v, at::TensorOptions(at::kLong));
  host().all_reduce(t, op);
  return t.data_ptr<int64_t>()[0];
}

// Flipping the sign bit maps uint64 order onto int64 order, so int64 min/max serve.
static constexpr uint64_t kSignBit = uint64_t{1} << 63;
uint64_t Comm::all_reduce_min(uint64_t v) {
  return static_cast<uint64_t>(all_reduce_int(static_cast<int64_t>(v ^ kSignBit), ReduceOp::min)) ^ kSignBit;
}
uint64_t Comm::all_reduce_max(uint64_t v) {
  return static_cast<uint64_t>(all_reduce_int(static_cast<int64_t>(v ^ kSignBit), ReduceOp::max)) ^ kSignBit;
}

// ---- MPI ----------------------------------------------------------------------------------

struct MpiComm::Native {
  MPI_Comm comm = MPI_COMM_NULL;
  bool owned = false;   // split communicators are freed; MPI_COMM_WORLD is not
};

namespace {

// MPI counts are int: larger buffers go in chunks of this many elements.
constexpr int64_t kMaxChunk = int64_t{1} << 30;

void mpi_check(int rc, const std::string& what) {
  if (rc == MPI_SUCCESS) return;
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  SECATEUR_FAIL("[parallel/mpi] {} failed: {}", what, std::string(msg, static_cast<size_t>(len)));
}

// Moving data: bfloat16/float16 travel as 16-bit words.
MPI_Datatype mpi_type(at::ScalarType s) {
  switch (s) {
    case at::kFloat: return MPI_FLOAT;
    case at::kDouble: return MPI_DOUBLE;
    case at::kInt: return MPI_INT32_T;
    case at::kLong: return MPI_INT64_T;
    case at::kByte: return MPI_UINT8_T;
    case at::kBFloat16: case at::kHalf: return MPI_UINT16_T;
    default: SECATEUR_FAIL("[parallel/mpi] no MPI type for dtype {}", c10::toString(s));
  }
}

MPI_Op mpi_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum: case ReduceOp::avg: return MPI_SUM;   // avg: sum, then divide
    case ReduceOp::min: return MPI_MIN;
    case ReduceOp::max: return MPI_MAX;
  }
  return MPI_SUM;
}

int to_int_count(int64_t n, const std::string& comm, const char* op) {
  SECATEUR_CHECK(n <= INT_MAX, "[parallel/{}] {}: {} elements exceed MPI's int count limit", comm, op, n);
  return static_cast<int>(n);
}

// A 0-dim tensor gathers as shape [1].
std::vector<int64_t> gather_shape(const at::Tensor& t) {
  return t.dim() == 0 ? std::vector<int64_t>{1} : t.sizes().vec();
}

}  // namespace

MpiComm::MpiComm(std::unique_ptr<Native> native, std::string label)
    : native_(std::move(native)), label_(std::move(label)) {
  mpi_check(MPI_Comm_rank(native_->comm, &rank_), "MPI_Comm_rank");
  mpi_check(MPI_Comm_size(native_->comm, &size_), "MPI_Comm_size");
}

MpiComm::~MpiComm() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (native_ && native_->owned && !finalized) MPI_Comm_free(&native_->comm);
}

std::unique_ptr<MpiComm> MpiComm::world() {
  int initialized = 0;
  MPI_Initialized(&initialized);
  SECATEUR_CHECK(initialized, "[parallel/mpi] MPI is not initialised: call Grid::init first");
  auto n = std::make_unique<Native>();
  n->comm = MPI_COMM_WORLD;
  return std::unique_ptr<MpiComm>(new MpiComm(std::move(n), "world"));
}

void MpiComm::all_reduce(at::Tensor& t, ReduceOp op) {
  check_tensor(t, *this, "all_reduce", false);
  SECATEUR_CHECK(!(op == ReduceOp::avg && is_integral_dtype(t)),
                 "[parallel/{}] all_reduce: avg is defined for floating dtypes only, got {}", name(),
                 c10::toString(t.scalar_type()));
  if (t.scalar_type() == at::kBFloat16 || t.scalar_type() == at::kHalf) {
    // MPI has no 16-bit float types: reduce in float32 and round once at the end.
    at::Tensor wide = t.to(at::kFloat);
    all_reduce(wide, op);
    t.copy_(wide);
    return;
  }
  const MPI_Datatype type = mpi_type(t.scalar_type());
  auto* base = static_cast<char*>(t.data_ptr());
  for (int64_t off = 0; off < t.numel(); off += kMaxChunk) {
    const int n = static_cast<int>(std::min(kMaxChunk, t.numel() - off));
    mpi_check(MPI_Allreduce(MPI_IN_PLACE, base + off * t.element_size(), n, type, mpi_op(op), native_->comm),
              "MPI_Allreduce");
  }
  if (op == ReduceOp::avg) t.div_(size_);
}

at::Tensor MpiComm::all_gather(const at::Tensor& t) {
  check_tensor(t, *this, "all_gather", false);
  std::vector<int64_t> shape = gather_shape(t);
  const int n = to_int_count(t.numel(), name(), "all_gather");
  shape[0] *= size_;
  at::Tensor out = at::empty(shape, t.options());
  const MPI_Datatype type = mpi_type(t.scalar_type());
  mpi_check(MPI_Allgather(t.data_ptr(), n, type, out.data_ptr(), n, type, native_->comm), "MPI_Allgather");
  return out;
}

at::Tensor MpiComm::all_gather_v(const at::Tensor& t, std::vector<int64_t>* dim0_sizes) {
  check_tensor(t, *this, "all_gather_v", false);
  std::vector<int64_t> d0 = gather_dim0_sizes(*this, *this, t);
  std::vector<int64_t> shape = gather_shape(t);
  int64_t inner = 1;   // elements per dim-0 row
  for (size_t d = 1; d < shape.size(); ++d) inner *= shape[d];
  std::vector<int> counts(size_), displs(size_);
  int64_t total = 0;
  for (int r = 0; r < size_; ++r) {
    counts[r] = to_int_count(d0[r] * inner, name(), "all_gather_v");
    displs[r] = to_int_count(total * inner, name(), "all_gather_v");
    total += d0[r];
  }
  to_int_count(total * inner, name(), "all_gather_v");
  shape[0] = total;
  at::Tensor out = at::empty(shape, t.options());
  const MPI_Datatype type = mpi_type(t.scalar_type());
  mpi_check(MPI_Allgatherv(t.data_ptr(), counts[rank_], type, out.data_ptr(), counts.data(), displs.data(), type,
                           native_->comm),
            "MPI_Allgatherv");
  if (dim0_sizes) *dim0_sizes = std::move(d0);
  return out;
}

void MpiComm::broadcast(at::Tensor& t, int root) {
  check_tensor(t, *this, "broadcast", false);
  SECATEUR_CHECK(root >= 0 && root < size_, "[parallel/{}] broadcast: root {} outside [0, {})", name(), root, size_);
  const MPI_Datatype type = mpi_type(t.scalar_type());
  auto* base = static_cast<char*>(t.data_ptr());
  for (int64_t off = 0; off < t.numel(); off += kMaxChunk) {
    const int n = static_cast<int>(std::min(kMaxChunk, t.numel() - off));
    mpi_check(MPI_Bcast(base + off * t.element_size(), n, type, root, native_->comm), "MPI_Bcast");
  }
}

void MpiComm::barrier() { mpi_check(MPI_Barrier(native_->comm), "MPI_Barrier"); }

std::unique_ptr<Comm> MpiComm::split(int color, int key) { return split_mpi(color, key, label_ + "/split"); }

std::unique_ptr<MpiComm> MpiComm::split_mpi(int color, int key, const std::string& label) {
  auto n = std::make_unique<Native>();
  mpi_check(MPI_Comm_split(native_->comm, color < 0 ? MPI_UNDEFINED : color, key, &n->comm), "MPI_Comm_split");
  if (n->comm == MPI_COMM_NULL) return nullptr;
  n->owned = true;
  return std::unique_ptr<MpiComm>(new MpiComm(std::move(n), label));
}

std::unique_ptr<MpiComm> MpiComm::split_shared(const std::string& label) {
  auto n = std::make_unique<Native>();
  mpi_check(MPI_Comm_split_type(native_->comm, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &n->comm),
            "MPI_Comm_split_type");
  n->owned = true;
  return std::unique_ptr<MpiComm>(new MpiComm(std::move(n), label));
}

void MpiComm::broadcast_bytes(void* data, size_t n, int root) {
  auto* base = static_cast<char*>(data);
  for (size_t off = 0; off < n; off += static_cast<size_t>(kMaxChunk)) {
    const int len = static_cast<int>(std::min(static_cast<size_t>(kMaxChunk), n - off));
    mpi_check(MPI_Bcast(base + off, len, MPI_BYTE, root, native_->comm), "MPI_Bcast (bytes)");
  }
}

std::vector<std::string> MpiComm::all_gather_strings(const std::string& s) {
  const int len = to_int_count(static_cast<int64_t>(s.size()), name(), "all_gather_strings");
  std::vector<int> lens(size_), displs(size_);
  mpi_check(MPI_Allgather(&len, 1, MPI_INT, lens.data(), 1, MPI_INT, native_->comm), "MPI_Allgather (lengths)");
  int64_t total = 0;
  for (int r = 0; r < size_; ++r) {
    displs[r] = to_int_count(total, name(), "all_gather_strings");
    total += lens[r];
  }
  std::string buf(static_cast<size_t>(to_int_count(total, name(), "all_gather_strings")), '\0');
  mpi_check(MPI_Allgatherv(s.data(), len, MPI_CHAR, buf.data(), lens.data(), displs.data(), MPI_CHAR, native_->comm),
            "MPI_Allgatherv (strings)");
  std::vector<std::string> out(size_);
  for (int r = 0; r < size_; ++r) out[r] = buf.substr(static_cast<size_t>(displs[r]), static_cast<size_t>(lens[r]));
  return out;
}

}  // namespace secateur::parallel
