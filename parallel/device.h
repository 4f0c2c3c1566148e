// parallel/device.h — which accelerators and which NCCL this process sees.
// Built with SECATEUR_WITH_CUDA it asks the CUDA runtime and NCCL (the same libnccl.so.2
// LibTorch loads); otherwise it says the CUDA path was not built.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace secateur::parallel {

struct DeviceReport {
  bool cuda_built = false;
  std::string cuda_runtime;          // e.g. "13.0"; "" without CUDA
  std::string nccl;                  // e.g. "2.28.9"; "" without CUDA
  std::string cuda_error;            // why no device was found, if none
  struct Gpu {
    std::string name;
    uint64_t memory_bytes;
    int sm_major, sm_minor;
  };
  std::vector<Gpu> gpus;
};

DeviceReport describe_devices();
std::string format_report(const DeviceReport& r);   // a few lines for the start-up table

}  // namespace secateur::parallel
