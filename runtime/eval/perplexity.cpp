#include "runtime/eval/perplexity.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <cmath>

#include "parallel/collectives.h"
#include "runtime/core/check.h"
#include "runtime/model/shard.h"
#include "runtime/core/progress.h"

namespace secateur::eval {

PerplexityResult perplexity(const model::Decoder& model, const std::vector<int32_t>& ids, int64_t window,
                            int64_t batch, parallel::Comm* dp) {
  SECATEUR_CHECK(window >= 2, "[eval/ppl] window must be at least 2 tokens, got {}", window);
  SECATEUR_CHECK(batch >= 1, "[eval/ppl] batch must be at least 1, got {}", batch);
  const int64_t windows = static_cast<int64_t>(ids.size()) / window;
  SECATEUR_CHECK(windows > 0, "[eval/ppl] the text has {} tokens, fewer than one window of {}", ids.size(), window);
  at::NoGradGuard no_grad;
  const at::Tensor all = at::tensor(std::vector<int64_t>(ids.begin(), ids.begin() + windows * window), at::kLong)
                             .view({windows, window})
                             .to(model.device());                  // [windows, window]
  PerplexityResult r;
  r.window = window;
  r.windows = windows;
  const parallel::Range mine = parallel::dp_share(windows, dp);
  Progress progress(fmt::format("ppl@{}", window), mine.size() * window);
  for (int64_t w0 = mine.begin; w0 < mine.end; w0 += batch) {
    const int64_t n = std::min(batch, mine.end - w0);
    const auto [nll, count] = model.nll(all.narrow(0, w0, n));
    r.nll += nll;
    r.predictions += count;
    progress.add(n * window);
  }
  progress.finish();
  if (parallel::size_of(dp) > 1) {
    at::Tensor sums = at::tensor({r.nll, static_cast<double>(r.predictions)}, at::kDouble);
    parallel::sum(dp, sums);
    r.nll = sums[0].item<double>();
    r.predictions = static_cast<int64_t>(sums[1].item<double>());
  }
  r.seconds = progress.seconds();
  r.ppl = std::exp(r.nll / static_cast<double>(r.predictions));
  r.tokens_per_second = r.seconds > 0 ? windows * window / r.seconds : 0.0;
  return r;
}

}  // namespace secateur::eval
