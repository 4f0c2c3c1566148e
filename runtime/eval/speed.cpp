#include "runtime/eval/speed.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <chrono>
#include <vector>

#include "runtime/core/check.h"
#include "runtime/model/spec.h"

namespace secateur::eval {

double median(std::vector<double> v) {
  SECATEUR_CHECK(!v.empty(), "[eval] the median of no measurements");
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

void synchronize(const at::Device& device) {
  if (device.is_cuda()) (void)at::zeros({1}, at::TensorOptions(device)).cpu();
}

double macs_per_token(const model::ModelConfig& c, double context) {
  double macs = static_cast<double>(c.hidden) * static_cast<double>(c.vocab_size);                // LM head
  for (const model::Weight& w : model::weights(c)) {                // every projection's matmul
    if (!w.spec->proj || w.spec->bias) continue;
    macs += static_cast<double>(w.shape[0]) * static_cast<double>(w.shape[1]);
  }
  for (int64_t l = 0; l < c.n_layers(); ++l) {                      // q·k and p·v over the context
    macs += 2.0 * static_cast<double>(model::extent(c, model::Dim::q, l)) * context;
  }
  return macs;
}

SpeedResult measure_speed(const model::Decoder& m, const SpeedOptions& opt) {
  SECATEUR_CHECK(opt.prompt_tokens > 0 && opt.decode_tokens > 0 && opt.iters > 0 && opt.batch > 0,
                 "[config] 'eval.speed_prompt', 'eval.speed_decode' must be > 0");
  at::NoGradGuard no_grad;
  at::manual_seed(opt.seed);
  const at::Tensor prompt = at::randint(m.config().vocab_size, {opt.batch, opt.prompt_tokens}, at::kLong).to(m.device());
  std::vector<double> prefill, decode;
  for (int64_t it = 0; it <= opt.iters; ++it) {                  // run 0 warms up
    model::KVCache cache;
    auto t0 = std::chrono::steady_clock::now();
    at::Tensor last = m.logits(prompt, &cache).select(1, -1);    // [B, V]
    (void)last.argmax().item<int64_t>();                          // waits for the device too
    const double p = seconds_since(t0);
    t0 = std::chrono::steady_clock::now();
    for (int64_t i = 0; i < opt.decode_tokens; ++i) {
      const at::Tensor next = last.argmax(-1, true);              // [B, 1]
      last = m.logits(next, &cache).select(1, -1);
    }
    (void)last.argmax().item<int64_t>();
    const double d = seconds_since(t0);
    if (it == 0) continue;
    prefill.push_back(p);
    decode.push_back(d);
  }
  SpeedResult r;
  const double p = median(prefill), d = median(decode);
  r.prefill_ms = 1e3 * p;
  r.prefill_tokens_per_second = static_cast<double>(opt.batch * opt.prompt_tokens) / p;
  r.decode_ms_per_token = 1e3 * d / static_cast<double>(opt.decode_tokens);
  r.decode_tokens_per_second = static_cast<double>(opt.decode_tokens) / d;
  r.params = m.config().n_params();
  r.macs_per_token = macs_per_token(m.config(), opt.prompt_tokens);
  return r;
}

}  // namespace secateur::eval
