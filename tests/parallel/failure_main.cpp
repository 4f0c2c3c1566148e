// tests/parallel/failure_main.cpp — a rank that throws brings the whole job down.
// Two ranks do a first all-reduce together; then rank 1 fails in its "work" while rank 0 is
// already waiting in the next all-reduce. Rank 1 catches, calls abort_job, and MPI_Abort must
// end rank 0 too: the job exits non-zero, quickly, with rank 1's message on stderr
// (checked by expect_abort.cmake).
#include <ATen/ATen.h>

#include <chrono>
#include <cstdio>
#include <thread>

#include "parallel/comm.h"
#include "parallel/grid.h"
#include "runtime/core/check.h"

using namespace secateur;
using namespace secateur::parallel;

int main(int argc, char** argv) {
  std::unique_ptr<Grid> grid;
  try {
    grid = Grid::init(&argc, &argv, 1);
    SECATEUR_CHECK(grid->world_size() == 2, "[failure_main] run with 2 ranks, got {}", grid->world_size());
    at::Tensor t = at::ones({1024});
    grid->world().all_reduce(t, ReduceOp::sum);   // succeeds on both ranks
    SECATEUR_CHECK(t[0].item<float>() == 2.0f, "[failure_main] first all-reduce gave {}", t[0].item<float>());
    if (grid->rank() == 1) {
      std::this_thread::sleep_for(std::chrono::milliseconds(300));   // rank 0 is in the collective by now
      SECATEUR_FAIL("[failure_main] simulated failure in rank 1's work (step 2)");
    }
    grid->world().all_reduce(t, ReduceOp::sum);   // rank 0 blocks here, rank 1 never comes
    std::printf("rank %d: second all-reduce returned, which it must not\n", grid->rank());
  } catch (const std::exception& e) {
    abort_job(e.what());
  }
  grid->finalize();
  return 0;
}
