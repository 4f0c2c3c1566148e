// The generate stage: a continuation of generate.prompt by the current model (greedy or top-p),
// through the KV cache.
#include "runtime/core/log.h"
#include "runtime/eval/generate.h"
#include "tools/secateur/stages/stage.h"

namespace secateur::tools {

namespace {

struct GenerateStage : Stage {
  std::string prompt;
  eval::GenerateOptions opt;

  static std::unique_ptr<GenerateStage> from_config(const config::Config& cfg) {
    auto s = std::make_unique<GenerateStage>();
    s->prompt = cfg.get<std::string>("generate.prompt");
    s->opt.max_new_tokens = cfg.get<int64_t>("generate.max_new_tokens");
    s->opt.greedy = cfg.get<std::string>("generate.sampling") == "greedy";
    s->opt.top_p = cfg.get<double>("generate.top_p");
    s->opt.temperature = cfg.get<double>("generate.temperature");
    s->opt.seed = static_cast<uint64_t>(cfg.get<int64_t>("run.seed"));
    return s;
  }

  void run(Run& r) const override {
    eval::GenerateOptions o = opt;
    o.stop_id = r.model().config().eos_id;
    Phase phase("generate");
    const auto g = eval::generate(r.model(), r.tokenizer().encode(prompt), o);
    const std::string text = r.tokenizer().decode(g.ids, /*skip_special=*/true);
    spdlog::info("generated {} tokens at {:.1f} tok/s: {}{}", g.ids.size(), g.decode_tokens_per_second, prompt, text);
    r.record({{"stage", "generate"}, {"prompt", prompt}, {"completion", text}, {"new_tokens", g.ids.size()},
              {"decode_tokens_per_second", g.decode_tokens_per_second}});
  }
};

}  // namespace

std::unique_ptr<Stage> generate_stage(const config::Config& cfg) { return GenerateStage::from_config(cfg); }

}  // namespace secateur::tools
