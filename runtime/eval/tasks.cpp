// runtime/eval/tasks.cpp — scoring zero-shot requests by log-likelihood (lm-evaluation-harness's
// protocol, runtime/eval/tasks.h), split over DP, and the per-example samples file.
#include "runtime/eval/tasks.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <numeric>

#include "parallel/collectives.h"
#include "parallel/tensor_parallel/mappings.h"
#include "runtime/core/check.h"
#include "runtime/core/progress.h"
#include "runtime/io/atomic_file.h"
#include "runtime/model/shard.h"

namespace secateur::eval {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// Length in characters (Unicode code points) of UTF-8 text, as Python's len().
int64_t characters(const std::string& s) {
  return std::count_if(s.begin(), s.end(), [](char c) { return (static_cast<unsigned char>(c) & 0xC0) != 0x80; });
}

// The metrics of every example from its choices' rows of `a` (loglik, tokens, greedy, inputs),
// the rows of example e starting at first[e].
void tally(TaskResult& r, const std::vector<Example>& examples, const double* a, const std::vector<int64_t>& first,
           bool lambada) {
  int64_t hits = 0, hits_norm = 0, hits_token = 0;
  double loglik_sum = 0.0, bpb_sum = 0.0;
  r.scores.resize(examples.size());
  for (size_t e = 0; e < examples.size(); ++e) {
    const Example& ex = examples[e];
    double best = -INFINITY, best_norm = -INFINITY, best_token = -INFINITY;
    int64_t pred = 0, pred_norm = 0, pred_token = 0;
    for (size_t c = 0; c < ex.choices.size(); ++c) {
      const double* row = a + 4 * (first[e] + static_cast<int64_t>(c));
      const Scored s{row[0], static_cast<int64_t>(row[1]), row[2] > 0.5};
      r.scores[e].push_back(s);
      r.tokens += static_cast<int64_t>(row[3]);
      const double norm = s.loglik / static_cast<double>(std::max<int64_t>(1, characters(ex.choices[c].continuation)));
      const double per_token = s.loglik / static_cast<double>(std::max<int64_t>(1, s.tokens));
      if (s.loglik > best) best = s.loglik, pred = static_cast<int64_t>(c);
      if (norm > best_norm) best_norm = norm, pred_norm = static_cast<int64_t>(c);
      if (per_token > best_token) best_token = per_token, pred_token = static_cast<int64_t>(c);
    }
    r.pred.push_back(pred);
    r.pred_norm.push_back(pred_norm);
    r.pred_token.push_back(pred_token);
    const size_t gold = ex.label >= 0 ? static_cast<size_t>(ex.label) : 0;
    bpb_sum += -r.scores[e][gold].loglik /
               (std::log(2.0) * static_cast<double>(std::max<size_t>(1, ex.choices[gold].continuation.size())));
    if (lambada) {
      hits += r.scores[e][0].greedy ? 1 : 0;
      loglik_sum += r.scores[e][0].loglik;
    } else if (ex.label >= 0) {
      hits += pred == ex.label ? 1 : 0;
      hits_norm += pred_norm == ex.label ? 1 : 0;
      hits_token += pred_token == ex.label ? 1 : 0;
    }
  }
  const double n = static_cast<double>(std::max<int64_t>(1, r.examples));
  r.acc = hits / n;
  r.acc_norm = lambada ? r.acc : hits_norm / n;
  r.acc_per_token = lambada ? r.acc : hits_token / n;
  r.bpb = bpb_sum / n;
  if (lambada) r.ppl = std::exp(-loglik_sum / n);
}

}  // namespace

std::vector<Scored> score_requests(const model::Decoder& model, const std::vector<TokenizedRequest>& requests,
                                   const ScoreOptions& options, const std::vector<int64_t>& example,
                                   Progress* progress) {
  SECATEUR_CHECK(options.batch >= 1, "[eval/tasks] batch must be at least 1, got {}", options.batch);
  SECATEUR_CHECK(options.tokens >= 0, "[eval/tasks] tokens per pass must be at least 0, got {}", options.tokens);
  SECATEUR_CHECK(example.empty() || example.size() == requests.size(),
                 "[eval/tasks] {} example ids for {} requests", example.size(), requests.size());
  if (requests.empty()) return {};                   // a DP rank without examples
  at::NoGradGuard no_grad;
  const int64_t max_len = model.config().max_positions;
  // lm-eval: (context + continuation)[-(max_len + 1):][:-1] is the input; an empty context is [eos].
  std::vector<std::vector<int64_t>> inputs(requests.size());
  std::vector<std::vector<int64_t>> targets(requests.size());   // the continuation tokens
  for (size_t i = 0; i < requests.size(); ++i) {
    const auto& [ctx, cont] = requests[i];
    SECATEUR_CHECK(!cont.empty(), "[eval/tasks] request {} has an empty continuation", i);
    SECATEUR_CHECK(static_cast<int64_t>(cont.size()) <= max_len,
                   "[eval/tasks] request {}: continuation of {} tokens is longer than the context length {}", i,
                   cont.size(), max_len);
    std::vector<int64_t> full;
    if (ctx.empty()) {
      SECATEUR_CHECK(model.config().eos_id >= 0, "[eval/tasks] request {} has an empty context and the model no eos", i);
      full.push_back(model.config().eos_id);
    }
    full.insert(full.end(), ctx.begin(), ctx.end());
    full.insert(full.end(), cont.begin(), cont.end());
    if (static_cast<int64_t>(full.size()) > max_len + 1) full.erase(full.begin(), full.end() - (max_len + 1));
    targets[i].assign(cont.begin(), cont.end());
    full.pop_back();
    inputs[i] = std::move(full);
  }
  // The requests of one example (a run of equal ids) form a group; a group of several shares the
  // common prefix of their inputs (all but the last token at most): the context, and where the
  // continuations begin alike (PIQA's two solutions often do), their common start too.
  std::vector<size_t> first = {0};                   // the group's requests: first[g] .. first[g + 1] - 1
  for (size_t i = 1; i < requests.size(); ++i) {
    if (example.empty() || example[i] != example[i - 1]) first.push_back(i);
  }
  first.push_back(requests.size());
  const size_t G = first.size() - 1;
  std::vector<int64_t> prefix(G, 0), length(G, 0);   // of each group; length: of its row, below
  for (size_t g = 0; g < G; ++g) {
    if (first[g + 1] - first[g] < 2) continue;
    int64_t& p = prefix[g] = std::numeric_limits<int64_t>::max();
    for (size_t i = first[g]; i < first[g + 1]; ++i) {
      const auto& a = inputs[i];
      const auto& b = inputs[first[g]];
      p = std::min<int64_t>(p, static_cast<int64_t>(a.size()) - 1);                  // a suffix of one token at least
      p = std::min<int64_t>(p, std::mismatch(a.begin(), a.end(), b.begin(), b.end()).first - a.begin());
    }
  }
  // One row per group: its prefix, then each request's remainder after it (a suffix), each suffix
  // at the positions it has in its full input and seeing only the prefix and itself. Rows longest
  // first (as lm-eval sorts requests), so a batch pads little.
  for (size_t g = 0; g < G; ++g) {
    length[g] = prefix[g];
    for (size_t i = first[g]; i < first[g + 1]; ++i) length[g] += static_cast<int64_t>(inputs[i].size()) - prefix[g];
  }
  std::vector<size_t> order(G);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return length[a] > length[b]; });
  const at::Device dev = model.device();
  const at::Tensor head = model.head_weight();       // [V_local, d]: this rank's vocabulary shard
  std::vector<Scored> out(requests.size());
  size_t next = 0;                                   // the first row of the next batch
  for (size_t b0 = 0; b0 < G; b0 = next) {
    // Rows while the batch keeps within options.batch requests and options.tokens tokens (padding
    // included); one row at least.
    int64_t count = 0;
    for (next = b0; next < G; ++next) {
      const int64_t g = order[next], more = count + static_cast<int64_t>(first[g + 1] - first[g]);
      const int64_t tokens = static_cast<int64_t>(next - b0 + 1) * length[order[b0]];
      if (next > b0 && (more > options.batch || (options.tokens > 0 && tokens > options.tokens))) break;
      count = more;
    }
    const int64_t n = static_cast<int64_t>(next - b0), T = length[order[b0]];
    // Every row one request whole: plain causal rows from position 0, no mask needed.
    const bool plain = std::all_of(order.begin() + b0, order.begin() + next,
                                   [&](size_t g) { return first[g + 1] - first[g] == 1; });
    std::vector<int64_t> ids(n * T, 0), positions(n * T, 0), pos, tgt;
    at::Tensor mask = at::zeros({plain ? 0 : n, 1, T, T}, at::kBool);
    bool* m = plain ? nullptr : mask.data_ptr<bool>();
    std::vector<size_t> scored;                      // the requests of the batch, in the order of pos
    for (int64_t r = 0; r < n; ++r) {
      const size_t g = order[b0 + r];
      const int64_t P = prefix[g];
      int64_t* row_ids = ids.data() + r * T;
      int64_t* row_pos = positions.data() + r * T;
      bool* row_mask = plain ? nullptr : m + r * T * T;
      std::copy_n(inputs[first[g]].begin(), P, row_ids);
      for (int64_t t = 0; t < P; ++t) {              // (P = 0 when plain)
        row_pos[t] = t;
        std::fill_n(row_mask + t * T, t + 1, true);
      }
      int64_t o = P;                                 // where the next suffix starts in the row
      for (size_t i = first[g]; i < first[g + 1]; ++i) {
        const auto& in = inputs[i];
        const int64_t L = static_cast<int64_t>(in.size()), C = static_cast<int64_t>(targets[i].size());
        std::copy(in.begin() + P, in.end(), row_ids + o);
        for (int64_t t = o; t < o + L - P; ++t) {
          row_pos[t] = P + t - o;
          if (plain) continue;
          std::fill_n(row_mask + t * T, P, true);
          std::fill_n(row_mask + t * T + o, t - o + 1, true);
        }
        for (int64_t j = 0; j < C; ++j) {            // the position predicting cont[j]: in the prefix, or in the suffix
          const int64_t q = L - C + j;
          pos.push_back(r * T + (q < P ? q : o + q - P));
        }
        tgt.insert(tgt.end(), targets[i].begin(), targets[i].end());
        scored.push_back(i);
        o += L - P;
      }
      for (int64_t t = o; t < T && !plain; ++t) row_mask[t * T + t] = true;   // padding sees itself only
    }
    const at::Tensor x = at::tensor(ids, at::kLong).view({n, T}).to(dev);   // [n, T]
    at::Tensor h;                                                           // [n, T, d]
    if (plain) {
      h = model.hidden_states(x);
    } else {
      const model::Layout layout{at::tensor(positions, at::kLong).view({n, T}).to(dev), mask.to(dev)};
      h = model.hidden_states(x, nullptr, &layout);
    }
    const at::Tensor picked = h.reshape({-1, h.size(-1)}).index_select(0, at::tensor(pos, at::kLong).to(dev));
    const at::Tensor target = at::tensor(tgt, at::kLong).to(dev);                                // [N]
    std::vector<at::Tensor> logp_parts, greedy_parts;
    for (int64_t k0 = 0; k0 < picked.size(0); k0 += 256) {   // at most [256, V] logits at a time
      const int64_t k = std::min<int64_t>(256, picked.size(0) - k0);
      const at::Tensor logits =
          parallel::gather_last_dim(at::linear(picked.narrow(0, k0, k), head), model.tp()).to(at::kFloat);   // [k, V]
      const at::Tensor t = target.narrow(0, k0, k);
      logp_parts.push_back(logits.gather(1, t.unsqueeze(1)).squeeze(1) - at::logsumexp(logits, -1));
      greedy_parts.push_back(logits.argmax(-1).eq(t));
    }
    const at::Tensor logp_cpu = at::cat(logp_parts).to(at::kCPU, at::kDouble).contiguous();   // [N]
    const at::Tensor greedy_cpu = at::cat(greedy_parts).to(at::kCPU).contiguous();           // [N]
    const double* lp = logp_cpu.data_ptr<double>();
    const bool* g = greedy_cpu.data_ptr<bool>();
    int64_t k = 0;
    for (const size_t i : scored) {
      Scored& s = out[i];
      s.tokens = static_cast<int64_t>(targets[i].size());
      s.greedy = true;
      for (int64_t j = 0; j < s.tokens; ++j, ++k) {
        s.loglik += lp[k];
        s.greedy = s.greedy && g[k];
      }
    }
    if (progress) progress->add(static_cast<int64_t>(scored.size()));
  }
  return out;
}

TaskResult evaluate_task(const model::Decoder& model, const text::Tokenizer& tokenizer, const TaskInfo& task,
                         const std::vector<Example>& examples, const ScoreOptions& options, parallel::Comm* dp) {
  const auto t0 = std::chrono::steady_clock::now();
  const bool lambada = task.name == "lambada";
  TaskResult r;
  r.task = task.name;
  r.metric = task.metric;
  r.examples = static_cast<int64_t>(examples.size());
  std::vector<int64_t> first(examples.size() + 1, 0);              // first request of each example
  for (size_t e = 0; e < examples.size(); ++e) {
    SECATEUR_CHECK(lambada || !task.choice() || examples[e].label >= 0,
                   "[eval/tasks] {}: doc_id {} (line {}) has no integer label", task.name, examples[e].doc_id,
                   examples[e].line);
    first[e + 1] = first[e] + static_cast<int64_t>(examples[e].choices.size());
  }
  r.requests = first.back();
  // This DP rank's examples, tokenized as lm-eval does: context and continuation apart.
  const parallel::Range mine = parallel::dp_share(r.examples, dp);
  std::vector<TokenizedRequest> requests;
  std::vector<int64_t> example;                                     // of each request
  for (int64_t e = mine.begin; e < mine.end; ++e) {
    const std::string* context = nullptr;                          // the choices' contexts are mostly one
    for (const Request& q : examples[e].choices) {
      std::vector<int32_t> ids = context && *context == q.context ? requests.back().first : tokenizer.encode(q.context);
      requests.emplace_back(std::move(ids), tokenizer.encode(q.continuation));
      context = &q.context;
      example.push_back(e);
    }
  }
  Progress progress(task.name, static_cast<int64_t>(requests.size()), "req");
  if (!options.shared_prefix) example.clear();
  const std::vector<Scored> scored = score_requests(model, requests, options, example, &progress);
  progress.finish();
  // Every request's (loglik, tokens, greedy, input tokens) on every rank: zeros elsewhere, summed over DP.
  at::Tensor all = at::zeros({r.requests, 4}, at::kDouble);
  double* a = all.data_ptr<double>();
  for (size_t i = 0; i < scored.size(); ++i) {
    double* row = a + 4 * (first[mine.begin] + static_cast<int64_t>(i));
    row[0] = scored[i].loglik;
    row[1] = static_cast<double>(scored[i].tokens);
    row[2] = scored[i].greedy ? 1.0 : 0.0;
    row[3] = static_cast<double>(requests[i].first.size() + requests[i].second.size()) - 1;
  }
  parallel::sum(dp, all);
  tally(r, examples, a, first, lambada);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

double TaskResult::value() const {
  if (metric == "acc_norm") return acc_norm;
  if (metric == "acc_per_token") return acc_per_token;
  if (metric == "bpb") return bpb;
  return acc;
}

void write_samples(const std::string& path, const std::vector<Example>& examples, const TaskResult& r) {
  std::string text;
  for (size_t e = 0; e < examples.size(); ++e) {
    json choices = json::array();
    for (const Scored& s : r.scores[e]) {
      choices.push_back({{"loglik", s.loglik}, {"tokens", s.tokens}, {"greedy", s.greedy}});
    }
    text += json{{"doc_id", examples[e].doc_id}, {"label", examples[e].label}, {"pred", r.pred[e]},
                 {"pred_norm", r.pred_norm[e]}, {"pred_token", r.pred_token[e]}, {"choices", choices}}.dump() + "\n";
  }
  fs::create_directories(fs::path(path).parent_path());
  io::write_file_atomic(path, text);
}

}  // namespace secateur::eval
