// The prune stage: calibrate (calibration.*), score (prune.criterion), decide one removal that
// every rank checks, remove it physically from every TP shard, write the smaller model
// (prune.out) and decision.json, and continue with it.
#include <sys/resource.h>

#include "parallel/grid.h"
#include "pruning/decision.h"
#include "pruning/stats.h"
#include "runtime/core/log.h"
#include "runtime/io/atomic_file.h"
#include "tools/secateur/stages/stage.h"

namespace secateur::tools {

namespace {

struct PruneStage : Stage {
  pruning::PruneOptions opt;

  static std::unique_ptr<PruneStage> from_config(const config::Config& cfg) {
    auto s = std::make_unique<PruneStage>();
    pruning::PruneOptions& o = s->opt;
    o.criterion = pruning::parse_criterion(cfg.get<std::string>("prune.criterion"));
    o.aggregate = pruning::parse_aggregate(cfg.get<std::string>("prune.aggregate"));
    o.scope = cfg.get<std::string>("prune.scope");
    o.ratio = cfg.get<double>("prune.ratio");
    o.attention = cfg.get<std::string>("prune.attention");
    o.mlp = cfg.get<bool>("prune.mlp");
    o.keep_first = cfg.get<double>("prune.keep_first");
    o.keep_last = cfg.get<double>("prune.keep_last");
    o.keep_layers = cfg.get<std::vector<int64_t>>("prune.keep_layers");
    o.min_keep = cfg.get<double>("prune.min_keep");
    o.round_to = cfg.get<int64_t>("prune.round_to");
    o.seed = static_cast<uint64_t>(cfg.get<int64_t>("run.seed"));
    return s;
  }

  // A dry run with random scores: the same budget arithmetic, so a ratio that would empty a layer
  // is refused here, before the model is loaded or calibrated.
  void validate(Run& r) const override {
    r.check_writable("pruning");
    pruning::PruneOptions dry = opt;
    dry.criterion = pruning::Criterion::random;
    (void)pruning::decide(r.input_config(), pruning::Statistics{}, dry);
  }

  void run(Run& r) const override {
    const model::ModelConfig before = r.model().config();
    const at::Tensor samples = r.windows("calibration", opt.seed);
    rusage ru{};
    pruning::Statistics stats;
    {
      ScopedMmapThreshold own_mappings;
      Phase calibrate("calibrate");
      stats = pruning::collect_statistics(r.model(), samples, pruning::calibration_for(opt.criterion), &r.grid().dp());
      getrusage(RUSAGE_SELF, &ru);
    }
    const pruning::Decision d = [&] {
      Phase decide("decide");
      return pruning::decide(before, stats, opt);
    }();
    r.check_one_decision(d.hash);
    const nlohmann::json dj = d.to_json(opt);
    if (r.writer()) io::write_file_atomic(r.path("decision.json"), dj.dump(2) + "\n");
    const std::string out = r.out_dir("prune.out", "pruned");
    r.remove_groups(d.removed, out);
    spdlog::info("pruned with {} ({} scope): {:.1f}M -> {:.1f}M parameters, {:.2f}% removed (target {:.2f}%), "
                 "scoring {:.1f} s, decision {:016x} -> {}", pruning::criterion_name(opt.criterion), opt.scope,
                 d.params_before / 1e6, d.params_after / 1e6, 100 * d.achieved_ratio, 100 * opt.ratio, stats.seconds,
                 d.hash, out);
    r.record({{"stage", "prune"}, {"criterion", pruning::criterion_name(opt.criterion)}, {"scope", opt.scope},
              {"ratio_target", opt.ratio}, {"ratio_achieved", d.achieved_ratio}, {"params_before", d.params_before},
              {"params_after", d.params_after}, {"scoring_seconds", stats.seconds},
              {"peak_rss_mib_after_scoring", ru.ru_maxrss / 1024.0}, {"hash", dj["hash"]}, {"out", out}});
  }
};

}  // namespace

std::unique_ptr<Stage> prune_stage(const config::Config& cfg) { return PruneStage::from_config(cfg); }

}  // namespace secateur::tools
