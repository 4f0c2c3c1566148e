// The gum stage: training-time pruning of MLP neurons (gum.*, pruning/movement.h) while the
// model trains with recover.*: GUM, movement (hard or soft) or gradual random / magnitude; the
// masked neurons are then removed physically (gum.out) and the kept widths written to gum.json.
#include "pruning/decision.h"
#include "pruning/movement.h"
#include "parallel/grid.h"
#include "runtime/core/log.h"
#include "runtime/io/atomic_file.h"
#include "tools/secateur/stages/stage.h"
#include "tools/secateur/stages/training.h"

namespace secateur::tools {

namespace {

struct GumStage : Stage {
  pruning::GradualOptions opt;

  static std::unique_ptr<GumStage> from_config(const config::Config& cfg) {
    auto s = std::make_unique<GumStage>();
    pruning::GradualOptions& g = s->opt;
    g.method = pruning::parse_gradual(cfg.get<std::string>("gum.method"));
    g.keep = cfg.get<double>("gum.keep");
    g.global = cfg.get<std::string>("gum.ranking") == "global";
    g.warmup = cfg.get<double>("gum.warmup");
    g.mask_lr = cfg.get<double>("gum.mask_lr");
    g.lambda = cfg.get<double>("gum.lambda");
    g.lambda_u = cfg.get<double>("gum.lambda_u");
    g.beta = cfg.get<double>("gum.beta");
    g.soft_threshold = cfg.get<double>("gum.soft_threshold");
    g.partners = cfg.get<int64_t>("gum.partners");
    g.seed = static_cast<uint64_t>(cfg.get<int64_t>("run.seed"));
    return s;
  }

  void validate(Run& r) const override {
    opt.validate();
    validate_training(r, "gum");
  }

  void run(Run& r) const override {
    model::Decoder& m = r.model();
    Training t;
    prepare_training(r, t, "gum");
    const int64_t params_before = m.config().n_params();
    pruning::GradualPruner pruner(m, opt, t.options.steps, &r.grid().dp());
    const std::vector<at::Tensor*> scores = pruner.scores();
    for (size_t l = 0; l < scores.size(); ++l) {
      t.params.push_back({fmt::format("mask_scores.{}", l), scores[l], false, true, opt.mask_lr, false});
    }
    t.options.hooks.before_step = [&](int64_t step) { pruner.before_step(step); };
    t.options.hooks.after_gradients = [&](int64_t step) { pruner.after_gradients(step); };
    t.options.hooks.before_eval = [&] { pruner.before_eval(); };
    t.options.hooks.save_state = [&] { return pruner.state(); };
    t.options.hooks.load_state = [&](const model::NamedTensors& s) { pruner.restore(s); };
    const train::TrainResult res = run_training(r, t);
    if (t.method == "lora") train::merge_lora(m);
    const std::vector<pruning::Group> removed = pruner.final_removal();
    r.check_one_decision(pruning::decision_hash(removed));
    const nlohmann::json summary = pruner.summary();
    if (r.writer()) io::write_file_atomic(r.path("gum.json"), summary.dump(2) + "\n");
    const std::string out = r.out_dir("gum.out", "pruned");
    r.remove_groups(removed, out);
    const model::ModelConfig& after = r.model().config();
    spdlog::info("gum ({}, {}): kept {} of {} MLP neurons ({:.1f}%), {:.1f}M -> {:.1f}M parameters, {} steps in {:.1f} "
                 "s -> {}", pruning::gradual_name(opt.method), opt.global ? "global" : "local",
                 summary["kept"].get<int64_t>(), summary["neurons"].get<int64_t>(),
                 100 * summary["kept_fraction"].get<double>(), params_before / 1e6, after.n_params() / 1e6, res.steps,
                 res.seconds, out);
    nlohmann::json line = {{"stage", "gum"}, {"method", pruning::gradual_name(opt.method)},
                           {"ranking", opt.global ? "global" : "local"}, {"distill", t.options.teacher != nullptr},
                           {"keep_target", opt.keep}, {"kept_fraction", summary["kept_fraction"]},
                           {"params_before", params_before}, {"params_after", after.n_params()}, {"steps", res.steps},
                           {"final_loss", res.last_loss}, {"seconds", res.seconds},
                           {"tokens_per_second", res.tokens_per_second}, {"out", out}};
    if (!res.heldout.empty()) line["heldout_ppl_after"] = std::exp(res.heldout.back().second);
    r.record(line);
  }
};

}  // namespace

std::unique_ptr<Stage> gum_stage(const config::Config& cfg) { return GumStage::from_config(cfg); }

}  // namespace secateur::tools
