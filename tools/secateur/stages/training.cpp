#include "tools/secateur/stages/training.h"

#include <filesystem>

#include "parallel/grid.h"
#include "runtime/core/check.h"
#include "runtime/core/log.h"
#include "runtime/io/checkpoint.h"
#include "runtime/text/source.h"

namespace secateur::tools {

namespace fs = std::filesystem;

namespace {

// recover.text names Alpaca-style instruction data when it is a .jsonl file (runtime/train/data.h).
bool is_instruction_file(const std::string& spec) {
  return spec.size() > 6 && spec.compare(spec.size() - 6, 6, ".jsonl") == 0;
}

}  // namespace

void validate_training(Run& r, const std::string& stage) {
  const config::Config& cfg = r.cfg();
  r.check_writable(stage == "recover" ? "recovering" : "pruning");
  const std::string spec = cfg.get<std::string>("recover.text");
  if (is_instruction_file(spec)) {
    SECATEUR_CHECK(fs::is_regular_file(spec), "[config] recover.text: no file {}", spec);
  } else {
    (void)text::read_text(spec, cfg.get<std::string>("data.austen"));
  }
  const double heldout = cfg.get<double>("recover.heldout");
  SECATEUR_CHECK(heldout >= 0 && heldout < 1, "[config] 'recover.heldout' = {} must be in [0, 1)", heldout);
}

void prepare_training(Run& r, Training& t, const std::string& stage) {
  const config::Config& cfg = r.cfg();
  model::Decoder& m = r.model();
  train::TrainOptions& o = t.options;
  o.steps = cfg.get<int64_t>("recover.steps");
  o.batch = cfg.get<int64_t>("recover.batch");
  o.micro_batch = cfg.get<int64_t>("recover.micro_batch");
  o.seq_len = cfg.get<int64_t>("recover.seq_len");
  o.lr = cfg.get<double>("recover.lr");
  o.weight_decay = cfg.get<double>("recover.weight_decay");
  o.warmup_steps = cfg.get<int64_t>("recover.warmup_steps");
  o.schedule = cfg.get<std::string>("recover.schedule");
  o.clip = cfg.get<double>("recover.clip");
  o.seed = static_cast<uint64_t>(cfg.get<int64_t>("run.seed"));
  o.resume = cfg.get<bool>("recover.resume");
  o.checkpoint_dir = r.path(stage == "recover" ? "checkpoints" : "checkpoints-" + stage);
  o.save_every = cfg.get<int64_t>("recover.save_every");
  const std::string spec = cfg.get<std::string>("recover.text");
  const train::TrainData all = is_instruction_file(spec) ? train::instruction_data(spec, r.tokenizer(), o.seq_len)
                                                         : train::TrainData(r.encode_text(spec));
  std::tie(t.data, t.heldout) = train::split_heldout(all, o.seq_len, cfg.get<double>("recover.heldout"));
  if (!t.heldout.tokens.empty()) o.heldout = &t.heldout;
  o.eval_every = cfg.get<int64_t>("recover.eval_every");
  t.method = cfg.get<std::string>("recover.method");
  train::LoraOptions lora;
  lora.rank = cfg.get<int64_t>("recover.lora_rank");
  lora.alpha = cfg.get<double>("recover.lora_alpha");
  lora.dropout = cfg.get<double>("recover.lora_dropout");
  lora.targets = cfg.get<std::vector<std::string>>("recover.lora_targets");
  lora.seed = o.seed;
  t.params = t.method == "lora" ? train::add_lora(m, lora) : train::all_weights(m);
  t.trainable = t.method == "lora" ? train::lora_parameter_count(m.config(), lora) : m.config().n_params();
  spdlog::info("{} ({}): {:.2f}M trainable parameters ({:.2f}% of {:.1f}M), {} steps of {} x {} tokens from {}", stage,
               t.method, t.trainable / 1e6, 100.0 * t.trainable / m.config().n_params(), m.config().n_params() / 1e6,
               o.steps, o.batch, o.seq_len, spec);
  if (cfg.get<bool>("recover.distill")) {
    std::string path = cfg.get<std::string>("recover.teacher");
    if (path.empty()) path = cfg.get<std::string>("model.path");
    t.teacher.emplace(io::load_decoder(path, m.device(), m.dtype(), &r.grid().tp()));
    o.teacher = &*t.teacher;
    o.kd_alpha = cfg.get<double>("recover.kd_alpha");
    o.kd_temperature = cfg.get<double>("recover.kd_temperature");
    o.kd_hidden = cfg.get<double>("recover.kd_hidden");
    spdlog::info("distilling from {} ({:.1f}M parameters): alpha {}, temperature {}, hidden {}", path,
                 t.teacher->config().n_params() / 1e6, o.kd_alpha, o.kd_temperature, o.kd_hidden);
  }
}

train::TrainResult run_training(Run& r, const Training& t) {
  parallel::Grid& g = r.grid();
  Phase train("train");
  return train::train(r.model(), t.params, t.data, t.options, {&g.dp(), &g.tp(), &g.world()},
                      [&r](const nlohmann::json& j) { r.record(j); });
}

}  // namespace secateur::tools
