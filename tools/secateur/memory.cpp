// tools/secateur/memory.cpp — see memory.h.
#include "tools/secateur/memory.h"

#include <c10/core/ScalarType.h>
#include <fmt/format.h>

#include <iostream>
#include <utility>
#include <nlohmann/json.hpp>

#include "pruning/score.h"
#include "runtime/core/check.h"
#include "runtime/io/atomic_file.h"
#include "runtime/io/checkpoint.h"
#include "runtime/model/memory.h"
#include "tools/secateur/init.h"

namespace secateur::tools {

namespace {

// The rank with the largest peak, and the peaks summed over every rank of the DP x TP grid.
template <class Estimate, class Peak>
std::pair<const Estimate*, double> worst_rank(const std::vector<Estimate>& ranks, int dp, const Peak& peak) {
  const Estimate* worst = &ranks.front();
  double sum = 0;
  for (const Estimate& e : ranks) {
    sum += peak(e);
    if (peak(e) > peak(*worst)) worst = &e;
  }
  return {worst, sum * dp};
}

}  // namespace

int memory_report(const MemoryOptions& opt) {
  const model::ModelConfig c = shape_config(opt.shape);
  c.validate();
  nlohmann::json rows = nlohmann::json::array();
  constexpr double kGiB = 1024.0 * 1024 * 1024;
  std::string table = fmt::format("{}: {:.2f}B parameters, {}, {}, {} x {} calibration tokens, recompute {}\n"
                                  "| TP | weights / rank | load | score | apply | export | peak / rank | summed over ranks |\n"
                                  "|---|---|---|---|---|---|---|---|\n", opt.shape, c.n_params() / 1e9, opt.criterion, opt.dtype,
                                  opt.samples, opt.seq, opt.recompute);
  for (int tp : opt.tp) {
    model::MemoryInputs in;
    in.tp = tp;
    in.dp = opt.dp;
    in.dtype_bytes = static_cast<int64_t>(c10::elementSize(io::parse_dtype(opt.dtype)));
    in.samples = opt.samples;
    in.seq = opt.seq;
    in.recompute = opt.recompute;
    const pruning::CalibrationOptions cal = pruning::calibration_for(pruning::parse_criterion(opt.criterion));
    in.gradients = cal.first_order || cal.fisher || cal.mixed;
    in.fisher_buffers = cal.mixed ? 2 : cal.fisher ? 1 : 0;
    in.model_wide = pruning::scope_reads_model_wide(opt.scope);
    in.ratio = opt.ratio;
    in.base_bytes = opt.base_mib * (1 << 20);
    const auto ranks = model::estimate_prune_memory(c, in);
    const auto [worst, sum] = worst_rank(ranks, opt.dp, [](const model::MemoryEstimate& e) { return e.peak(); });
    rows.push_back({{"tp", tp}, {"dp", opt.dp}, {"rank", worst->rank}, {"weights_bytes", worst->weights},
                    {"activations_bytes", worst->activations}, {"head_bytes", worst->head},
                    {"gradient_bytes", worst->gradient}, {"load_bytes", worst->load}, {"score_bytes", worst->score},
                    {"apply_bytes", worst->apply}, {"export_bytes", worst->export_}, {"peak_bytes", worst->peak()},
                    {"peak_bytes_summed", sum}});
    table += fmt::format("| {} | {:.2f} | {:.2f} | {:.2f} | {:.2f} | {:.2f} | {:.2f} | {:.2f} |\n", tp,
                         worst->weights / kGiB, worst->load / kGiB, worst->score / kGiB, worst->apply / kGiB,
                         worst->export_ / kGiB, worst->peak() / kGiB, sum / kGiB);
  }
  nlohmann::json recover_rows = nlohmann::json::array();
  if (!opt.recover.empty()) {
    table += fmt::format("recovery, {} x {} tokens a micro-batch, LoRA rank {}:\n"
                         "| TP | method | weights / rank | optimiser state | gradients | activations | head | teacher | peak / rank "
                         "| summed over ranks |\n|---|---|---|---|---|---|---|---|---|---|\n", opt.micro_batch, opt.train_seq, opt.lora_rank);
  }
  for (int tp : opt.tp) {
    for (const std::string& method : opt.recover) {
      SECATEUR_CHECK(method == "lora" || method == "full" || method == "lora_kd" || method == "full_kd",
                     "[memory] --recover '{}' (allowed: lora, full, lora_kd, full_kd)", method);
      model::RecoveryInputs in;
      in.tp = tp;
      in.dtype_bytes = static_cast<int64_t>(c10::elementSize(io::parse_dtype(opt.dtype)));
      in.micro_batch = opt.micro_batch;
      in.seq = opt.train_seq;
      in.full = method.rfind("full", 0) == 0;
      in.distill = method.size() > 3 && method.compare(method.size() - 3, 3, "_kd") == 0;
      in.lora_rank = opt.lora_rank;
      in.base_bytes = opt.base_mib * (1 << 20);
      const auto ranks = model::estimate_recovery_memory(c, in);
      const auto [worst, sum] = worst_rank(ranks, opt.dp, [](const model::RecoveryEstimate& e) { return e.peak; });
      recover_rows.push_back({{"tp", tp}, {"dp", opt.dp}, {"method", method}, {"rank", worst->rank},
                              {"weights_bytes", worst->weights}, {"state_bytes", worst->state},
                              {"gradient_bytes", worst->gradients},
                              {"activations_bytes", worst->activations}, {"head_bytes", worst->head},
                              {"teacher_bytes", worst->teacher}, {"step_bytes", worst->step},
                              {"peak_bytes", worst->peak}, {"peak_bytes_summed", sum}});
      table += fmt::format("| {} | {} | {:.2f} | {:.2f} | {:.2f} | {:.2f} | {:.2f} | {:.2f} | {:.2f} | {:.2f} |\n", tp,
                           method, worst->weights / kGiB, worst->state / kGiB, worst->gradients / kGiB,
                           worst->activations / kGiB, worst->head / kGiB,
                           worst->teacher / kGiB, worst->peak / kGiB, sum / kGiB);
    }
  }
  table += "(GiB; the process baseline of " + fmt::format("{:.0f}", opt.base_mib) + " MiB per rank included)\n";
  std::cout << table;
  if (!opt.out.empty()) {
    const nlohmann::json j = {{"shape", opt.shape}, {"params", c.n_params()}, {"dtype", opt.dtype},
                              {"criterion", opt.criterion}, {"samples", opt.samples}, {"seq", opt.seq}, {"recompute", opt.recompute},
                              {"base_mib", opt.base_mib}, {"rows", rows}, {"micro_batch", opt.micro_batch},
                              {"train_seq", opt.train_seq}, {"lora_rank", opt.lora_rank}, {"recover_rows", recover_rows}};
    io::write_file_atomic(opt.out, j.dump(2) + "\n");
  }
  return 0;
}

}  // namespace secateur::tools
