// tools/secateur/stages/training.h — what the recover, gum and sparse stages train with
// (recover.*): the options, the text (or instruction data) and its held-out split, the teacher of
// distillation, and the trainable tensors (LoRA adapters or every weight).
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "runtime/train/data.h"
#include "runtime/train/lora.h"
#include "runtime/train/trainer.h"
#include "tools/secateur/run.h"

namespace secateur::tools {

struct Training {
  // The options point into the struct: it must not move.
  Training() = default;
  Training(const Training&) = delete;
  Training& operator=(const Training&) = delete;

  std::string method;                        // recover.method: lora | full
  train::TrainOptions options;
  train::TrainData data, heldout;
  std::optional<model::Decoder> teacher;
  std::vector<train::Trainable> params;      // LoRA adapters or every weight
  int64_t trainable = 0;                     // their count over the whole model
};

// The training text, its held-out fraction and resume, checked before any work.
void validate_training(Run& r, const std::string& stage);

// Sets up t on the current model for `stage` (only recover checkpoints and resumes).
void prepare_training(Run& r, Training& t, const std::string& stage);

// Trains the current model on the grid; every metric is recorded.
train::TrainResult run_training(Run& r, const Training& t);

}  // namespace secateur::tools
