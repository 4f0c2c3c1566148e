// parallel/bench_comm.h — `secateur bench comm`: the bandwidth of the Comm collectives on the grid.
// For each size it times all_reduce and all_gather (float32) over the world, TP and DP groups
// (every group of a kind at once, as in training) and reports algbw and busbw with the
// nccl-tests formulas, so busbw compares directly with a link's bandwidth:
//   all_reduce: algbw = bytes / t, busbw = algbw * 2(n-1)/n
//   all_gather: algbw = bytes / t (bytes = the gathered result), busbw = algbw * (n-1)/n
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace secateur::parallel {

class Grid;

struct BenchCommOptions {
  std::vector<int64_t> sizes_bytes = {8, 64, 512, 4 << 10, 32 << 10, 256 << 10, 2 << 20, 16 << 20, 64 << 20, 256 << 20};
  int iters = 5;
  int tp = 0;          // the tp the grid was built with (checked when > 0)
  std::string out;     // JSON; "" = stdout only
};

// Collective over the grid's world; rank 0 prints the JSON (and writes it to opt.out).
int bench_comm(parallel::Grid& grid, const BenchCommOptions& opt);

}  // namespace secateur::parallel
