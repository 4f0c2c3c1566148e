#include "parallel/bench_comm.h"

#include <ATen/ATen.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <iostream>
#include <nlohmann/json.hpp>

#include "parallel/comm.h"
#include "parallel/grid.h"
#include "runtime/core/check.h"
#include "runtime/io/atomic_file.h"

namespace secateur::parallel {

namespace {


// Seconds per op on the slowest rank: barrier over the world, run, wait for the device.
template <class Op>
double time_op(Grid& grid, Comm& comm, int iters, Op&& op) {
  op();   // warm-up: connections, buffers
  comm.synchronize();
  grid.world().barrier();
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < iters; ++i) op();
  comm.synchronize();
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / iters;
  return grid.world().all_reduce_scalar(s, ReduceOp::max);
}

}  // namespace

int bench_comm(Grid& grid, const BenchCommOptions& opt) {
  SECATEUR_CHECK(opt.iters > 0, "[bench/comm] iters must be positive, got {}", opt.iters);
  SECATEUR_CHECK(!opt.sizes_bytes.empty(), "[bench/comm] no sizes given");
  for (int64_t b : opt.sizes_bytes) SECATEUR_CHECK(b >= 4, "[bench/comm] size {} bytes is below one float", b);
  SECATEUR_CHECK(opt.tp <= 0 || opt.tp == grid.tp_size(), "[bench/comm] tp={} but the grid was built with tp={}",
                 opt.tp, grid.tp_size());
  const at::TensorOptions f32 = grid.device_type() == c10::DeviceType::CUDA
                                    ? at::TensorOptions(at::kFloat).device(at::kCUDA, grid.device_index())
                                    : at::TensorOptions(at::kFloat);
  struct Group { const char* name; Comm& comm; };
  const Group groups[] = {{"world", grid.world()}, {"tp", grid.tp()}, {"dp", grid.dp()}};

  nlohmann::json results = nlohmann::json::array(), skipped = nlohmann::json::array();
  for (const Group& g : groups) {
    const int n = g.comm.size();
    if (n == 1) {
      skipped.push_back(fmt::format("{} (size 1)", g.name));
      continue;
    }
    for (int64_t want : opt.sizes_bytes) {
      // all_reduce: the whole tensor is `bytes`; zeros stay zeros under repeated sums.
      const int64_t ar_elems = std::max<int64_t>(1, want / 4);
      at::Tensor buf = at::zeros({ar_elems}, f32);
      const double ar_s = time_op(grid, g.comm, opt.iters, [&] { g.comm.all_reduce(buf, ReduceOp::sum); });
      // all_gather: `bytes` is the gathered result, n shards of bytes / n (nccl-tests' convention).
      const int64_t ag_elems = std::max<int64_t>(1, want / 4 / n);
      const at::Tensor shard = at::zeros({ag_elems}, f32);
      const double ag_s = time_op(grid, g.comm, opt.iters, [&] { (void)g.comm.all_gather(shard); });

      for (const auto& [op, bytes, s, factor] :
           {std::tuple<const char*, int64_t, double, double>{"all_reduce", ar_elems * 4, ar_s, 2.0 * (n - 1) / n},
            std::tuple<const char*, int64_t, double, double>{"all_gather", ag_elems * 4 * n, ag_s, double(n - 1) / n}}) {
        const double algbw = bytes / s / 1e9;
        results.push_back({{"op", op}, {"group", g.name}, {"ranks", n}, {"bytes", bytes}, {"time_us", s * 1e6},
                           {"algbw_gbps", algbw}, {"busbw_gbps", algbw * factor}});
        spdlog::info("[bench/comm] {:<10} {:<5} n={} {:>10} B  {:9.1f} us  algbw {:7.3f} GB/s  busbw {:7.3f} GB/s", op,
                     g.name, n, bytes, s * 1e6, algbw, algbw * factor);
      }
    }
  }

  if (grid.rank() == 0) {
    const nlohmann::json j = {{"bench", "comm"},         {"backend", grid.world().name()},
                              {"world", grid.world_size()}, {"tp", grid.tp_size()},
                              {"dp", grid.dp_size()},     {"device", grid.device_name()},
                              {"dtype", "float32"},       {"iters", opt.iters},
                              {"timing", "mean per op after a world barrier, max over ranks"},
                              {"results", results},       {"skipped", skipped}};
    std::cout << j.dump() << std::endl;
    if (!opt.out.empty()) io::write_file_atomic(opt.out, j.dump(2) + "\n");
  }
  return 0;
}

}  // namespace secateur::parallel
