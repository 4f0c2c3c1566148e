// The report stage: redundancy of the current model's MLP neurons (report.*, pruning/redundancy.h)
// — sensitivity, uniqueness, reconstructability — into <run.dir>/redundancy.json.
#include <chrono>

#include "parallel/grid.h"
#include "pruning/redundancy.h"
#include "runtime/core/log.h"
#include "runtime/io/atomic_file.h"
#include "tools/secateur/stages/stage.h"

namespace secateur::tools {

namespace {

struct ReportStage : Stage {
  pruning::RedundancyOptions opt;
  std::string text;
  uint64_t seed = 0;

  static std::unique_ptr<ReportStage> from_config(const config::Config& cfg) {
    auto s = std::make_unique<ReportStage>();
    s->opt.micro_batch = cfg.get<int64_t>("report.micro_batch");
    s->opt.ridge = cfg.get<double>("report.ridge");
    s->text = cfg.get<std::string>("report.text");
    s->seed = static_cast<uint64_t>(cfg.get<int64_t>("run.seed"));
    return s;
  }

  void run(Run& r) const override {
    model::Decoder& m = r.model();
    const at::Tensor samples = r.windows("report", seed);
    const auto t0 = std::chrono::steady_clock::now();
    nlohmann::json rep = [&] {
      Phase report("redundancy");
      return pruning::redundancy_report(m, samples, opt, &r.grid().dp());
    }();
    const std::string label = r.model_path();
    const int pass = r.pass("report");                           // earlier reports of this run
    rep["model"] = label;
    rep["text"] = text;
    rep["seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const std::string file = r.path(pass ? fmt::format("redundancy-{}.json", pass + 1) : "redundancy.json");
    if (r.writer()) io::write_file_atomic(file, rep.dump(2) + "\n");
    spdlog::info("redundancy of {} ({:.0f} tokens of {}): unique {:.1f}%, R2 > 0.9 {:.1f}%, sensitivity sum {:.4g}, "
                 "{:.1f} s -> {}", label, rep["tokens"].get<double>(), text, 100 * rep["unique"].get<double>(),
                 100 * rep["r2_above_0.9"].get<double>(), rep["sensitivity_sum"].get<double>(),
                 rep["seconds"].get<double>(), file);
    r.record({{"stage", "report"}, {"model", label}, {"unique", rep["unique"]}, {"r2_above_0.9", rep["r2_above_0.9"]},
              {"sensitivity_sum", rep["sensitivity_sum"]}, {"seconds", rep["seconds"]}, {"out", file}});
  }
};

}  // namespace

std::unique_ptr<Stage> report_stage(const config::Config& cfg) { return ReportStage::from_config(cfg); }

}  // namespace secateur::tools
