// The recover stage: LoRA or full fine-tuning of the current model (recover.*), with knowledge
// distillation, checkpoints and exact resume; LoRA is merged and the model written (recover.out).
// An unstructured-pruned model (masks.safetensors beside its weights, from the sparse stage)
// keeps its zeros: masked gradients, masked weights re-zeroed after every update.
#include <filesystem>

#include "runtime/core/check.h"
#include "runtime/core/log.h"
#include "runtime/io/safetensors.h"
#include "tools/secateur/stages/stage.h"
#include "tools/secateur/stages/training.h"

namespace secateur::tools {

namespace {

namespace fs = std::filesystem;

struct RecoverStage : Stage {
  static std::unique_ptr<RecoverStage> from_config(const config::Config&) { return std::make_unique<RecoverStage>(); }

  void validate(Run& r) const override { validate_training(r, "recover"); }

  void run(Run& r) const override {
    model::Decoder& m = r.model();
    Training t;
    prepare_training(r, t, "recover");
    std::vector<std::pair<at::Tensor*, at::Tensor>> keep;
    const fs::path masks_file = fs::path(r.model_path()) / "masks.safetensors";
    if (fs::is_regular_file(masks_file)) {
      SECATEUR_CHECK(t.method == "full", "[config] {} holds the masks of a sparse model: 'recover.method' must be "
                     "full (merged LoRA updates would fill the pruned weights in)", masks_file.string());
      const io::SafetensorsFile f(masks_file.string());
      const model::NamedTensors named = m.named_tensors();
      const std::vector<at::Tensor*> weights = m.parameters();
      for (size_t i = 0; i < named.size(); ++i) {
        if (!f.has(named[i].first)) continue;
        const auto cut = m.plan().slice_of(named[i].first, m.config());
        const at::Tensor mask = cut.dim < 0 ? f.tensor(named[i].first)
                                            : f.slice(named[i].first, cut.dim, cut.range.begin, cut.range.end);
        SECATEUR_CHECK(mask.sizes() == weights[i]->sizes(), "[recover] {}: the mask of '{}' does not fit its weight",
                       masks_file.string(), named[i].first);
        keep.emplace_back(weights[i], mask.to(weights[i]->options()));
      }
      spdlog::info("recover keeps the zeros of {} masked matrices ({})", keep.size(), masks_file.string());
      t.options.hooks.after_gradients = [&](int64_t) {
        for (auto& [w, mask] : keep) {
          if (w->grad().defined()) w->mutable_grad().mul_(mask);
        }
      };
      t.options.hooks.after_update = [&](int64_t, double) {
        for (auto& [w, mask] : keep) w->mul_(mask);
      };
    }
    const train::TrainResult res = run_training(r, t);
    if (t.method == "lora") train::merge_lora(m);
    const std::string out = r.out_dir("recover.out", "recovered");
    r.write_current_model(out);
    spdlog::info("recovered with {}: {} steps in {:.1f} s ({:.0f} tok/s), final loss {:.4f} -> {}", t.method, res.steps,
                 res.seconds, res.tokens_per_second, res.last_loss, out);
    nlohmann::json line = {{"stage", "recover"}, {"method", t.method}, {"distill", t.options.teacher != nullptr},
                           {"steps", res.steps}, {"first_step", res.first_step}, {"trainable_params", t.trainable},
                           {"final_loss", res.last_loss}, {"seconds", res.seconds},
                           {"tokens_per_second", res.tokens_per_second}, {"out", out}};
    if (!res.heldout.empty()) {
      line["heldout_ppl_before"] = std::exp(res.heldout.front().second);
      line["heldout_ppl_after"] = std::exp(res.heldout.back().second);
    }
    r.record(line);
  }
};

}  // namespace

std::unique_ptr<Stage> recover_stage(const config::Config& cfg) { return RecoverStage::from_config(cfg); }

}  // namespace secateur::tools
