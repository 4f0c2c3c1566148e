#include "tools/secateur/bench_forward.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>
#include <sys/resource.h>

#include <chrono>
#include <optional>
#include <iostream>
#include <nlohmann/json.hpp>

#include "runtime/core/check.h"
#include "runtime/io/atomic_file.h"
#include "runtime/io/checkpoint.h"
#include "tools/secateur/run.h"

namespace secateur::tools {

int bench_forward(const BenchForwardOptions& opt) {
  SECATEUR_CHECK(opt.batch > 0 && opt.seq > 1 && opt.iters > 0, "[bench] batch, seq and iters must be positive");
  if (opt.threads > 0) at::set_num_threads(static_cast<int>(opt.threads));
  model::Decoder model = io::load_decoder(opt.model, at::kCPU, io::parse_dtype(opt.dtype));
  if (opt.backward) {
    for (at::Tensor* p : model.parameters()) p->set_requires_grad(true);
  }
  const auto step = [&](const at::Tensor& ids) {
    if (!opt.backward) {
      at::NoGradGuard no_grad;
      (void)model.logits(ids);
      return;
    }
    model.loss_sum(ids).backward();
    for (at::Tensor* p : model.parameters()) p->mutable_grad().reset();
  };
  // Fixed pseudo-random ids: throughput does not depend on which tokens they are.
  const at::Tensor ids = at::randint(model.config().vocab_size, {opt.batch, opt.seq},
                                     at::TensorOptions(at::kLong)).remainder(model.config().vocab_size);
  // With --backward this is the floor of gradient scoring: measured under the same allocator setting.
  std::optional<ScopedMmapThreshold> own_mappings;
  if (opt.backward) own_mappings.emplace();
  step(ids);                                                            // warm-up
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < opt.iters; ++i) step(ids);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  const double tokens = static_cast<double>(opt.batch * opt.seq * opt.iters);
  const nlohmann::json j = {{"bench", opt.backward ? "forward_backward" : "forward"}, {"impl", "secateur"},
                            {"model", opt.model},       {"params", model.config().n_params()},
                            {"dtype", opt.dtype},       {"threads", at::get_num_threads()},
                            {"batch", opt.batch},       {"seq", opt.seq},
                            {"iters", opt.iters},       {"seconds", s},
                            {"tokens_per_second", tokens / s}, {"peak_rss_mib", ru.ru_maxrss / 1024.0}};
  std::cout << j.dump() << std::endl;
  if (!opt.out.empty()) io::write_file_atomic(opt.out, j.dump(2) + "\n");
  return 0;
}

}  // namespace secateur::tools
