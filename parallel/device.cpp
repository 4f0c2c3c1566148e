#include "parallel/device.h"

#include <fmt/format.h>

#ifdef SECATEUR_WITH_CUDA
#include <cuda_runtime_api.h>
#include <nccl.h>
#endif

namespace secateur::parallel {

DeviceReport describe_devices() {
  DeviceReport r;
#ifdef SECATEUR_WITH_CUDA
  r.cuda_built = true;
  int v = 0;
  if (cudaRuntimeGetVersion(&v) == cudaSuccess) r.cuda_runtime = fmt::format("{}.{}", v / 1000, (v % 1000) / 10);
  if (ncclGetVersion(&v) == ncclSuccess) r.nccl = fmt::format("{}.{}.{}", v / 10000, (v % 10000) / 100, v % 100);
  int n = 0;
  const cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    r.cuda_error = cudaGetErrorString(err);
    cudaGetLastError();   // clear the sticky error so later CUDA calls start clean
    n = 0;
  }
  for (int i = 0; i < n; ++i) {
    cudaDeviceProp p{};
    if (cudaGetDeviceProperties(&p, i) != cudaSuccess) continue;
    r.gpus.push_back({p.name, static_cast<uint64_t>(p.totalGlobalMem), p.major, p.minor});
  }
#endif
  return r;
}

std::string format_report(const DeviceReport& r) {
  if (!r.cuda_built) return "CUDA path: not built (CPU only)";
  std::string s = fmt::format("CUDA runtime {} | NCCL {} | {} GPU(s)", r.cuda_runtime, r.nccl, r.gpus.size());
  if (r.gpus.empty() && !r.cuda_error.empty()) s += fmt::format(" ({})", r.cuda_error);
  for (size_t i = 0; i < r.gpus.size(); ++i) {
    const auto& g = r.gpus[i];
    s += fmt::format("\n  gpu {}: {} sm_{}{} {:.1f} GiB", i, g.name, g.sm_major, g.sm_minor,
                     g.memory_bytes / double(1ull << 30));
  }
  return s;
}

}  // namespace secateur::parallel
