// The convert stage: a GGUF file or an HF directory (model.path) -> an HF directory that stock
// transformers loads (convert.out, in convert.dtype: auto = model.dtype). One writer.
#include "runtime/core/log.h"
#include "runtime/io/checkpoint.h"
#include "tools/secateur/stages/stage.h"

namespace secateur::tools {

namespace {

struct ConvertStage : Stage {
  std::string out_key = "convert.out";

  static std::unique_ptr<ConvertStage> from_config(const config::Config&) { return std::make_unique<ConvertStage>(); }

  void run(Run& r) const override {
    if (!r.writer()) return;                     // one writer; the other ranks go on to the next stage
    const std::string out = r.out_dir(out_key, "checkpoint");
    const std::string path = r.cfg().get<std::string>("model.path");
    const io::LoadedModel m = [&] {
      Phase load("load");
      return io::load_model(path);
    }();
    Phase save("export");                        // the tokenizer's load inside it is timed as load
    io::save_hf_model(out, m.config, m.tensors, r.export_dtype(), &r.tokenizer());
    spdlog::info("converted {} ({}) -> {} ({} tensors, {:.1f}M parameters)", path, m.source, out, m.tensors.size(),
                 m.config.n_params() / 1e6);
    r.record({{"stage", "convert"}, {"out", out}, {"params", m.config.n_params()}});
  }
};

}  // namespace

std::unique_ptr<Stage> convert_stage(const config::Config& cfg) { return ConvertStage::from_config(cfg); }

}  // namespace secateur::tools
