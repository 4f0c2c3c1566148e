// tests/parallel/failure_main.cpp — a rank that throws brings the whole job down.
// Two ranks hold a tensor-parallel model (TP = 2) and run a forward pass together; rank 1 fails
// inside it (an exception from layer 2, after the TP all-reduces of layers 0 and 1), while rank 0
// goes on into layer 2's all-reduce and waits there. Rank 1 catches, calls abort_job, and
// MPI_Abort must end rank 0 too: the job exits non-zero, quickly, with rank 1's message on stderr
// (checked by expect_abort.cmake).
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <cstdio>

#include "parallel/comm.h"
#include "parallel/grid.h"
#include "runtime/core/check.h"
#include "runtime/model/decoder.h"

using namespace secateur;
using namespace secateur::parallel;

int main(int argc, char** argv) {
  std::unique_ptr<Grid> grid;
  try {
    grid = Grid::init(&argc, &argv, 2);
    SECATEUR_CHECK(grid->world_size() == 2, "[failure_main] run with 2 ranks, got {}", grid->world_size());
    auto config = model::ModelConfig::make(model::Family::llama, 64, 32, 4, 4, 2, 48);
    config.head_dim = 8;
    model::Decoder m = model::Decoder::with_random_weights(config, 1, &grid->tp());
    at::NoGradGuard no_grad;
    const at::Tensor ids = at::randint(64, {2, 16}, at::kLong);
    (void)m.logits(ids);                                           // a whole forward on both ranks
    if (grid->rank() == 1) {
      m.set_observer([](int64_t layer, model::Decoder::Tap tap, const at::Tensor&) {
        if (layer == 2 && tap == model::Decoder::Tap::attn_in) {
          SECATEUR_FAIL("[failure_main] simulated failure in rank 1's forward (layer 2)");
        }
      });
    }
    (void)m.logits(ids);                                           // rank 0 blocks in layer 2, rank 1 throws
    std::printf("rank %d: the second forward returned, which it must not\n", grid->rank());
  } catch (const std::exception& e) {
    abort_job(e.what());
  }
  grid->finalize();
  return 0;
}
