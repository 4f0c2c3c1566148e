// runtime/eval/perplexity.h — perplexity over non-overlapping windows.
// Protocol: the token stream is cut into floor(N / window) windows of `window` tokens (a
// shorter tail is dropped); within each window every token after the first is predicted
// from the tokens before it in that window; ppl = exp(sum of NLL / number of predictions).
// With equal windows this is LLM-Pruner's exp(mean of per-window mean losses).
#pragma once
#include <cstdint>
#include <vector>

#include "runtime/model/decoder.h"

namespace secateur::parallel {
class Comm;
}

namespace secateur::eval {

struct PerplexityResult {
  int64_t window = 0;
  int64_t windows = 0;
  int64_t predictions = 0;      // windows * (window - 1)
  double nll = 0.0;             // summed, nats
  double ppl = 0.0;
  double seconds = 0.0;
  double tokens_per_second = 0.0;
};

// With a DP comm, each DP rank scores its contiguous share of the windows and the sums are
// all-reduced, so every rank returns the same result.
PerplexityResult perplexity(const model::Decoder& model, const std::vector<int32_t>& ids, int64_t window,
                            int64_t batch, parallel::Comm* dp = nullptr);

}  // namespace secateur::eval
