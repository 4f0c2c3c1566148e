#include "tools/secateur/run.h"

#include <ATen/ATen.h>
#include <malloc.h>
#include <sys/resource.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>

#include "parallel/collectives.h"
#include "parallel/grid.h"
#include "pruning/apply.h"
#include "runtime/core/check.h"
#include "runtime/core/log.h"
#include "runtime/core/phase.h"
#include "runtime/eval/tasks.h"
#include "runtime/io/atomic_file.h"
#include "runtime/io/checkpoint.h"
#include "runtime/text/source.h"

namespace secateur::tools {

namespace fs = std::filesystem;

#ifdef SECATEUR_WITH_JEMALLOC
ScopedMmapThreshold::ScopedMmapThreshold() = default;
ScopedMmapThreshold::~ScopedMmapThreshold() = default;
#else
ScopedMmapThreshold::ScopedMmapThreshold() { mallopt(M_MMAP_THRESHOLD, 1 << 20); }
ScopedMmapThreshold::~ScopedMmapThreshold() { mallopt(M_MMAP_THRESHOLD, 32 << 20); }   // glibc's dynamic maximum
#endif

Run::Run(config::Config cfg, parallel::Grid& grid, bool fresh)
    : cfg_(std::move(cfg)), grid_(grid), dir_(cfg_.get<std::string>("run.dir")),
      model_path_(cfg_.get<std::string>("model.path")) {
  if (writer()) {
    fs::create_directories(dir_);
    if (fresh) fs::remove(fs::path(dir_) / "metrics.jsonl");
    cfg_.write(path("config.resolved.yaml"));
  }
}

std::string Run::path(const std::string& name) const { return (fs::path(dir_) / name).string(); }

std::string Run::out_dir(const std::string& key, const std::string& fallback) const {
  const std::string out = cfg_.get<std::string>(key);
  return out.empty() ? path(fallback) : out;
}

bool Run::writer() const { return grid_.rank() == 0; }

model::Decoder& Run::model() {
  if (!model_) {
    Phase load("load");
    const at::Device device(cfg_.get<std::string>("model.device") == "cuda" ? at::kCUDA : at::kCPU);
    model_.emplace(io::load_decoder(model_path_, device, io::parse_dtype(cfg_.get<std::string>("model.dtype")),
                                    &grid_.tp()));
    const auto& c = model_->config();
    spdlog::info("model {}: {} layers, d={}, heads {}/{} kv, d_ff {}, vocab {}, {:.1f}M parameters, {} on {}, tp {}",
                 model_path_, c.n_layers(), c.hidden, c.n_heads[0], c.n_kv_heads[0], c.d_ff[0], c.vocab_size,
                 c.n_params() / 1e6, cfg_.get<std::string>("model.dtype"), device.str(), grid_.tp_size());
    // Peak resident memory of every rank after loading its shard (ru_maxrss, MiB), in rank order.
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    const std::vector<double> per_rank = parallel::gather_values(grid_.world(), ru.ru_maxrss / 1024.0);
    spdlog::info("peak RSS per rank after loading (MiB): {:.0f}", fmt::join(per_rank, ", "));
    record({{"stage", "load"}, {"model", model_path_}, {"tp", grid_.tp_size()}, {"dp", grid_.dp_size()},
            {"peak_rss_mib_per_rank", per_rank}});
  }
  return *model_;
}

const text::Tokenizer& Run::tokenizer() {
  if (!tokenizer_) {
    Phase load("load");
    tokenizer_.emplace(io::load_tokenizer(cfg_.get<std::string>("model.path")));
  }
  return *tokenizer_;
}

const model::ModelConfig& Run::input_config() {
  if (!input_config_) input_config_ = io::load_config(cfg_.get<std::string>("model.path"));
  return *input_config_;
}

void Run::record(const nlohmann::json& metric) {
  if (!writer()) return;
  std::ofstream out(path("metrics.jsonl"), std::ios::app);
  out << metric.dump() << "\n";
  metrics_.push_back(metric);
}

void Run::record_phases(const std::string& stage, size_t mark) {
  std::map<std::string, double> own = own_seconds_since(mark);
  const std::string whole = stage_span(stage);
  nlohmann::json phases = nlohmann::json::object();
  for (const auto& [name, seconds] : own) {
    if (name != whole) phases[name] = seconds;
  }
  phases["other"] = own[whole];
  record({{"stage", "timing"}, {"of", stage}, {"seconds", spans().back().seconds}, {"phases", phases}});
}

int Run::pass(const std::string& what) { return passes_[what]++; }

void Run::check_writable(const char* what) {
  SECATEUR_CHECK(grid_.tp_size() == 1 || model::spec_of(input_config()).hf_canonical(), "[config] {} a {} model "
                 "needs 'parallel.tp' = 1 (its checkpoint fuses q/k/v and is written by one rank)", what,
                 model::spec_of(input_config()).name);
}

void Run::check_one_decision(uint64_t hash) {
  SECATEUR_CHECK(parallel::agree(grid_.world(), hash),
                 "[pruning] ranks reached different decisions (hash {:016x} on rank {}): scores differ between ranks",
                 hash, grid_.rank());
}

std::vector<int32_t> Run::encode_text(const std::string& spec) {
  Phase tokenize("tokenize");                // a first load of the tokenizer inside it is timed as load
  return tokenizer().encode(text::read_text(spec, cfg_.get<std::string>("data.austen")), /*parse_special=*/false);
}

at::Tensor Run::windows(const std::string& section, uint64_t seed) {
  const int64_t n = cfg_.get<int64_t>(section + ".samples"), t = cfg_.get<int64_t>(section + ".seq_len");
  SECATEUR_CHECK(n > 0 && t > 1, "[config] '{}' needs samples > 0 and seq_len > 1", section);
  // <section>.text, or the texts of calibration.mixture, each its share of the windows, in order.
  const YAML::Node mix = cfg_.root()[section]["mixture"];
  const std::vector<std::string> entries = mix ? mix.as<std::vector<std::string>>() : std::vector<std::string>{};
  std::vector<text::Share> shares = text::parse_mixture(entries, section + ".mixture");
  if (shares.empty()) shares.push_back({cfg_.get<std::string>(section + ".text"), 1.0});
  const std::vector<int64_t> counts = text::window_counts(shares, n, section + ".mixture");
  std::mt19937_64 rng(seed);
  std::vector<int64_t> flat;
  for (size_t k = 0; k < shares.size(); ++k) {
    const std::vector<int32_t> ids = encode_text(shares[k].source);
    SECATEUR_CHECK(static_cast<int64_t>(ids.size()) > t, "[config] '{}': {} has {} tokens, not more than seq_len {}",
                   section, shares[k].source, ids.size(), t);
    std::uniform_int_distribution<int64_t> start(0, static_cast<int64_t>(ids.size()) - t);
    for (int64_t i = 0; i < counts[k]; ++i) {
      const int64_t s = start(rng);
      flat.insert(flat.end(), ids.begin() + s, ids.begin() + s + t);
    }
  }
  return at::tensor(flat, at::kLong).view({n, t});
}

void Run::remove_groups(const std::vector<pruning::Group>& removed, const std::string& out,
                        const Compensating* compensate) {
  const model::ShardPlan* plan = grid_.tp_size() == 1 ? nullptr : &model().plan();
  pruning::Compensated dense{model().config(), model_->named_tensors(), removed};
  const at::Device device = model_->device();
  const at::ScalarType dtype = model_->dtype();
  // The dense weights live on only in dense.tensors, which apply releases as it cuts each one:
  // the dense and the pruned model are never held whole at once.
  std::optional<model::ShardPlan> own_plan;
  if (plan) plan = &own_plan.emplace(*plan);
  model_.reset();
  if (compensate) {
    Phase phase("compensate");
    dense = pruning::compensate(dense.config, dense.tensors, removed, compensate->stats, compensate->how,
                                compensate->ridge, plan, grid_.tp());
  }
  const model::ModelConfig& before = dense.config;
  if (grid_.tp_size() == 1) {
    pruning::Pruned pruned = [&] {
      Phase apply("apply");
      return pruning::apply(before, std::move(dense.tensors), dense.remove);
    }();
    write_model(out, pruned.config, pruned.tensors, pruned.placement);
    model_.emplace(pruned.config, pruned.tensors);
  } else {
    // Each TP rank slices its own shards and writes them in place; the smaller model is then
    // loaded back, sharded afresh.
    {
      pruning::Pruned pruned = [&] {
        Phase apply("apply");
        return pruning::apply(before, std::move(dense.tensors), dense.remove, plan);
      }();
      write_model(out, pruned.config, std::move(pruned.tensors), std::move(pruned.placement));
    }
    Phase load("load");
    model_.emplace(io::load_decoder(out, device, dtype, &grid_.tp()));
  }
  model_path_ = out;
}

at::ScalarType Run::export_dtype() const {
  const std::string d = cfg_.get<std::string>("convert.dtype");
  return io::parse_dtype(d == "auto" ? cfg_.get<std::string>("model.dtype") : d);
}

void Run::write_current_model(const std::string& out) {
  model::NamedTensors weights = model().named_tensors();
  std::vector<model::Slice> placement;
  for (const auto& [name, w] : weights) placement.push_back(model_->plan().slice_of(name, model_->config()));
  write_model(out, model_->config(), std::move(weights), std::move(placement));
  model_path_ = out;
}

// The model's parts (placed as ShardPlan::slice_of says) as the HF directory out: rank 0 alone at
// TP = 1, every TP rank its own slices otherwise.
void Run::write_model(const std::string& out, const model::ModelConfig& config, model::NamedTensors parts,
                      std::vector<model::Slice> placement) {
  Phase save("export");
  const at::ScalarType dtype = export_dtype();
  if (grid_.tp_size() == 1) {
    if (writer()) io::save_hf_model(out, config, parts, dtype, &tokenizer());
    return;
  }
  // One DP replica writes; of it, TP rank 0 the replicated tensors.
  model::NamedTensors mine;
  std::vector<model::Slice> where;
  for (size_t i = 0; i < parts.size() && grid_.dp().rank() == 0; ++i) {
    if (placement[i].dim < 0 && grid_.tp().rank() != 0) continue;
    mine.push_back(std::move(parts[i]));
    where.push_back(placement[i]);
  }
  io::save_hf_model_parallel(out, config, mine, where, dtype, &tokenizer(), grid_.world());
}

namespace {

// "  time (prune)       9.3 s: calibrate 5.9, export 1.2, ..." — the phases of a stage, longest first.
std::string timing_line(const nlohmann::json& m) {
  std::vector<std::pair<double, std::string>> phases;
  for (const auto& [name, seconds] : m["phases"].items()) {
    if (seconds.get<double>() >= 0.05) phases.emplace_back(-seconds.get<double>(), name);
  }
  std::sort(phases.begin(), phases.end());
  std::string line = fmt::format("\n  {:<18} {:.1f} s", "time (" + m["of"].get<std::string>() + ")", m["seconds"].get<double>());
  for (size_t i = 0; i < phases.size(); ++i) line += fmt::format("{} {} {:.1f}", i ? "," : ":", phases[i].second, -phases[i].first);
  return line;
}

}  // namespace

void Run::finish() {
  const std::string profile = cfg_.get<std::string>("run.profile");
  if (!profile.empty()) {   // every rank its own trace: rank 0 the file named, rank k <stem>.rank<k><ext>
    fs::path p(profile);
    if (grid_.rank() > 0) p.replace_filename(fmt::format("{}.rank{}{}", p.stem().string(), grid_.rank(), p.extension().string()));
    if (p.has_parent_path()) fs::create_directories(p.parent_path());
    io::write_file_atomic(p.string(), trace_json(grid_.rank()));
    if (writer()) spdlog::info("profile: {} (chrome://tracing or ui.perfetto.dev)", p.string());
  }
  if (!writer()) return;
  const nlohmann::json report = {{"config", cfg_.source()}, {"model", cfg_.get<std::string>("model.path")},
                                 {"metrics", metrics_}};
  io::write_file_atomic(path("report.json"), report.dump(2) + "\n");
  const std::string table = eval::zero_shot_table(metrics_);
  if (!table.empty()) io::write_file_atomic(path("report.md"), table);
  // The result, once more, in a few lines at the end of the log.
  std::string summary;
  for (const auto& m : metrics_) {
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
    if (stage == "timing") summary += timing_line(m);
  }
  spdlog::info("results (run directory {}: config.resolved.yaml, metrics.jsonl, report.json):{}", dir_, summary);
}

}  // namespace secateur::tools
