#include "runtime/eval/generate.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <chrono>
#include <numeric>
#include <random>

#include "runtime/core/check.h"

namespace secateur::eval {

namespace {

using clock_type = std::chrono::steady_clock;

double since(clock_type::time_point t) { return std::chrono::duration<double>(clock_type::now() - t).count(); }

// Nucleus sampling on the host: the smallest set of tokens whose probability reaches top_p.
int32_t sample_top_p(const at::Tensor& logits, double top_p, double temperature, std::mt19937_64& rng) {
  const at::Tensor probs = at::softmax(logits.to(at::kDouble) / std::max(temperature, 1e-6), -1).cpu().contiguous();
  const double* p = probs.const_data_ptr<double>();
  std::vector<int32_t> order(probs.numel());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return p[a] > p[b] || (p[a] == p[b] && a < b); });
  double mass = 0.0;
  size_t keep = 0;
  while (keep < order.size() && (keep == 0 || mass < top_p)) mass += p[order[keep++]];
  std::uniform_real_distribution<double> u(0.0, mass);
  double r = u(rng);
  for (size_t i = 0; i < keep; ++i) {
    r -= p[order[i]];
    if (r <= 0) return order[i];
  }
  return order[keep - 1];
}

}  // namespace

GenerateResult generate(const model::Decoder& model, const std::vector<int32_t>& prompt, const GenerateOptions& opt) {
  SECATEUR_CHECK(!prompt.empty(), "[eval/generate] the prompt has no tokens");
  at::NoGradGuard no_grad;
  std::mt19937_64 rng(opt.seed);
  model::KVCache cache;
  GenerateResult r;
  auto t0 = clock_type::now();
  at::Tensor ids = at::tensor(std::vector<int64_t>(prompt.begin(), prompt.end()), at::kLong)
                       .view({1, -1})
                       .to(model.device());                               // [1, T]
  at::Tensor last = model.logits(ids, &cache).select(1, -1).squeeze(0);    // [V]
  r.prefill_seconds = since(t0);
  t0 = clock_type::now();
  for (int64_t i = 0; i < opt.max_new_tokens; ++i) {
    const int32_t next = opt.greedy ? static_cast<int32_t>(last.argmax().item<int64_t>())
                                    : sample_top_p(last, opt.top_p, opt.temperature, rng);
    r.ids.push_back(next);
    if (next == opt.stop_id || i + 1 == opt.max_new_tokens) break;
    const at::Tensor step = at::full({1, 1}, next, at::TensorOptions(at::kLong).device(model.device()));
    last = model.logits(step, &cache).select(1, -1).squeeze(0);
  }
  r.decode_seconds = since(t0);
  r.decode_tokens_per_second = r.decode_seconds > 0 ? r.ids.size() / r.decode_seconds : 0.0;
  return r;
}

}  // namespace secateur::eval
