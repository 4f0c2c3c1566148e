#include "tools/secateur/bench_forward.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <iostream>
#include <optional>
#include <nlohmann/json.hpp>
#include <vector>

#include "runtime/config/choices.h"
#include "runtime/core/check.h"
#include "runtime/eval/speed.h"
#include "runtime/io/atomic_file.h"
#include "runtime/io/checkpoint.h"
#include "tools/secateur/run.h"

namespace secateur::tools {

namespace {

// The median time of f over 5 runs, after one that warms up; each run ends when the device is done.
template <class F>
double median_seconds(const at::Device& device, const F& f) {
  std::vector<double> times;
  for (int i = 0; i < 6; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    eval::synchronize(device);
    if (i > 0) times.push_back(eval::seconds_since(t0));
  }
  return eval::median(times);
}

// Read bandwidth of the memory the weights are in (main memory with this process's threads, or the
// GPU's): summing a 1 GiB float32 buffer (far beyond any cache), after one pass that faults it in.
double memory_read_gbps(const at::Device& device) {
  at::NoGradGuard no_grad;
  const at::Tensor buf = at::ones({int64_t{1} << 28}, at::TensorOptions(device).dtype(at::kFloat));
  return static_cast<double>(buf.nbytes()) / median_seconds(device, [&] { (void)buf.sum().item<float>(); }) / 1e9;
}

// The matrix-product rate of this process in the model's dtype: the median of at::linear over
// [m, k] x [n, k]ᵀ, the model's own MLP product at the benchmark's batch × seq rows. No forward can
// do its products faster than this, so it bounds the prefill.
double linear_gflops(const at::Device& device, at::ScalarType dtype, int64_t m, int64_t k, int64_t n) {
  at::NoGradGuard no_grad;
  const auto o = at::TensorOptions(device).dtype(dtype);
  const at::Tensor x = at::randn({m, k}, o), w = at::randn({n, k}, o);
  return 2.0 * static_cast<double>(m * k * n) / median_seconds(device, [&] { (void)at::linear(x, w); }) / 1e9;
}

double peak_rss_mib() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_maxrss) / 1024.0;
}

}  // namespace

int bench_forward(const BenchForwardOptions& opt) {
  SECATEUR_CHECK(opt.batch > 0 && opt.seq > 1 && opt.iters > 0, "[bench] batch, seq and iters must be positive");
  SECATEUR_CHECK(opt.decode >= 0 && (opt.decode == 0 || !opt.backward),
                 "[bench] --decode measures inference: a count >= 0, not with --backward");
  config::check_choice(config::choices::device, "--device", opt.device);
  if (opt.threads > 0) at::set_num_threads(static_cast<int>(opt.threads));
  const at::Device device(opt.device == "cuda" ? at::kCUDA : at::kCPU);
  model::Decoder model = io::load_decoder(opt.model, device, io::parse_dtype(opt.dtype));
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
                                     at::TensorOptions(at::kLong)).remainder(model.config().vocab_size).to(device);
  // With --backward this is the floor of gradient scoring: measured under the same allocator setting.
  std::optional<ScopedMmapThreshold> own_mappings;
  if (opt.backward) own_mappings.emplace();
  step(ids);                                                            // warm-up
  eval::synchronize(device);
  std::vector<double> times;
  for (int64_t i = 0; i < opt.iters; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    step(ids);
    eval::synchronize(device);
    times.push_back(eval::seconds_since(t0));
  }
  const double s = eval::median(times);
  nlohmann::json j = {{"bench", opt.backward ? "forward_backward" : "forward"}, {"impl", "secateur"},
                      {"model", opt.model},       {"params", model.config().n_params()},
                      {"dtype", opt.dtype},       {"device", opt.device},
                      {"threads", at::get_num_threads()},
                      {"batch", opt.batch},       {"seq", opt.seq},
                      {"iters", opt.iters},       {"seconds", s},
                      {"tokens_per_second", static_cast<double>(opt.batch * opt.seq) / s}};
  if (opt.decode > 0) {                  // the way generation runs: prefill into a KV cache, greedy steps
    eval::SpeedOptions so;
    so.prompt_tokens = opt.seq;
    so.decode_tokens = opt.decode;
    so.iters = opt.iters;
    so.batch = opt.batch;
    const double step_s = eval::measure_speed(model, so).decode_ms_per_token / 1e3;
    // The limit a step cannot beat on this machine: every weight read once from memory. Weight bytes
    // count each storage once (a tied head is the embedding); the embedding's rows a step gathers
    // are negligible next to the head reading all of it.
    std::vector<const void*> seen;
    double weight_bytes = 0;
    for (at::Tensor* p : model.parameters()) {
      const void* data = p->storage().data();
      if (std::find(seen.begin(), seen.end(), data) != seen.end()) continue;
      seen.push_back(data);
      weight_bytes += static_cast<double>(p->nbytes());
    }
    j["decode_steps"] = opt.decode;
    j["decode_seconds"] = step_s * static_cast<double>(opt.decode);
    j["decode_steps_per_second"] = 1.0 / step_s;
    j["weight_bytes"] = weight_bytes;
  }
  j["peak_rss_mib"] = peak_rss_mib();                                   // before the probes' buffers
  if (opt.decode > 0) {
    const double gbps = memory_read_gbps(device);
    j["memory_read_gbps"] = gbps;
    j["decode_limit_steps_per_second"] = gbps * 1e9 / j["weight_bytes"].get<double>();
  }
  if (!opt.backward) {
    const model::ModelConfig& c = model.config();
    // Causal attention: a prefill's token sees (seq + 1) / 2 keys on average.
    const double flops = 2.0 * eval::macs_per_token(c, static_cast<double>(opt.seq + 1) / 2.0);
    const double gflops = linear_gflops(device, model.dtype(), opt.batch * opt.seq, c.hidden, c.d_ff.at(0));
    j["prefill_flops_per_token"] = flops;
    j["linear_gflops"] = gflops;
    j["prefill_limit_tokens_per_second"] = gflops * 1e9 / flops;
  }
  std::cout << j.dump() << std::endl;
  if (!opt.out.empty()) io::write_file_atomic(opt.out, j.dump(2) + "\n");
  return 0;
}

}  // namespace secateur::tools
