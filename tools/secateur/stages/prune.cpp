// The prune stage: calibrate (calibration.*; or reuse prune.scores), score (prune.criterion), decide
// one removal that every rank checks, compensate what it removes (prune.compensation), remove it
// physically from every TP shard, write the smaller
// model (prune.out) and decision.json, and continue with it. The score stage: calibrate once and
// write the statistics (score.out) for prunes to reuse.
#include <sys/resource.h>

#include <map>

#include "parallel/grid.h"
#include "pruning/decision.h"
#include "pruning/depth.h"
#include "pruning/stats.h"
#include "runtime/core/hash.h"
#include "runtime/core/log.h"
#include "runtime/io/atomic_file.h"
#include "runtime/io/checkpoint.h"
#include "tools/secateur/stages/stage.h"

namespace secateur::tools {

namespace {

std::string hex(uint64_t v) { return fmt::format("{:016x}", v); }

// What a statistics file is checked against: the checkpoint it was computed on, and the
// calibration (the windows' token ids and the compute dtype).
struct Fingerprints {
  std::string model, calibration;
};

Fingerprints fingerprints(Run& r, const at::Tensor& samples) {
  const at::Tensor ids = samples.to(at::kLong).contiguous();
  Fnv1a c;
  c.integer(ids.size(0));
  c.integer(ids.size(1));
  c.bytes(ids.data_ptr(), static_cast<size_t>(ids.numel()) * sizeof(int64_t));
  c.text(r.cfg().get<std::string>("model.dtype"));
  return {hex(io::checkpoint_fingerprint(r.model_path())), hex(c.value())};
}

// prune.* and run.seed.
pruning::PruneOptions prune_options(const config::Config& cfg) {
  pruning::PruneOptions o;
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
  o.compensation = pruning::parse_compensation(cfg.get<std::string>("prune.compensation"));
  o.ridge = cfg.get<double>("prune.ridge");
  o.seed = static_cast<uint64_t>(cfg.get<int64_t>("run.seed"));
  return o;
}

bool model_wide(const pruning::PruneOptions& opt) { return pruning::scope_reads_model_wide(opt.scope); }

// What the criterion and the compensation need, collected as calibration.recompute says.
pruning::CalibrationOptions calibration_options(const config::Config& cfg, const pruning::PruneOptions& opt) {
  pruning::CalibrationOptions c = pruning::calibration_for(opt.criterion, opt.compensation);
  c.recompute = cfg.get<bool>("calibration.recompute");
  c.model_wide = model_wide(opt);
  return c;
}

std::string statistics_needed(const pruning::PruneOptions& opt) {
  return pruning::calibration_needs(opt.criterion, opt.compensation, model_wide(opt));
}

// The statistics of the criterion (and of the compensation); for sleb, its search at prune.ratio.
pruning::Statistics calibrate(Run& r, const at::Tensor& samples, const pruning::PruneOptions& opt, rusage& ru) {
  ScopedMmapThreshold own_mappings;
  Phase phase("calibrate");
  pruning::Statistics stats =
      opt.criterion == pruning::Criterion::sleb
          ? pruning::sleb_search(r.model(), samples, opt, &r.grid().dp())
          : pruning::collect_statistics(r.model(), samples, calibration_options(r.cfg(), opt), &r.grid().dp());
  getrusage(RUSAGE_SELF, &ru);
  return stats;
}

// prune.scores: the statistics of `path`, refused (one line naming the file and what differs) when
// they were computed on another checkpoint or calibration, or lack what the criterion needs.
pruning::Statistics reuse(Run& r, const std::string& path, const at::Tensor& samples, const pruning::PruneOptions& opt,
                          std::map<std::string, std::string>& meta) {
  const pruning::Criterion criterion = opt.criterion;
  const pruning::Compensation compensate = opt.compensation;
  Phase phase("load");
  pruning::Statistics stats = pruning::load_statistics(path, &meta);
  const Fingerprints now = fingerprints(r, samples);
  const auto get = [&](const char* key) { return meta.count(key) ? meta.at(key) : std::string("?"); };
  SECATEUR_CHECK(get("model") == now.model, "[config] prune.scores: {} was computed on {} (fingerprint {}), not on "
                 "the model being pruned, {} ({})", path, get("model_path"), get("model"), r.model_path(), now.model);
  SECATEUR_CHECK(get("calibration") == now.calibration, "[config] prune.scores: {} was computed on other calibration "
                 "windows or dtype (fingerprint {}; calibration.* and model.dtype now give {})", path,
                 get("calibration"), now.calibration);
  const std::string needed = statistics_needed(opt);
  SECATEUR_CHECK(get("statistics") == needed, "[config] prune.scores: {} holds the statistics of {} ({}); "
                 "prune.criterion {}{} needs {}", path, get("criterion"), get("statistics"),
                 pruning::criterion_name(criterion),
                 compensate == pruning::Compensation::none
                     ? ""
                     : fmt::format(" with prune.compensation {}", pruning::compensation_name(compensate)),
                 needed);
  return stats;
}

// `secateur score`: the calibration statistics of prune.criterion, written once for many prunes
// (prune.scores) with the fingerprints of the model and of the calibration.
struct ScoreStage : Stage {
  pruning::PruneOptions opt;             // the criterion and compensation; sleb's search: the budget too

  static std::unique_ptr<ScoreStage> from_config(const config::Config& cfg) {
    auto s = std::make_unique<ScoreStage>();
    s->opt = prune_options(cfg);
    return s;
  }

  void run(Run& r) const override {
    const pruning::Criterion criterion = opt.criterion;
    const at::Tensor samples = r.windows("calibration", opt.seed);
    rusage ru{};
    const pruning::Statistics stats = calibrate(r, samples, opt, ru);
    const Fingerprints fp = fingerprints(r, samples);
    std::string out = r.cfg().get<std::string>("score.out");
    if (out.empty()) out = r.path("scores.safetensors");
    if (r.writer()) {
      pruning::save_statistics(out, stats,
                               {{"model", fp.model}, {"model_path", r.model_path()}, {"calibration", fp.calibration},
                                {"criterion", pruning::criterion_name(criterion)},
                                {"statistics", statistics_needed(opt)},
                                {"seconds", fmt::format("{:.3f}", stats.seconds)}});
    }
    spdlog::info("scored {} for {}: {} samples in {:.1f} s -> {}", r.model_path(), pruning::criterion_name(criterion),
                 stats.samples, stats.seconds, out);
    r.record({{"stage", "score"}, {"criterion", pruning::criterion_name(criterion)}, {"samples", stats.samples},
              {"scoring_seconds", stats.seconds}, {"model_fingerprint", fp.model},
              {"calibration_fingerprint", fp.calibration}, {"out", out}});
  }
};

struct PruneStage : Stage {
  pruning::PruneOptions opt;
  std::string scores;                    // prune.scores: statistics of `secateur score` instead of calibrating

  static std::unique_ptr<PruneStage> from_config(const config::Config& cfg) {
    auto s = std::make_unique<PruneStage>();
    s->opt = prune_options(cfg);
    s->scores = cfg.get<std::string>("prune.scores");
    return s;
  }

  // A dry run with random scores: the same budget arithmetic, so a ratio that would empty a layer
  // is refused here, before the model is loaded or calibrated.
  void validate(Run& r) const override {
    r.check_writable("pruning");
    pruning::validate(opt, r.input_config());
    pruning::PruneOptions dry = opt;
    dry.criterion = pruning::Criterion::random;
    (void)pruning::decide(r.input_config(), pruning::Statistics{}, dry);
    if (!scores.empty()) {          // checked against model.path now, and against the model being pruned later
      std::map<std::string, std::string> meta;
      (void)reuse(r, scores, r.windows("calibration", opt.seed), opt, meta);
    }
  }

  void run(Run& r) const override {
    const model::ModelConfig before = r.model().config();
    const at::Tensor samples = r.windows("calibration", opt.seed);
    rusage ru{};
    std::map<std::string, std::string> meta;
    const pruning::Statistics stats =
        scores.empty() ? calibrate(r, samples, opt, ru)
                       : reuse(r, scores, samples, opt, meta);
    const double reused = scores.empty() || !meta.count("seconds") ? 0.0 : std::atof(meta.at("seconds").c_str());
    if (!scores.empty()) spdlog::info("statistics from {} (computed in {:.1f} s), not calibrated again", scores, reused);
    const pruning::Decision d = [&] {
      Phase decide("decide");
      return pruning::decide(before, stats, opt);
    }();
    r.check_one_decision(d.hash);
    nlohmann::json dj = d.to_json(opt);
    if (!stats.sleb_order.empty()) dj["sleb"] = {{"order", stats.sleb_order}, {"nll_per_token", stats.sleb_nll}};
    if (r.writer()) io::write_file_atomic(r.path("decision.json"), dj.dump(2) + "\n");
    const std::string out = r.out_dir("prune.out", "pruned");
    const Run::Compensating compensating{stats, opt.compensation, opt.ridge};
    r.remove_groups(d.removed, out, opt.compensation == pruning::Compensation::none ? nullptr : &compensating);
    spdlog::info("pruned with {} ({} scope): {:.1f}M -> {:.1f}M parameters, {:.2f}% removed (target {:.2f}%), "
                 "scoring {:.1f} s, decision {:016x} -> {}", pruning::criterion_name(opt.criterion), opt.scope,
                 d.params_before / 1e6, d.params_after / 1e6, 100 * d.achieved_ratio, 100 * opt.ratio, stats.seconds,
                 d.hash, out);
    r.record({{"stage", "prune"}, {"criterion", pruning::criterion_name(opt.criterion)}, {"scope", opt.scope},
              {"compensation", pruning::compensation_name(opt.compensation)},
              {"ratio_target", opt.ratio}, {"ratio_achieved", d.achieved_ratio}, {"params_before", d.params_before},
              {"params_after", d.params_after}, {"scoring_seconds", stats.seconds},
              {"peak_rss_mib_after_scoring", ru.ru_maxrss / 1024.0}, {"hash", dj["hash"]}, {"out", out},
              {"scores", scores},
              {"scoring_seconds_reused", reused}});
  }
};

}  // namespace

std::unique_ptr<Stage> prune_stage(const config::Config& cfg) { return PruneStage::from_config(cfg); }
std::unique_ptr<Stage> score_stage(const config::Config& cfg) { return ScoreStage::from_config(cfg); }

}  // namespace secateur::tools
