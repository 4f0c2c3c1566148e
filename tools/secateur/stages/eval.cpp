// The eval stage on the current model: perplexity at each of eval.windows on the first
// eval.max_tokens tokens of eval.text, zero-shot tasks (eval.tasks, runtime/eval/tasks.h) and
// speed (eval.speed: prefill and decode, with the speed-up against the run's first measurement).
#include <algorithm>
#include <filesystem>

#include "parallel/grid.h"
#include "runtime/core/check.h"
#include "runtime/core/log.h"
#include "runtime/eval/perplexity.h"
#include "runtime/eval/speed.h"
#include "runtime/eval/tasks.h"
#include "tools/secateur/stages/stage.h"

namespace secateur::tools {

namespace {

namespace fs = std::filesystem;

struct EvalStage : Stage {
  std::string text;
  int64_t max_tokens = 0, batch = 8, task_limit = 0;
  eval::ScoreOptions score;
  std::vector<int64_t> windows;
  std::vector<std::string> tasks;
  std::string tasks_dir;
  bool speed = true;
  eval::SpeedOptions speed_options;

  static std::unique_ptr<EvalStage> from_config(const config::Config& cfg) {
    auto s = std::make_unique<EvalStage>();
    s->text = cfg.get<std::string>("eval.text");
    s->max_tokens = cfg.get<int64_t>("eval.max_tokens");
    s->batch = cfg.get<int64_t>("eval.batch");
    s->windows = cfg.get<std::vector<int64_t>>("eval.windows");
    s->tasks = cfg.get<std::vector<std::string>>("eval.tasks");
    s->task_limit = cfg.get<int64_t>("eval.task_limit");
    // Zero-shot passes: bounded by tokens (every request has one at least), else eval.batch requests.
    s->score.tokens = cfg.get<int64_t>("eval.task_tokens");
    s->score.batch = s->score.tokens > 0 ? s->score.tokens : s->batch;
    s->score.shared_prefix = cfg.get<bool>("eval.shared_prefix");
    s->tasks_dir = cfg.get<std::string>("eval.tasks_dir");
    s->speed = cfg.get<bool>("eval.speed");
    s->speed_options.prompt_tokens = cfg.get<int64_t>("eval.speed_prompt");
    s->speed_options.decode_tokens = cfg.get<int64_t>("eval.speed_decode");
    s->speed_options.seed = static_cast<uint64_t>(cfg.get<int64_t>("run.seed"));
    return s;
  }

  // The zero-shot task files exist, before any work.
  void validate(Run&) const override {
    if (tasks.empty()) return;
    const std::string dir = eval::find_tasks_dir(tasks_dir);
    for (const std::string& name : tasks) {
      const std::string file = eval::task_file(dir, eval::resolve_task(dir, name));
      SECATEUR_CHECK(fs::is_regular_file(file), "[config] eval.tasks: no file {} (eval.tasks_dir = '{}')", file,
                     dir);
    }
  }

  void run(Run& r) const override {
    if (!windows.empty()) perplexity(r);
    if (!tasks.empty()) zero_shot(r);
    if (speed) measure_speed(r);
  }

  void perplexity(Run& r) const {
    std::vector<int32_t> ids = r.encode_text(text);
    const size_t total = ids.size();
    if (max_tokens > 0 && static_cast<int64_t>(ids.size()) > max_tokens) ids.resize(max_tokens);
    spdlog::info("eval text {}: {} tokens, evaluating the first {}", text, total, ids.size());
    for (int64_t window : windows) {
      Phase phase("perplexity");
      const auto p = eval::perplexity(r.model(), ids, window, batch, &r.grid().dp());
      spdlog::info("perplexity {:.4f} at window {} ({} windows, {} predicted tokens, {:.0f} tok/s)", p.ppl, window,
                   p.windows, p.predictions, p.tokens_per_second);
      r.record({{"stage", "eval"}, {"metric", "perplexity"}, {"text", text}, {"tokens", ids.size()},
                {"window", window}, {"windows", p.windows}, {"predictions", p.predictions}, {"nll", p.nll},
                {"ppl", p.ppl}, {"seconds", p.seconds}, {"tokens_per_second", p.tokens_per_second}});
    }
  }

  // One record per task, per-example scores in <run.dir>/zero_shot/; Run::finish() gathers the
  // records into report.md.
  void zero_shot(Run& r) const {
    const std::string dir = eval::find_tasks_dir(tasks_dir);
    const std::string label = r.model_path();
    const int pass = r.pass("zero_shot");                        // earlier zero-shot passes of this run
    for (const std::string& name : tasks) {
      const eval::TaskInfo task = eval::resolve_task(dir, name);
      const std::string file = eval::task_file(dir, task);
      const std::vector<eval::Example> examples = eval::read_requests(file, task_limit);
      Phase phase("zero_shot");
      const eval::TaskResult t = eval::evaluate_task(r.model(), r.tokenizer(), task, examples, score, &r.grid().dp());
      spdlog::info("{} {} {:.4f} (acc {:.4f}, acc_norm {:.4f}, acc_per_token {:.4f}, bpb {:.4f}{}; {} examples, {} "
                   "requests, {:.1f} s)", task.name, t.metric, t.value(), t.acc, t.acc_norm, t.acc_per_token, t.bpb,
                   task.name == "lambada" ? fmt::format(", ppl {:.3f}", t.ppl) : "", t.examples, t.requests, t.seconds);
      nlohmann::json m = {{"stage", "eval"}, {"metric", "zero_shot"}, {"task", task.name}, {"model", label},
                          {"file", file}, {"examples", t.examples}, {"requests", t.requests}, {"reported", t.metric},
                          {"value", t.value()}, {"acc", t.acc}, {"acc_norm", t.acc_norm},
                          {"acc_per_token", t.acc_per_token}, {"bpb", t.bpb}, {"seconds", t.seconds},
                          {"tokens_per_second", t.seconds > 0 ? t.tokens / t.seconds : 0.0}};
      if (task.name == "lambada") m["ppl"] = t.ppl;
      if (r.writer()) {
        std::string stem = task.name;
        std::replace(stem.begin(), stem.end(), ':', '.');        // piqa:mc_5shot -> piqa.mc_5shot.jsonl
        const std::string samples = pass ? fmt::format("{}.{}.jsonl", stem, pass) : stem + ".jsonl";
        m["samples"] = (fs::path(r.dir()) / "zero_shot" / samples).string();
        eval::write_samples(m["samples"].get<std::string>(), examples, t);
      }
      r.record(m);
    }
  }

  void measure_speed(Run& r) const {
    const eval::SpeedOptions& o = speed_options;
    Phase phase("speed");
    const eval::SpeedResult s = eval::measure_speed(r.model(), o);
    nlohmann::json m = {{"stage", "eval"}, {"metric", "speed"}, {"params", s.params},
                        {"macs_per_token", s.macs_per_token}, {"prompt_tokens", o.prompt_tokens},
                        {"decode_tokens", o.decode_tokens}, {"prefill_ms", s.prefill_ms},
                        {"prefill_tokens_per_second", s.prefill_tokens_per_second},
                        {"decode_ms_per_token", s.decode_ms_per_token},
                        {"decode_tokens_per_second", s.decode_tokens_per_second}};
    // The speed-up against the first speed measured in this run (the dense model, when eval came first).
    if (const auto& first = r.first_speed) {
      m["prefill_speedup"] = s.prefill_tokens_per_second / (*first)["prefill_tokens_per_second"].get<double>();
      m["decode_speedup"] = s.decode_tokens_per_second / (*first)["decode_tokens_per_second"].get<double>();
      m["macs_ratio"] = s.macs_per_token / (*first)["macs_per_token"].get<double>();
    } else {
      r.first_speed = m;
    }
    spdlog::info("speed: prefill {} tokens {:.1f} ms ({:.0f} tok/s), decode {:.1f} ms/token ({:.1f} tok/s); {:.1f}M "
                 "parameters, {:.1f}M MACs/token{}", o.prompt_tokens, s.prefill_ms, s.prefill_tokens_per_second,
                 s.decode_ms_per_token, s.decode_tokens_per_second, s.params / 1e6, s.macs_per_token / 1e6,
                 m.contains("decode_speedup") ? fmt::format(" — x{:.2f} prefill, x{:.2f} decode vs the first eval",
                                                            m["prefill_speedup"].get<double>(),
                                                            m["decode_speedup"].get<double>())
                                              : "");
    r.record(m);
  }
};

}  // namespace

std::unique_ptr<Stage> eval_stage(const config::Config& cfg) { return EvalStage::from_config(cfg); }

}  // namespace secateur::tools
