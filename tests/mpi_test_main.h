// tests/mpi_test_main.h — the main() of a GoogleTest binary that runs under mpirun: the grid comes
// up with the given TP size, only rank 0 prints, and the job fails if any rank's tests fail.
#pragma once
#include <gtest/gtest.h>

#include "parallel/grid.h"

namespace secateur::tests {

inline int run_on_grid(int argc, char** argv, int tp, parallel::Grid*& grid_out) {
  ::testing::InitGoogleTest(&argc, argv);
  auto grid = parallel::Grid::init(&argc, &argv, tp);
  grid_out = grid.get();
  if (grid->rank() != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  int failed = RUN_ALL_TESTS() != 0;
  failed = static_cast<int>(grid->world().all_reduce_int(failed, parallel::ReduceOp::max));
  grid->finalize();
  return failed;
}

}  // namespace secateur::tests
