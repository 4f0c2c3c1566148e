#include "tools/secateur/bench_train.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>

#include "parallel/grid.h"
#include "runtime/config/choices.h"
#include "runtime/core/check.h"
#include "runtime/core/log.h"
#include "runtime/eval/speed.h"
#include "runtime/io/atomic_file.h"
#include "runtime/io/checkpoint.h"
#include "runtime/train/lora.h"
#include "runtime/train/trainer.h"
#include "runtime/model/shapes.h"

namespace secateur::tools {

namespace {

model::Decoder load(const std::string& spec, at::Device device, at::ScalarType dtype, parallel::Comm* tp) {
  constexpr std::string_view kRandom = "random:";
  if (spec.rfind(kRandom, 0) == 0) {
    model::Decoder m = model::Decoder::with_random_weights(model::named_shape(spec.substr(kRandom.size())), 0, tp);
    m.to(device, dtype);
    return m;
  }
  return io::load_decoder(spec, device, dtype, tp);
}

// FLOP/s of a square matrix product of this dtype on this device: the best of 5 after a warm-up.
double matmul_peak(int64_t n, at::Device device, at::ScalarType dtype) {
  const auto o = at::TensorOptions(device).dtype(dtype);
  const at::Tensor a = at::randn({n, n}, o), b = at::randn({n, n}, o);
  double best = 0;
  for (int i = 0; i < 6; ++i) {
    eval::synchronize(device);
    const auto t0 = std::chrono::steady_clock::now();
    const at::Tensor c = at::mm(a, b);
    eval::synchronize(device);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (i > 0) best = std::max(best, 2.0 * static_cast<double>(n * n * n) / s);
  }
  return best;
}

}  // namespace

int bench_train(parallel::Grid& grid, const BenchTrainOptions& opt) {
  SECATEUR_CHECK(opt.steps > 0 && opt.batch > 0 && opt.micro_batch > 0 && opt.seq > 1, "[bench] --steps, --batch, "
                 "--micro-batch must be > 0 and --seq > 1");
  SECATEUR_CHECK(opt.tp <= 0 || opt.tp == grid.tp_size(), "[bench] --tp {} but the grid has tp {}", opt.tp,
                 grid.tp_size());
  if (opt.threads > 0) at::set_num_threads(static_cast<int>(opt.threads));
  config::check_choice(config::choices::device, "--device", opt.device);
  const at::Device device = grid.device_type() == c10::DeviceType::CUDA
                                ? at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(grid.device_index()))
                                : at::Device(at::kCPU);
  const at::ScalarType dtype = io::parse_dtype(opt.dtype);
  // The peak is measured before and after the methods; the higher one counts (a shared machine
  // rarely gives its best twice in a row, and a low peak would flatter the MFU).
  const double peak_before = matmul_peak(opt.peak_n, device, dtype);
  nlohmann::json results = nlohmann::json::array();
  train::LoraOptions lora;                              // LLM-Pruner's r 8, alpha 16, all seven projections
  for (const std::string& method : opt.methods) {
    SECATEUR_CHECK(method == "lora" || method == "lora_kd" || method == "full" || method == "full_kd",
                   "[bench] method '{}' (allowed: lora, lora_kd, full, full_kd)", method);
    model::Decoder m = load(opt.model, device, dtype, &grid.tp());
    std::optional<model::Decoder> teacher;
    const bool kd = method == "lora_kd" || method == "full_kd", is_lora = method.rfind("lora", 0) == 0;
    if (kd) teacher.emplace(load(opt.model, device, dtype, &grid.tp()));
    const model::ModelConfig& c = m.config();
    const auto params = is_lora ? train::add_lora(m, lora) : train::all_weights(m);
    train::TrainOptions o;
    o.steps = opt.steps + 1;
    o.batch = opt.batch;
    o.micro_batch = opt.micro_batch;
    o.seq_len = opt.seq;
    o.lr = 1e-5;
    o.teacher = kd ? &*teacher : nullptr;
    at::manual_seed(1);
    const at::Tensor ids = at::randint(c.vocab_size, {opt.batch * opt.seq}, at::kInt);
    const std::vector<int32_t> tokens(ids.data_ptr<int32_t>(), ids.data_ptr<int32_t>() + ids.numel());
    std::vector<double> step_seconds;
    const double tokens_per_step = static_cast<double>(opt.batch * (opt.seq - 1));
    (void)train::train(m, params, tokens, o, {&grid.dp(), &grid.tp(), &grid.world()}, [&](const nlohmann::json& j) {
      step_seconds.push_back(tokens_per_step / j["tokens_per_second"].get<double>());
    });
    step_seconds.erase(step_seconds.begin());           // the warm-up step
    const double secs = eval::median(step_seconds);
    const double fwd = 2.0 * eval::macs_per_token(c, (opt.seq + 1) / 2);
    // An adapter costs as many MACs per token as it has parameters: r · (in + out).
    double flops = is_lora ? 2.0 * fwd + 6.0 * static_cast<double>(train::lora_parameter_count(c, lora)) : 3.0 * fwd;
    if (kd) flops += 2.0 * eval::macs_per_token(teacher->config(), (opt.seq + 1) / 2);
    // Per rank: the global batch's tokens over the world's ranks (the TP group shares its sequences,
    // and a rank does 1/tp of their FLOPs).
    const double world_tps = tokens_per_step / secs;
    const double rank_flops = flops * world_tps / static_cast<double>(grid.world_size());
    const int64_t trainable = is_lora ? train::lora_parameter_count(c, lora) : c.n_params();
    results.push_back({{"method", method}, {"trainable_params", trainable}, {"step_seconds", secs},
                       {"tokens_per_second", world_tps}, {"model_flops_per_token", flops},
                       {"flops_per_second_per_rank", rank_flops}});
    spdlog::info("[bench] {}: {:.3f} s/step, {:.0f} tok/s, {:.2f} GFLOP/token, {:.1f} GFLOP/s per rank", method, secs,
                 world_tps, flops / 1e9, rank_flops / 1e9);
  }
  const double peak = std::max(peak_before, matmul_peak(opt.peak_n, device, dtype));
  for (auto& r : results) {
    r["mfu"] = r["flops_per_second_per_rank"].get<double>() / peak;
    spdlog::info("[bench] {}: MFU {:.1f}% of the measured peak {:.1f} GFLOP/s ({} {}x{} matmul, {} threads)",
                 r["method"].get<std::string>(), 100 * r["mfu"].get<double>(), peak / 1e9, opt.dtype, opt.peak_n,
                 opt.peak_n, at::get_num_threads());
  }
  const nlohmann::json j = {{"bench", "train"}, {"model", opt.model}, {"dtype", opt.dtype}, {"device", opt.device},
                            {"dp", grid.dp_size()}, {"tp", grid.tp_size()}, {"threads", at::get_num_threads()},
                            {"batch", opt.batch}, {"micro_batch", opt.micro_batch}, {"seq", opt.seq},
                            {"steps", opt.steps}, {"peak_flops_per_second", peak},
                            {"peak", fmt::format("{} {}x{} matmul", opt.dtype, opt.peak_n, opt.peak_n)},
                            {"lora_rank", lora.rank}, {"results", results}};
  if (grid.rank() == 0) {
    std::cout << j.dump() << std::endl;
    if (!opt.out.empty()) io::write_file_atomic(opt.out, j.dump(2) + "\n");
  }
  return 0;
}

}  // namespace secateur::tools
