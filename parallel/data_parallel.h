// parallel/data_parallel.h — data parallelism: each DP rank takes its share of the batches
// (parallel::dp_share), and gradients are summed (or averaged) over the DP group in buckets of
// flattened tensors, so one collective moves many small gradients.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "parallel/comm.h"

namespace secateur::parallel {

// All-reduces the .grad() of every parameter that has one, bucketed by dtype and device into
// flat buffers of at most bucket_bytes (a larger tensor goes alone). op: sum or avg.
void all_reduce_gradients(const std::vector<at::Tensor*>& params, Comm& dp, ReduceOp op,
                          int64_t bucket_bytes = 32ll << 20);

}  // namespace secateur::parallel
