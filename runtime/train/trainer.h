// runtime/train/trainer.h — recovery training on the DP × TP grid: AdamW (decoupled weight
// decay), linear warm-up then cosine / linear / constant, gradient clipping by the global norm,
// gradient accumulation over micro-batches, gradients summed over DP in buckets; loss, tokens/s
// and ETA on rank 0, one metrics line per step.
//
// Works for LoRA and full fine-tuning alike: `params` says what trains.
//
// Data (runtime/train/data.h): sequences of seq_len tokens; every epoch visits them in a seeded
// order, `batch` sequences a step (the global batch), each DP rank taking its share. The loss is
// the mean over the global batch's targets (every rank counts them), so DP = 1 and DP = 2 train
// alike. With a held-out set, its mean loss and perplexity are measured before the first step,
// every eval_every steps and after the last (DP ranks split its sequences).
//
// Checkpoints: <dir>/step-NNNNNN, written into "<name>.partial": each TP rank's trainable tensors
// (written by DP rank 0), each rank's optimiser state, then — after every rank is done — a DONE
// marker, and the rename. Dropout masks are drawn from generators seeded by (seed, step), and the
// data order by (seed, epoch), so a step's inputs depend on nothing else: the state to resume is
// the trainable tensors, the optimiser moments and the step. resume takes the newest complete
// checkpoint (DONE and every file whole), skipping incomplete ones, and refuses to start if
// checkpoints exist and none is complete. A training-time pruner's own state (statistics, masks,
// reweighting) travels in the same checkpoint, one file per rank (TrainHooks::save_state).
#pragma once
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "runtime/model/decoder.h"
#include "runtime/train/data.h"
#include "runtime/train/lora.h"

namespace secateur::parallel {
class Comm;
}

namespace secateur::train {

// Where a training-time pruner (pruning/movement.h) joins the loop; every hook runs on every rank.
struct TrainHooks {
  std::function<void(int64_t step)> before_step;       // before the step's first forward
  std::function<void(int64_t step)> after_gradients;   // gradients summed over DP and TP, before clipping
  std::function<void(int64_t step, double lr)> after_update;   // after the optimiser step (no grad mode)
  std::function<void()> before_eval;                   // before a held-out evaluation
  // The pruner's state on this rank, checkpointed with the trainables (state-rank<r>.safetensors)
  // and handed back on resume, before the first step run.
  std::function<model::NamedTensors()> save_state;
  std::function<void(const model::NamedTensors&)> load_state;
};

struct TrainOptions {
  int64_t steps = 20;
  int64_t batch = 8;            // sequences per step, all DP ranks together
  int64_t micro_batch = 4;      // sequences per forward/backward on one rank
  int64_t seq_len = 128;
  double lr = 1e-4;
  double weight_decay = 0.0;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  int64_t warmup_steps = 0;
  std::string schedule = "cosine";   // cosine | linear | constant (after warm-up, down to 0)
  double clip = 1.0;                 // max global gradient norm; 0 = off
  uint64_t seed = 0;
  std::string checkpoint_dir;        // "" = no checkpoints
  int64_t save_every = 0;            // steps; 0 = only at the end
  bool resume = false;
  // Knowledge distillation (GUM's defaults: alpha 0.5, T 2): a teacher sharded on the same grid,
  // run without gradients; the loss becomes alpha·T²·KL(teacher ‖ student) + (1 − alpha)·CE.
  // kd_hidden adds kd_hidden · MSE of the final hidden states (Decoder::Distill::hidden_weight).
  const model::Decoder* teacher = nullptr;
  double kd_alpha = 0.5, kd_temperature = 2.0, kd_hidden = 0.0;
  const TrainData* heldout = nullptr;
  int64_t eval_every = 0;            // steps between held-out evaluations; 0 = before and after only
  TrainHooks hooks;
};

struct Grid3 {
  parallel::Comm* dp = nullptr;      // null = one rank
  parallel::Comm* tp = nullptr;
  parallel::Comm* world = nullptr;
};

struct TrainResult {
  int64_t steps = 0, first_step = 0;   // first_step > 0 after a resume
  double last_loss = 0, seconds = 0, tokens_per_second = 0;
  std::vector<double> losses;          // per step run here
  std::vector<std::pair<int64_t, double>> heldout;   // (steps done, mean held-out loss)
};

// Mean loss of `data`'s targets (no distillation), DP ranks splitting the sequences.
double heldout_loss(const model::Decoder& model, const TrainData& data, int64_t seq_len, int64_t micro_batch,
                    const Grid3& grid);

// lr at step s (0-based) of n.
double learning_rate(const TrainOptions& opt, int64_t step);

// Trains `params` of `model` on `data` (the same on every rank). `metric` receives one JSON line
// per step on every rank (the caller writes rank 0's).
TrainResult train(model::Decoder& model, const std::vector<Trainable>& params, const TrainData& data,
                  const TrainOptions& opt, const Grid3& grid,
                  const std::function<void(const nlohmann::json&)>& metric = nullptr);

}  // namespace secateur::train
