// tools/secateur/run.h — one run: its resolved config, its grid, its directory, and the state
// the stages hand on to each other (the current model and where it lives, the records so far).
// Every rank holds one; rank 0 alone writes files.
#pragma once
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "pruning/compensate.h"
#include "pruning/group.h"
#include "runtime/config/config.h"
#include "runtime/model/decoder.h"
#include "runtime/text/tokenizer.h"

namespace secateur::parallel {
class Grid;
}

namespace secateur::tools {

// Built without jemalloc (SECATEUR_WITH_JEMALLOC=OFF), glibc's malloc serves the tensors: while
// this is alive, tensors of 1 MiB and more get their own mappings, returned to the system when
// freed. glibc's default (a threshold that grows to 32 MiB) lets the layer-sized temporaries of
// gradient scoring fragment the heap: the peak resident set of scoring SmolLM2 was 5.5 GiB with
// it and 2.3 GiB without (a plain forward+backward: 2.2 GiB), at the price of fresh zeroed pages
// for every such tensor (3.7 M page faults, 8 s of system time). jemalloc reuses freed memory
// without either cost (2.2 GiB, 7.2 s for the whole prune instead of 9.4-11 s), and this does nothing.
class ScopedMmapThreshold {
 public:
  ScopedMmapThreshold();
  ~ScopedMmapThreshold();
};

class Run {
 public:
  // fresh: start metrics.jsonl anew.
  Run(config::Config cfg, parallel::Grid& grid, bool fresh);

  const config::Config& cfg() const { return cfg_; }
  parallel::Grid& grid() { return grid_; }
  const std::string& dir() const { return dir_; }
  std::string path(const std::string& name) const;   // <run.dir>/name
  // A stage's output directory: its config key, or <run.dir>/fallback when that is "".
  std::string out_dir(const std::string& key, const std::string& fallback) const;
  bool writer() const;                                 // rank 0 of the world

  // The model the stages work on now: model.path, then the output of the last prune, gum,
  // sparse or recover stage. Loaded (this rank's shard) on first use.
  const std::string& model_path() const { return model_path_; }
  model::Decoder& model();
  const text::Tokenizer& tokenizer();
  // The config of model.path, for checks before any work (the weights are not read).
  const model::ModelConfig& input_config();

  // Removes the groups from the current model, writes it to out and continues with it; with a
  // compensation, what the removed inputs did goes to what stays first (pruning/compensate.h).
  struct Compensating {
    const pruning::Statistics& stats;
    pruning::Compensation how;
    double ridge;
  };
  void remove_groups(const std::vector<pruning::Group>& removed, const std::string& out,
                     const Compensating* compensate = nullptr);
  // Writes the current model as the HF directory out (every TP rank its own slices) and continues with it there.
  void write_current_model(const std::string& out);
  // The dtype checkpoints are written in: convert.dtype, or model.dtype when it is auto.
  at::ScalarType export_dtype() const;
  // A stage that writes a model at TP > 1 needs an architecture whose checkpoint every TP rank can
  // write its slices of (GPT-2's fuses q/k/v): Error naming parallel.tp otherwise.
  void check_writable(const char* what);
  // One decision everywhere: every rank compares the hash of the groups it removes (Error if any differs).
  void check_one_decision(uint64_t hash);

  // `samples` windows of `seq_len` tokens of `<section>.text` at seeded random offsets: [samples, seq_len].
  at::Tensor windows(const std::string& section, uint64_t seed);
  std::vector<int32_t> encode_text(const std::string& spec);   // austen:<novel> or a UTF-8 file, no special tokens

  // One line of metrics.jsonl and of report.json.
  void record(const nlohmann::json& metric);
  // The "timing" record of the stage whose span ("stage <name>") closed last: its wall time and the
  // own time of every phase closed since `mark` (runtime/core/phase.h), the rest as "other".
  void record_phases(const std::string& stage, size_t mark);
  static std::string stage_span(const std::string& stage) { return "stage " + stage; }
  const nlohmann::json& metrics() const { return metrics_; }
  // How many times `what` ran before in this run (0 the first time): names repeated outputs.
  int pass(const std::string& what);
  // The first speed measured in this run (the baseline of speed-ups), if any.
  std::optional<nlohmann::json> first_speed;

  void finish();   // report.json, report.md, the summary in the log

 private:
  void write_model(const std::string& out, const model::ModelConfig& config, model::NamedTensors parts,
                   std::vector<model::Slice> placement);

  config::Config cfg_;
  parallel::Grid& grid_;
  std::string dir_, model_path_;
  std::optional<model::Decoder> model_;
  std::optional<text::Tokenizer> tokenizer_;
  std::optional<model::ModelConfig> input_config_;
  nlohmann::json metrics_ = nlohmann::json::array();
  std::map<std::string, int> passes_;
};

}  // namespace secateur::tools
