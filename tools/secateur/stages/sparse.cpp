// The sparse stage: unstructured pruning (sparse.*, pruning/sparse.h): RPP's reweighted proximal
// steps or iterative magnitude pruning while training, then masked fine-tuning; or Wanda in one
// shot from the calibration windows (calibration.*), no training; the dense
// weights with their zeros are written (sparse.out) with masks.safetensors beside them.
#include <ATen/ATen.h>

#include <optional>

#include "parallel/collectives.h"
#include "parallel/grid.h"
#include "pruning/sparse.h"
#include "pruning/stats.h"
#include "runtime/config/choices.h"
#include "runtime/core/check.h"
#include "runtime/core/log.h"
#include "runtime/core/phase.h"
#include "runtime/io/atomic_file.h"
#include "runtime/io/safetensors.h"
#include "tools/secateur/stages/stage.h"
#include "tools/secateur/stages/training.h"

namespace secateur::tools {

namespace {

struct SparseStage : Stage {
  pruning::SparseOptions opt;

  static std::unique_ptr<SparseStage> from_config(const config::Config& cfg) {
    auto s = std::make_unique<SparseStage>();
    pruning::SparseOptions& o = s->opt;
    o.method = config::parse_choice<pruning::SparseMethod>(config::choices::sparse_method, "sparse.method",
                                                       cfg.get<std::string>("sparse.method"));
    o.sparsity = cfg.get<double>("sparse.sparsity");
    o.scope = cfg.get<std::string>("sparse.scope");
    o.threshold = cfg.get<double>("sparse.threshold");
    o.targets = cfg.get<std::vector<std::string>>("sparse.targets");
    o.gamma = cfg.get<double>("sparse.gamma");
    o.epsilon = cfg.get<double>("sparse.epsilon");
    o.reweight_every = cfg.get<int64_t>("sparse.reweight_every");
    o.prune_at = cfg.get<double>("sparse.prune_at");
    o.rounds = cfg.get<int64_t>("sparse.rounds");
    o.pattern = cfg.get<std::string>("sparse.pattern");
    return s;
  }

  void validate(Run& r) const override {
    opt.validate();
    if (opt.method == pruning::SparseMethod::wanda) return;   // no training
    SECATEUR_CHECK(r.cfg().get<std::string>("recover.method") == "full", "[config] the sparse stage needs "
                   "'recover.method' = full (merged LoRA updates would fill the pruned weights in)");
    validate_training(r, "sparse");
  }

  void run(Run& r) const override {
    model::Decoder& m = r.model();
    const auto metric = [&r](const nlohmann::json& j) { r.record(j); };
    train::TrainResult res;
    std::optional<pruning::SparsePruner> pruner;
    Training t;
    if (opt.method == pruning::SparseMethod::wanda) {      // one shot from calibration.*, no training
      const at::Tensor samples = r.windows("calibration", static_cast<uint64_t>(r.cfg().get<int64_t>("run.seed")));
      pruning::CalibrationOptions calib;
      calib.first_order = false;
      calib.activations = true;
      const pruning::Statistics stats = [&] {
        Phase phase("calibrate");
        return pruning::collect_statistics(m, samples, calib, &r.grid().dp());
      }();
      pruner.emplace(m, opt, 1, metric);
      pruner->prune_wanda(stats);
    } else {
      prepare_training(r, t, "sparse");
      pruner.emplace(m, opt, t.options.steps, metric);
      t.options.hooks.after_gradients = [&](int64_t step) { pruner->after_gradients(step); };
      t.options.hooks.after_update = [&](int64_t step, double lr) { pruner->after_update(step, lr); };
      t.options.hooks.save_state = [&] { return pruner->state(); };
      t.options.hooks.load_state = [&](const model::NamedTensors& s) { pruner->restore(s); };
      res = run_training(r, t);
    }
    const nlohmann::json sp = pruner->sparsity(true);
    const std::string out = r.out_dir("sparse.out", "sparse");
    r.write_current_model(out);                 // dense weights with their zeros; the masks beside them
    std::vector<std::pair<std::string, at::Tensor>> masks;
    for (size_t i = 0; i < pruner->tensors().size(); ++i) {
      const std::string& name = pruner->tensors()[i].first;
      at::Tensor mask = pruner->masks().empty() ? (*pruner->tensors()[i].second != 0) : (pruner->masks()[i] != 0);
      const model::Slice cut = m.plan().slice_of(name, m.config());
      if (cut.dim >= 0) mask = parallel::gather(r.grid().tp(), mask.to(at::kFloat), cut.dim) != 0;   // whole tensors
      masks.emplace_back(name, mask.to(at::kByte).cpu().contiguous());
    }
    if (r.writer()) {
      io::write_safetensors(out + "/masks.safetensors", masks, {{"format", "secateur-masks"}});
      io::write_file_atomic(r.path("sparsity.json"), sp.dump(2) + "\n");
    }
    const char* method = config::choice_name(config::choices::sparse_method, opt.method);
    const std::string& where = opt.method == pruning::SparseMethod::wanda ? opt.pattern : opt.scope;
    spdlog::info("sparse ({}, {}): {:.2f}% of the pruned matrices are zero (target {:.2f}%), {} steps in {:.1f} s -> {}",
                 method, where, 100 * sp["sparsity"].get<double>(), 100 * opt.sparsity, res.steps, res.seconds, out);
    r.record({{"stage", "sparse"}, {"method", method}, {"scope", opt.scope}, {"pattern", opt.pattern},
              {"threshold", opt.threshold}, {"target", opt.sparsity}, {"sparsity", sp["sparsity"]}, {"layers", sp["layers"]},
              {"tensors", sp["tensors"]}, {"distill", t.options.teacher != nullptr}, {"steps", res.steps},
              {"final_loss", res.last_loss}, {"seconds", res.seconds}, {"out", out}});
  }
};

}  // namespace

std::unique_ptr<Stage> sparse_stage(const config::Config& cfg) { return SparseStage::from_config(cfg); }

}  // namespace secateur::tools
