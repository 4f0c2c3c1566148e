// tools/secateur/pipeline.h — the stages of one run, driven by one resolved config.
// `secateur run` executes run.stages in order; each subcommand executes one stage.
#pragma once
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "runtime/config/config.h"
#include "runtime/model/decoder.h"
#include "pruning/group.h"
#include "runtime/text/tokenizer.h"
#include "runtime/train/trainer.h"

namespace secateur::parallel {
class Grid;
}

namespace secateur::tools {

// While alive, tensors of 1 MiB and more get their own mappings, returned to the system when
// freed. glibc's default (a threshold that grows to 32 MiB) lets the layer-sized temporaries of
// gradient scoring fragment the heap: the peak resident set of scoring SmolLM2 was 5.5 GiB with
// it and 2.3 GiB without (a plain forward+backward: 2.2 GiB). Not kept on for everything: it
// costs ~15% of forward speed in page faults.
class ScopedMmapThreshold {
 public:
  ScopedMmapThreshold();
  ~ScopedMmapThreshold();
};

class Pipeline {
 public:
  // fresh: start metrics.jsonl anew. Every rank runs every stage; rank 0 alone writes files.
  Pipeline(config::Config cfg, parallel::Grid& grid, bool fresh);
  void validate(const std::vector<std::string>& stages);   // their options, before any work
  void run_stage(const std::string& stage);    // convert | eval | prune | gum | sparse | recover | report | generate
  void finish();                               // writes report.json; prints the summary

 private:
  void convert();
  void eval();
  void eval_perplexity();
  void eval_tasks();
  void eval_speed();
  void generate();
  void prune();
  void gum();
  void report();
  void sparse();
  // `samples` windows of `seq_len` tokens of `text` at seeded random offsets (<section>.text, ...).
  at::Tensor windows(const std::string& section, uint64_t seed);
  void recover();
  // What recover and gum train with (recover.*). The options point into the struct: it must not move.
  struct Training {
    train::TrainOptions options;
    train::TrainData data, heldout;
    std::optional<model::Decoder> teacher;
    std::vector<train::Trainable> params;      // LoRA adapters or every weight (recover.method)
    int64_t trainable = 0;                     // their count over the whole model
  };
  void prepare_training(Training& t, const std::string& stage);
  train::TrainResult run_training(const Training& t);   // the current model, on the grid, metrics recorded
  // One decision everywhere: every rank compares the hash of the groups it removes (Error if any differs).
  void check_one_decision(uint64_t hash);
  // Removes the groups from the current model, writes it to out and continues with it.
  void remove_groups(const std::vector<pruning::Group>& removed, const std::string& out);
  // Writes the current model's parts (placed as ShardPlan::slice_of says) as the HF directory out:
  // rank 0 alone at TP = 1, every TP rank its own slices otherwise.
  void write_model(const std::string& out, const model::ModelConfig& config, model::NamedTensors parts,
                   std::vector<model::ShardPlan::TensorSlice> placement);
  void write_current_model(const std::string& out);   // the model as it is now, every rank its shards
  // The model the stages work on now: model.path, or the output of the last prune/gum/sparse/recover.
  std::string current_model_path() const;
  const model::Decoder& model();
  const text::Tokenizer& tokenizer();
  void record(const nlohmann::json& metric);   // one line of metrics.jsonl and the report

  bool writer() const;                         // rank 0 of the world

  config::Config cfg_;
  parallel::Grid& grid_;
  std::string dir_;
  std::optional<model::Decoder> model_;
  std::optional<text::Tokenizer> tokenizer_;
  nlohmann::json report_;
};

}  // namespace secateur::tools
