#include "tools/secateur/pipeline.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <random>
#include <fstream>

#include <malloc.h>
#include <sys/resource.h>

#include "parallel/grid.h"
#include "pruning/apply.h"
#include "pruning/decision.h"
#include "pruning/movement.h"
#include "pruning/redundancy.h"
#include "pruning/sparse.h"
#include "pruning/stats.h"
#include "runtime/core/check.h"
#include "runtime/core/log.h"
#include "runtime/eval/generate.h"
#include "runtime/eval/perplexity.h"
#include "runtime/eval/speed.h"
#include "runtime/eval/tasks.h"
#include "runtime/io/atomic_file.h"
#include "runtime/io/checkpoint.h"
#include "runtime/io/safetensors.h"
#include "runtime/text/source.h"
#include "runtime/train/data.h"
#include "runtime/train/lora.h"
#include "runtime/train/trainer.h"

namespace secateur::tools {

namespace fs = std::filesystem;

namespace {

// recover.text names Alpaca-style instruction data when it is a .jsonl file (runtime/train/data.h).
bool is_instruction_file(const std::string& spec) {
  return spec.size() > 6 && spec.compare(spec.size() - 6, 6, ".jsonl") == 0;
}

}  // namespace

Pipeline::Pipeline(config::Config cfg, parallel::Grid& grid, bool fresh)
    : cfg_(std::move(cfg)), grid_(grid), dir_(cfg_.get<std::string>("run.dir")) {
  if (writer()) {
    fs::create_directories(dir_);
    if (fresh) fs::remove(fs::path(dir_) / "metrics.jsonl");
    cfg_.write((fs::path(dir_) / "config.resolved.yaml").string());
  }
  report_["config"] = cfg_.source();
  report_["model"] = cfg_.get<std::string>("model.path");
}

const model::Decoder& Pipeline::model() {
  if (!model_) {
    const std::string path = cfg_.get<std::string>("model.path");
    const at::Device device(cfg_.get<std::string>("model.device") == "cuda" ? at::kCUDA : at::kCPU);
    model_.emplace(io::load_decoder(path, device, io::parse_dtype(cfg_.get<std::string>("model.dtype")), &grid_.tp()));
    const auto& c = model_->config();
    spdlog::info("model {}: {} layers, d={}, heads {}/{} kv, d_ff {}, vocab {}, {:.1f}M parameters, {} on {}, tp {}",
                 path, c.n_layers(), c.hidden, c.n_heads[0], c.n_kv_heads[0], c.d_ff[0], c.vocab_size,
                 c.n_params() / 1e6, cfg_.get<std::string>("model.dtype"), device.str(), grid_.tp_size());
    // Peak resident memory of every rank after loading its shard (ru_maxrss, MiB), in rank order.
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    const at::Tensor rss = grid_.world().host().all_gather(at::tensor({ru.ru_maxrss / 1024.0}, at::kDouble));
    std::vector<double> per_rank(rss.data_ptr<double>(), rss.data_ptr<double>() + rss.numel());
    spdlog::info("peak RSS per rank after loading (MiB): {:.0f}", fmt::join(per_rank, ", "));
    record({{"stage", "load"}, {"model", path}, {"tp", grid_.tp_size()}, {"dp", grid_.dp_size()},
            {"peak_rss_mib_per_rank", per_rank}});
  }
  return *model_;
}

const text::Tokenizer& Pipeline::tokenizer() {
  if (!tokenizer_) tokenizer_.emplace(io::load_tokenizer(cfg_.get<std::string>("model.path")));
  return *tokenizer_;
}

bool Pipeline::writer() const { return grid_.rank() == 0; }

void Pipeline::record(const nlohmann::json& metric) {
  if (!writer()) return;
  std::ofstream out(fs::path(dir_) / "metrics.jsonl", std::ios::app);
  out << metric.dump() << "\n";
  report_["metrics"].push_back(metric);
}

void Pipeline::run_stage(const std::string& stage) {
  spdlog::info("stage {}", stage);
  if (stage == "convert") convert();
  else if (stage == "eval") eval();
  else if (stage == "generate") generate();
  else if (stage == "prune") prune();
  else if (stage == "gum") gum();
  else if (stage == "report") report();
  else if (stage == "sparse") sparse();
  else if (stage == "recover") recover();
  else SECATEUR_FAIL("[pipeline] unknown stage '{}' (allowed: convert, eval, prune, gum, sparse, recover, report, generate)", stage);
  grid_.world().barrier();                       // every rank leaves a stage together
}

void Pipeline::convert() {
  if (!writer()) return;                         // one writer; the other ranks go on to the next stage
  std::string out = cfg_.get<std::string>("convert.out");
  if (out.empty()) out = (fs::path(dir_) / "checkpoint").string();
  const std::string path = cfg_.get<std::string>("model.path");
  const io::LoadedModel m = io::load_model(path);
  const text::Tokenizer& tok = tokenizer();
  io::save_hf_model(out, m.config, m.tensors, io::parse_dtype(cfg_.get<std::string>("convert.dtype")), &tok);
  spdlog::info("converted {} ({}) -> {} ({} tensors, {:.1f}M parameters)", path, m.source, out, m.tensors.size(),
               m.config.n_params() / 1e6);
  record({{"stage", "convert"}, {"out", out}, {"params", m.config.n_params()}});
}

void Pipeline::eval() {
  if (!cfg_.get<std::vector<int64_t>>("eval.windows").empty()) eval_perplexity();
  if (!cfg_.get<std::vector<std::string>>("eval.tasks").empty()) eval_tasks();
  if (cfg_.get<bool>("eval.speed")) eval_speed();
}

void Pipeline::eval_speed() {
  eval::SpeedOptions o;
  o.prompt_tokens = cfg_.get<int64_t>("eval.speed_prompt");
  o.decode_tokens = cfg_.get<int64_t>("eval.speed_decode");
  o.seed = static_cast<uint64_t>(cfg_.get<int64_t>("run.seed"));
  const eval::SpeedResult r = eval::measure_speed(model(), o);
  nlohmann::json m = {{"stage", "eval"}, {"metric", "speed"}, {"params", r.params},
                      {"macs_per_token", r.macs_per_token}, {"prompt_tokens", o.prompt_tokens},
                      {"decode_tokens", o.decode_tokens}, {"prefill_ms", r.prefill_ms},
                      {"prefill_tokens_per_second", r.prefill_tokens_per_second},
                      {"decode_ms_per_token", r.decode_ms_per_token},
                      {"decode_tokens_per_second", r.decode_tokens_per_second}};
  // The speed-up against the first speed measured in this run (the dense model, when eval came first).
  for (const auto& prev : report_.value("metrics", nlohmann::json::array())) {
    if (prev.value("metric", "") != "speed") continue;
    m["prefill_speedup"] = r.prefill_tokens_per_second / prev["prefill_tokens_per_second"].get<double>();
    m["decode_speedup"] = r.decode_tokens_per_second / prev["decode_tokens_per_second"].get<double>();
    m["macs_ratio"] = r.macs_per_token / prev["macs_per_token"].get<double>();
    break;
  }
  spdlog::info("speed: prefill {} tokens {:.1f} ms ({:.0f} tok/s), decode {:.1f} ms/token ({:.1f} tok/s); {:.1f}M "
               "parameters, {:.1f}M MACs/token{}", o.prompt_tokens, r.prefill_ms, r.prefill_tokens_per_second,
               r.decode_ms_per_token, r.decode_tokens_per_second, r.params / 1e6, r.macs_per_token / 1e6,
               m.contains("decode_speedup") ? fmt::format(" — x{:.2f} prefill, x{:.2f} decode vs the first eval",
                                                          m["prefill_speedup"].get<double>(),
                                                          m["decode_speedup"].get<double>())
                                            : "");
  record(m);
}

// Zero-shot tasks (runtime/eval/tasks.h): one record per task, per-example scores in
// <run.dir>/zero_shot/, and finish() gathers the records into report.md.
void Pipeline::eval_tasks() {
  const auto tasks = cfg_.get<std::vector<std::string>>("eval.tasks");
  const std::string dir = eval::find_tasks_dir(cfg_.get<std::string>("eval.tasks_dir"));
  const std::string label = current_model_path();
  int pass = 0;                                               // earlier zero-shot passes of this run
  for (const auto& m : report_.value("metrics", nlohmann::json::array())) {
    if (m.value("metric", "") == "zero_shot" && m.value("task", "") == tasks[0]) ++pass;
  }
  for (const std::string& name : tasks) {
    const eval::TaskInfo& task = eval::task_info(name);
    const std::string file = eval::task_file(dir, task);
    const std::vector<eval::Example> examples = eval::read_requests(file, cfg_.get<int64_t>("eval.task_limit"));
    const eval::TaskResult r =
        eval::evaluate_task(model(), tokenizer(), task, examples, cfg_.get<int64_t>("eval.batch"), &grid_.dp());
    spdlog::info("{} {} {:.4f} (acc {:.4f}, acc_norm {:.4f}{}; {} examples, {} requests, {:.1f} s)", name, r.metric,
                 r.value(), r.acc, r.acc_norm, task.name == "lambada" ? fmt::format(", ppl {:.3f}", r.ppl) : "",
                 r.examples, r.requests, r.seconds);
    nlohmann::json m = {{"stage", "eval"}, {"metric", "zero_shot"}, {"task", name}, {"model", label},
                        {"file", file}, {"examples", r.examples}, {"requests", r.requests}, {"reported", r.metric},
                        {"value", r.value()}, {"acc", r.acc}, {"acc_norm", r.acc_norm}, {"seconds", r.seconds},
                        {"tokens_per_second", r.seconds > 0 ? r.tokens / r.seconds : 0.0}};
    if (task.name == "lambada") m["ppl"] = r.ppl;
    if (writer()) {
      const std::string samples = pass ? fmt::format("{}.{}.jsonl", name, pass) : name + ".jsonl";
      m["samples"] = (fs::path(dir_) / "zero_shot" / samples).string();
      eval::write_samples(m["samples"].get<std::string>(), examples, r);
    }
    record(m);
  }
}

void Pipeline::eval_perplexity() {
  const std::string spec = cfg_.get<std::string>("eval.text");
  std::vector<int32_t> ids = tokenizer().encode(text::read_text(spec, cfg_.get<std::string>("data.austen")),
                                                /*parse_special=*/false);
  const auto max_tokens = cfg_.get<int64_t>("eval.max_tokens");
  const size_t total = ids.size();
  if (max_tokens > 0 && static_cast<int64_t>(ids.size()) > max_tokens) ids.resize(max_tokens);
  spdlog::info("eval text {}: {} tokens, evaluating the first {}", spec, total, ids.size());
  for (int64_t window : cfg_.get<std::vector<int64_t>>("eval.windows")) {
    const auto r = eval::perplexity(model(), ids, window, cfg_.get<int64_t>("eval.batch"), &grid_.dp());
    spdlog::info("perplexity {:.4f} at window {} ({} windows, {} predicted tokens, {:.0f} tok/s)", r.ppl, window,
                 r.windows, r.predictions, r.tokens_per_second);
    record({{"stage", "eval"}, {"metric", "perplexity"}, {"text", spec}, {"tokens", ids.size()},
            {"window", window}, {"windows", r.windows}, {"predictions", r.predictions}, {"nll", r.nll},
            {"ppl", r.ppl}, {"seconds", r.seconds}, {"tokens_per_second", r.tokens_per_second}});
  }
}

ScopedMmapThreshold::ScopedMmapThreshold() { mallopt(M_MMAP_THRESHOLD, 1 << 20); }
ScopedMmapThreshold::~ScopedMmapThreshold() { mallopt(M_MMAP_THRESHOLD, 32 << 20); }   // glibc's dynamic maximum

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
  o.seed = static_cast<uint64_t>(cfg.get<int64_t>("run.seed"));
  return o;
}

pruning::GradualOptions gradual_options(const config::Config& cfg) {
  pruning::GradualOptions g;
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
  return g;
}

pruning::SparseOptions sparse_options(const config::Config& cfg) {
  pruning::SparseOptions o;
  o.method = cfg.get<std::string>("sparse.method") == "imp" ? pruning::SparseMethod::imp : pruning::SparseMethod::rpp;
  o.sparsity = cfg.get<double>("sparse.sparsity");
  o.scope = cfg.get<std::string>("sparse.scope");
  o.threshold = cfg.get<double>("sparse.threshold");
  o.targets = cfg.get<std::vector<std::string>>("sparse.targets");
  o.gamma = cfg.get<double>("sparse.gamma");
  o.epsilon = cfg.get<double>("sparse.epsilon");
  o.reweight_every = cfg.get<int64_t>("sparse.reweight_every");
  o.prune_at = cfg.get<double>("sparse.prune_at");
  o.rounds = cfg.get<int64_t>("sparse.rounds");
  return o;
}

void Pipeline::validate(const std::vector<std::string>& stages) {
  if (std::find(stages.begin(), stages.end(), "eval") != stages.end()) {   // zero-shot task files, before any work
    const auto tasks = cfg_.get<std::vector<std::string>>("eval.tasks");
    const std::string dir = tasks.empty() ? "" : eval::find_tasks_dir(cfg_.get<std::string>("eval.tasks_dir"));
    for (const std::string& name : tasks) {
      const std::string file = eval::task_file(dir, eval::task_info(name));
      SECATEUR_CHECK(fs::is_regular_file(file), "[config] eval.tasks: no file {} (eval.tasks_dir = '{}')", file, dir);
    }
  }
  const auto has = [&](const char* stage) { return std::find(stages.begin(), stages.end(), stage) != stages.end(); };
  if (has("gum")) gradual_options(cfg_).validate();
  if (has("sparse")) {
    sparse_options(cfg_).validate();
    SECATEUR_CHECK(cfg_.get<std::string>("recover.method") == "full", "[config] the sparse stage needs "
                   "'recover.method' = full (merged LoRA updates would fill the pruned weights in)");
  }
  if (!has("prune") && !has("recover") && !has("gum") && !has("sparse")) return;
  const model::ModelConfig config = io::load_config(cfg_.get<std::string>("model.path"));
  SECATEUR_CHECK(grid_.tp_size() == 1 || model::spec_of(config).hf_canonical(), "[config] pruning or recovering a "
                 "GPT-2 model needs 'parallel.tp' = 1 (its checkpoint fuses q/k/v and is written by one rank)");
  if (has("recover") || has("gum") || has("sparse")) {
    const std::string spec = cfg_.get<std::string>("recover.text");
    if (is_instruction_file(spec)) {
      SECATEUR_CHECK(fs::is_regular_file(spec), "[config] recover.text: no file {}", spec);
    } else {
      (void)text::read_text(spec, cfg_.get<std::string>("data.austen"));
    }
    const double heldout = cfg_.get<double>("recover.heldout");
    SECATEUR_CHECK(heldout >= 0 && heldout < 1, "[config] 'recover.heldout' = {} must be in [0, 1)", heldout);
  }
  if (!has("prune")) return;
  // A dry run with random scores: the same budget arithmetic, so a ratio that would empty a layer
  // is refused here, before the model is loaded or calibrated.
  pruning::PruneOptions dry = prune_options(cfg_);
  dry.criterion = pruning::Criterion::random;
  (void)pruning::decide(config, pruning::Statistics{}, dry);
}

void Pipeline::prune() {
  const pruning::PruneOptions opt = prune_options(cfg_);
  const model::ModelConfig& before = model().config();   // options and tp were checked by validate()
  // Calibration: `samples` windows of `seq_len` tokens at seeded random offsets of the text.
  const at::Tensor samples = windows("calibration", opt.seed);
  const pruning::CalibrationOptions copt = pruning::calibration_for(opt.criterion);
  rusage ru{};
  pruning::Statistics stats;
  {
    ScopedMmapThreshold own_mappings;
    stats = pruning::collect_statistics(*model_, samples, copt, &grid_.dp());
    getrusage(RUSAGE_SELF, &ru);
  }
  const pruning::Decision d = pruning::decide(before, stats, opt);
  check_one_decision(d.hash);
  const nlohmann::json dj = d.to_json(opt);
  if (writer()) io::write_file_atomic((fs::path(dir_) / "decision.json").string(), dj.dump(2) + "\n");
  std::string out = cfg_.get<std::string>("prune.out");
  if (out.empty()) out = (fs::path(dir_) / "pruned").string();
  remove_groups(d.removed, out);
  spdlog::info("pruned with {} ({} scope): {:.1f}M -> {:.1f}M parameters, {:.2f}% removed (target {:.2f}%), "
               "scoring {:.1f} s, decision {:016x} -> {}", pruning::criterion_name(opt.criterion), opt.scope,
               d.params_before / 1e6, d.params_after / 1e6, 100 * d.achieved_ratio, 100 * opt.ratio, stats.seconds,
               d.hash, out);
  record({{"stage", "prune"}, {"criterion", pruning::criterion_name(opt.criterion)}, {"scope", opt.scope},
          {"ratio_target", opt.ratio}, {"ratio_achieved", d.achieved_ratio}, {"params_before", d.params_before},
          {"params_after", d.params_after}, {"scoring_seconds", stats.seconds},
          {"peak_rss_mib_after_scoring", ru.ru_maxrss / 1024.0}, {"hash", dj["hash"]}, {"out", out}});
}

void Pipeline::check_one_decision(uint64_t hash) {
  parallel::Comm& world = grid_.world();
  SECATEUR_CHECK(world.all_reduce_min(hash) == world.all_reduce_max(hash),
                 "[pruning] ranks reached different decisions (hash {:016x} on rank {}): scores differ between ranks",
                 hash, grid_.rank());
}

std::string Pipeline::current_model_path() const {
  std::string path = cfg_.get<std::string>("model.path");
  for (const auto& m : report_.value("metrics", nlohmann::json::array())) {
    const std::string st = m.value("stage", "");
    if (st == "prune" || st == "gum" || st == "sparse" || st == "recover") path = m.value("out", path);
  }
  return path;
}

at::Tensor Pipeline::windows(const std::string& section, uint64_t seed) {
  const std::string spec = cfg_.get<std::string>(section + ".text");
  const std::vector<int32_t> ids = tokenizer().encode(text::read_text(spec, cfg_.get<std::string>("data.austen")),
                                                      /*parse_special=*/false);
  const int64_t n = cfg_.get<int64_t>(section + ".samples"), t = cfg_.get<int64_t>(section + ".seq_len");
  SECATEUR_CHECK(n > 0 && t > 1 && static_cast<int64_t>(ids.size()) > t, "[config] '{}' needs samples > 0 and "
                 "1 < seq_len < the text's {} tokens", section, ids.size());
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int64_t> start(0, static_cast<int64_t>(ids.size()) - t);
  std::vector<int64_t> flat;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t s = start(rng);
    flat.insert(flat.end(), ids.begin() + s, ids.begin() + s + t);
  }
  return at::tensor(flat, at::kLong).view({n, t});
}

void Pipeline::report() {
  (void)model();
  const at::Tensor samples = windows("report", static_cast<uint64_t>(cfg_.get<int64_t>("run.seed")));
  pruning::RedundancyOptions o;
  o.micro_batch = cfg_.get<int64_t>("report.micro_batch");
  o.ridge = cfg_.get<double>("report.ridge");
  const auto t0 = std::chrono::steady_clock::now();
  nlohmann::json r = pruning::redundancy_report(*model_, samples, o, &grid_.dp());
  const std::string label = current_model_path();
  int pass = 0;                                                // earlier reports of this run
  for (const auto& m : report_.value("metrics", nlohmann::json::array())) pass += m.value("stage", "") == "report";
  r["model"] = label;
  r["text"] = cfg_.get<std::string>("report.text");
  r["seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const std::string file = (fs::path(dir_) / (pass ? fmt::format("redundancy-{}.json", pass + 1) : "redundancy.json")).string();
  if (writer()) io::write_file_atomic(file, r.dump(2) + "\n");
  spdlog::info("redundancy of {} ({:.0f} tokens of {}): unique {:.1f}%, R2 > 0.9 {:.1f}%, sensitivity sum {:.4g}, "
               "{:.1f} s -> {}", label, r["tokens"].get<double>(), r["text"].get<std::string>(),
               100 * r["unique"].get<double>(), 100 * r["r2_above_0.9"].get<double>(),
               r["sensitivity_sum"].get<double>(), r["seconds"].get<double>(), file);
  record({{"stage", "report"}, {"model", label}, {"unique", r["unique"]}, {"r2_above_0.9", r["r2_above_0.9"]},
          {"sensitivity_sum", r["sensitivity_sum"]}, {"seconds", r["seconds"]}, {"out", file}});
}

void Pipeline::sparse() {
  (void)model();
  model::Decoder& m = *model_;
  const pruning::SparseOptions so = sparse_options(cfg_);
  Training t;
  prepare_training(t, "sparse");
  pruning::SparsePruner pruner(m, so, t.options.steps, [this](const nlohmann::json& j) { record(j); });
  t.options.hooks.after_gradients = [&](int64_t step) { pruner.after_gradients(step); };
  t.options.hooks.after_update = [&](int64_t step, double lr) { pruner.after_update(step, lr); };
  const train::TrainResult r = run_training(t);
  const nlohmann::json sp = pruner.sparsity(true);
  std::string out = cfg_.get<std::string>("sparse.out");
  if (out.empty()) out = (fs::path(dir_) / "sparse").string();
  write_current_model(out);                   // dense weights with their zeros; the masks beside them
  std::vector<std::pair<std::string, at::Tensor>> masks;
  for (size_t i = 0; i < pruner.tensors().size(); ++i) {
    const std::string& name = pruner.tensors()[i].first;
    at::Tensor mask = pruner.masks().empty() ? (*pruner.tensors()[i].second != 0) : (pruner.masks()[i] != 0);
    const model::ShardPlan::TensorSlice cut = m.plan().slice_of(name, m.config());
    if (grid_.tp_size() > 1 && cut.dim >= 0) {                    // whole tensors on TP rank 0
      const at::Tensor part = mask.to(at::kFloat).transpose(0, cut.dim).contiguous();
      mask = grid_.tp().all_gather_v(part).transpose(0, cut.dim) != 0;
    }
    masks.emplace_back(name, mask.to(at::kByte).cpu().contiguous());
  }
  if (writer()) {
    io::write_safetensors((fs::path(out) / "masks.safetensors").string(), masks, {{"format", "secateur-masks"}});
    io::write_file_atomic((fs::path(dir_) / "sparsity.json").string(), sp.dump(2) + "\n");
  }
  spdlog::info("sparse ({}, {}): {:.2f}% of the pruned matrices are zero (target {:.2f}%), {} steps in {:.1f} s -> {}",
               so.method == pruning::SparseMethod::rpp ? "rpp" : "imp", so.scope,
               100 * sp["sparsity"].get<double>(), 100 * so.sparsity, r.steps, r.seconds, out);
  record({{"stage", "sparse"}, {"method", so.method == pruning::SparseMethod::rpp ? "rpp" : "imp"},
          {"scope", so.scope}, {"threshold", so.threshold}, {"target", so.sparsity}, {"sparsity", sp["sparsity"]},
          {"layers", sp["layers"]}, {"tensors", sp["tensors"]}, {"distill", t.options.teacher != nullptr},
          {"steps", r.steps}, {"final_loss", r.last_loss}, {"seconds", r.seconds}, {"out", out}});
}

void Pipeline::remove_groups(const std::vector<pruning::Group>& removed, const std::string& out) {
  const model::ModelConfig before = model_->config();
  if (grid_.tp_size() == 1) {
    pruning::Pruned pruned = pruning::apply(before, model_->named_tensors(), removed);
    write_model(out, pruned.config, pruned.tensors, pruned.placement);
    model_.emplace(pruned.config, pruned.tensors, nullptr);
    return;
  }
  // Each TP rank slices its own shards and writes them in place; the smaller model is then loaded
  // back, sharded afresh.
  {
    pruning::Pruned pruned = pruning::apply(before, model_->named_tensors(), removed, &model_->plan());
    write_model(out, pruned.config, std::move(pruned.tensors), std::move(pruned.placement));
  }
  const at::Device device = model_->device();
  const at::ScalarType dtype = model_->dtype();
  model_.reset();
  model_.emplace(io::load_decoder(out, device, dtype, &grid_.tp()));
}

void Pipeline::write_current_model(const std::string& out) {
  model::NamedTensors weights = model_->named_tensors();
  std::vector<model::ShardPlan::TensorSlice> placement;
  for (const auto& [name, w] : weights) placement.push_back(model_->plan().slice_of(name, model_->config()));
  write_model(out, model_->config(), std::move(weights), std::move(placement));
}

void Pipeline::write_model(const std::string& out, const model::ModelConfig& config, model::NamedTensors parts,
                           std::vector<model::ShardPlan::TensorSlice> placement) {
  const at::ScalarType dtype = io::parse_dtype(cfg_.get<std::string>("convert.dtype"));
  if (grid_.tp_size() == 1) {
    if (writer()) io::save_hf_model(out, config, parts, dtype, &tokenizer());
    return;
  }
  // One DP replica writes; of it, TP rank 0 the replicated tensors.
  model::NamedTensors mine;
  std::vector<model::ShardPlan::TensorSlice> where;
  for (size_t i = 0; i < parts.size() && grid_.dp().rank() == 0; ++i) {
    if (placement[i].dim < 0 && grid_.tp().rank() != 0) continue;
    mine.push_back(std::move(parts[i]));
    where.push_back(placement[i]);
  }
  io::save_hf_model_parallel(out, config, mine, where, dtype, &tokenizer(), grid_.world());
}

void Pipeline::prepare_training(Training& t, const std::string& stage) {
  model::Decoder& m = *model_;
  train::TrainOptions& o = t.options;
  o.steps = cfg_.get<int64_t>("recover.steps");
  o.batch = cfg_.get<int64_t>("recover.batch");
  o.micro_batch = cfg_.get<int64_t>("recover.micro_batch");
  o.seq_len = cfg_.get<int64_t>("recover.seq_len");
  o.lr = cfg_.get<double>("recover.lr");
  o.weight_decay = cfg_.get<double>("recover.weight_decay");
  o.warmup_steps = cfg_.get<int64_t>("recover.warmup_steps");
  o.schedule = cfg_.get<std::string>("recover.schedule");
  o.clip = cfg_.get<double>("recover.clip");
  o.seed = static_cast<uint64_t>(cfg_.get<int64_t>("run.seed"));
  // Only recover checkpoints: the pruners' own state (scores' statistics, masks) is not saved yet.
  o.resume = cfg_.get<bool>("recover.resume");
  SECATEUR_CHECK(stage == "recover" || !o.resume, "[config] 'recover.resume' is not supported by the {} stage (its "
                 "pruning state is not checkpointed)", stage);
  if (stage == "recover") o.checkpoint_dir = (fs::path(dir_) / "checkpoints").string();
  o.save_every = cfg_.get<int64_t>("recover.save_every");
  const std::string spec = cfg_.get<std::string>("recover.text");
  const train::TrainData all =
      is_instruction_file(spec)
          ? train::instruction_data(spec, tokenizer(), o.seq_len)
          : train::TrainData(tokenizer().encode(text::read_text(spec, cfg_.get<std::string>("data.austen")),
                                                /*parse_special=*/false));
  std::tie(t.data, t.heldout) = train::split_heldout(all, o.seq_len, cfg_.get<double>("recover.heldout"));
  if (!t.heldout.tokens.empty()) o.heldout = &t.heldout;
  o.eval_every = cfg_.get<int64_t>("recover.eval_every");
  const std::string method = cfg_.get<std::string>("recover.method");
  train::LoraOptions lora;
  lora.rank = cfg_.get<int64_t>("recover.lora_rank");
  lora.alpha = cfg_.get<double>("recover.lora_alpha");
  lora.dropout = cfg_.get<double>("recover.lora_dropout");
  lora.targets = cfg_.get<std::vector<std::string>>("recover.lora_targets");
  lora.seed = o.seed;
  t.params = method == "lora" ? train::add_lora(m, lora) : train::all_weights(m);
  t.trainable = method == "lora" ? train::lora_parameter_count(m.config(), lora) : m.config().n_params();
  spdlog::info("{} ({}): {:.2f}M trainable parameters ({:.2f}% of {:.1f}M), {} steps of {} x {} tokens from {}", stage,
               method, t.trainable / 1e6, 100.0 * t.trainable / m.config().n_params(), m.config().n_params() / 1e6,
               o.steps, o.batch, o.seq_len, spec);
  if (cfg_.get<bool>("recover.distill")) {
    std::string path = cfg_.get<std::string>("recover.teacher");
    if (path.empty()) path = cfg_.get<std::string>("model.path");
    t.teacher.emplace(io::load_decoder(path, m.device(), m.dtype(), &grid_.tp()));
    o.teacher = &*t.teacher;
    o.kd_alpha = cfg_.get<double>("recover.kd_alpha");
    o.kd_temperature = cfg_.get<double>("recover.kd_temperature");
    o.kd_hidden = cfg_.get<double>("recover.kd_hidden");
    spdlog::info("distilling from {} ({:.1f}M parameters): alpha {}, temperature {}, hidden {}", path,
                 t.teacher->config().n_params() / 1e6, o.kd_alpha, o.kd_temperature, o.kd_hidden);
  }
}

train::TrainResult Pipeline::run_training(const Training& t) {
  return train::train(*model_, t.params, t.data, t.options, {&grid_.dp(), &grid_.tp(), &grid_.world()},
                      [this](const nlohmann::json& j) { record(j); });
}

void Pipeline::recover() {
  (void)model();
  model::Decoder& m = *model_;
  Training t;
  prepare_training(t, "recover");
  const std::string method = cfg_.get<std::string>("recover.method");
  // An unstructured-pruned model (masks.safetensors beside its weights, from the sparse stage)
  // keeps its zeros: masked gradients, masked weights re-zeroed after every update.
  std::vector<std::pair<at::Tensor*, at::Tensor>> keep;
  const fs::path masks_file = fs::path(current_model_path()) / "masks.safetensors";
  if (fs::is_regular_file(masks_file)) {
    SECATEUR_CHECK(method == "full", "[config] {} holds the masks of a sparse model: 'recover.method' must be full "
                   "(merged LoRA updates would fill the pruned weights in)", masks_file.string());
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
  const train::TrainResult r = run_training(t);
  if (method == "lora") train::merge_lora(m);
  std::string out = cfg_.get<std::string>("recover.out");
  if (out.empty()) out = (fs::path(dir_) / "recovered").string();
  write_current_model(out);
  spdlog::info("recovered with {}: {} steps in {:.1f} s ({:.0f} tok/s), final loss {:.4f} -> {}", method, r.steps,
               r.seconds, r.tokens_per_second, r.last_loss, out);
  nlohmann::json line = {{"stage", "recover"}, {"method", method}, {"distill", t.options.teacher != nullptr},
                         {"steps", r.steps}, {"first_step", r.first_step}, {"trainable_params", t.trainable},
                         {"final_loss", r.last_loss}, {"seconds", r.seconds},
                         {"tokens_per_second", r.tokens_per_second}, {"out", out}};
  if (!r.heldout.empty()) {
    line["heldout_ppl_before"] = std::exp(r.heldout.front().second);
    line["heldout_ppl_after"] = std::exp(r.heldout.back().second);
  }
  record(line);
}

void Pipeline::gum() {
  (void)model();
  model::Decoder& m = *model_;
  const pruning::GradualOptions g = gradual_options(cfg_);
  Training t;
  prepare_training(t, "gum");
  const int64_t params_before = m.config().n_params();
  pruning::GradualPruner pruner(m, g, t.options.steps, &grid_.dp());
  const std::vector<at::Tensor*> scores = pruner.scores();
  for (size_t l = 0; l < scores.size(); ++l) {
    t.params.push_back({fmt::format("mask_scores.{}", l), scores[l], false, true, g.mask_lr, false});
  }
  t.options.hooks.before_step = [&](int64_t step) { pruner.before_step(step); };
  t.options.hooks.after_gradients = [&](int64_t step) { pruner.after_gradients(step); };
  t.options.hooks.before_eval = [&] { pruner.before_eval(); };
  const train::TrainResult r = run_training(t);
  if (cfg_.get<std::string>("recover.method") == "lora") train::merge_lora(m);
  const std::vector<pruning::Group> removed = pruner.final_removal();
  check_one_decision(pruning::decision_hash(removed));
  const nlohmann::json summary = pruner.summary();
  if (writer()) io::write_file_atomic((fs::path(dir_) / "gum.json").string(), summary.dump(2) + "\n");
  std::string out = cfg_.get<std::string>("gum.out");
  if (out.empty()) out = (fs::path(dir_) / "pruned").string();
  remove_groups(removed, out);
  const model::ModelConfig& after = model_->config();
  spdlog::info("gum ({}, {}): kept {} of {} MLP neurons ({:.1f}%), {:.1f}M -> {:.1f}M parameters, {} steps in {:.1f} s "
               "-> {}", pruning::gradual_name(g.method), g.global ? "global" : "local", summary["kept"].get<int64_t>(),
               summary["neurons"].get<int64_t>(), 100 * summary["kept_fraction"].get<double>(), params_before / 1e6,
               after.n_params() / 1e6, r.steps, r.seconds, out);
  nlohmann::json line = {{"stage", "gum"}, {"method", pruning::gradual_name(g.method)},
                         {"ranking", g.global ? "global" : "local"}, {"distill", t.options.teacher != nullptr},
                         {"keep_target", g.keep}, {"kept_fraction", summary["kept_fraction"]},
                         {"params_before", params_before}, {"params_after", after.n_params()}, {"steps", r.steps},
                         {"final_loss", r.last_loss}, {"seconds", r.seconds}, {"tokens_per_second", r.tokens_per_second},
                         {"out", out}};
  if (!r.heldout.empty()) line["heldout_ppl_after"] = std::exp(r.heldout.back().second);
  record(line);
}

void Pipeline::generate() {
  const std::string prompt = cfg_.get<std::string>("generate.prompt");
  eval::GenerateOptions opt;
  opt.max_new_tokens = cfg_.get<int64_t>("generate.max_new_tokens");
  opt.greedy = cfg_.get<std::string>("generate.sampling") == "greedy";
  opt.top_p = cfg_.get<double>("generate.top_p");
  opt.temperature = cfg_.get<double>("generate.temperature");
  opt.seed = static_cast<uint64_t>(cfg_.get<int64_t>("run.seed"));
  opt.stop_id = model().config().eos_id;
  const auto r = eval::generate(model(), tokenizer().encode(prompt), opt);
  const std::string text = tokenizer().decode(r.ids, /*skip_special=*/true);
  spdlog::info("generated {} tokens at {:.1f} tok/s: {}{}", r.ids.size(), r.decode_tokens_per_second, prompt, text);
  record({{"stage", "generate"}, {"prompt", prompt}, {"completion", text}, {"new_tokens", r.ids.size()},
          {"decode_tokens_per_second", r.decode_tokens_per_second}});
}

void Pipeline::finish() {
  if (!writer()) return;
  io::write_file_atomic((fs::path(dir_) / "report.json").string(), report_.dump(2) + "\n");
  const std::string table = eval::zero_shot_table(report_.value("metrics", nlohmann::json::array()));
  if (!table.empty()) io::write_file_atomic((fs::path(dir_) / "report.md").string(), table);
  // The result, once more, in a few lines at the end of the log.
  std::string summary;
  for (const auto& m : report_.value("metrics", nlohmann::json::array())) {
    const std::string stage = m.value("stage", "");
    if (stage == "convert") summary += fmt::format("\n  HF checkpoint      {}", m["out"].get<std::string>());
    if (stage == "eval" && m.value("metric", "") == "zero_shot") {
      summary += fmt::format("\n  {:<18} {:.4f}  ({}, {} examples)", m["task"].get<std::string>(),
                             m["value"].get<double>(), m["reported"].get<std::string>(), m["examples"].get<int64_t>());
    } else if (stage == "eval" && m.value("metric", "") == "speed") {
      summary += fmt::format("\n  speed              prefill {:.0f} tok/s, decode {:.1f} tok/s, {:.1f}M MACs/token",
                             m["prefill_tokens_per_second"].get<double>(), m["decode_tokens_per_second"].get<double>(),
                             m["macs_per_token"].get<double>() / 1e6);
      if (m.contains("decode_speedup")) {
        summary += fmt::format(" (x{:.2f} prefill, x{:.2f} decode, x{:.2f} MACs vs the first eval)",
                               m["prefill_speedup"].get<double>(), m["decode_speedup"].get<double>(),
                               m["macs_ratio"].get<double>());
      }
    } else if (stage == "eval") {
      summary += fmt::format("\n  perplexity @{:<5}  {:.4f}  ({}, first {} tokens)", m["window"].get<int64_t>(),
                             m["ppl"].get<double>(), m["text"].get<std::string>(), m["tokens"].get<int64_t>());
    }
    if (stage == "prune") {
      summary += fmt::format("\n  pruned ({}, {})  {:.1f}M -> {:.1f}M parameters ({:.2f}% removed) -> {}",
                             m["criterion"].get<std::string>(), m["scope"].get<std::string>(),
                             m["params_before"].get<int64_t>() / 1e6, m["params_after"].get<int64_t>() / 1e6,
                             100 * m["ratio_achieved"].get<double>(), m["out"].get<std::string>());
    }
    if (stage == "gum") {
      summary += fmt::format("\n  gum ({}, {}{})  {:.1f}M -> {:.1f}M parameters, {:.1f}% of MLP neurons kept, {} steps -> {}",
                             m["method"].get<std::string>(), m["ranking"].get<std::string>(),
                             m["distill"].get<bool>() ? ", KD" : "", m["params_before"].get<int64_t>() / 1e6,
                             m["params_after"].get<int64_t>() / 1e6, 100 * m["kept_fraction"].get<double>(),
                             m["steps"].get<int64_t>(), m["out"].get<std::string>());
    }
    if (stage == "recover") {
      summary += fmt::format("\n  recovered ({})     {} steps, final loss {:.4f} -> {}", m["method"].get<std::string>(),
                             m["steps"].get<int64_t>(), m["final_loss"].get<double>(), m["out"].get<std::string>());
    }
    if (stage == "generate") summary += fmt::format("\n  generated          {}{}", m["prompt"].get<std::string>(),
                                                    m["completion"].get<std::string>());
  }
  spdlog::info("results (run directory {}: config.resolved.yaml, metrics.jsonl, report.json):{}", dir_, summary);
}

}  // namespace secateur::tools
