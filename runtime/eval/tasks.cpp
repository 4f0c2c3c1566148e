// runtime/eval/tasks.cpp — scoring zero-shot requests by log-likelihood (lm-evaluation-harness's
// protocol, runtime/eval/tasks.h), split over DP, and the per-example samples file.
#include "runtime/eval/tasks.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
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

std::vector<Scored> score_requests(const model::Decoder& model,
                                   const std::vector<std::pair<std::vector<int32_t>, std::vector<int32_t>>>& requests,
                                   int64_t batch, Progress* progress) {
  SECATEUR_CHECK(batch >= 1, "[eval/tasks] batch must be at least 1, got {}", batch);
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
  // Longest first (as lm-eval), so a batch pads little.
  std::vector<size_t> order(requests.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return inputs[a].size() > inputs[b].size(); });
  const at::Tensor head = model.head_weight();       // [V_local, d]: this rank's vocabulary shard
  std::vector<Scored> out(requests.size());
  for (size_t b0 = 0; b0 < order.size(); b0 += batch) {
    const size_t n = std::min<size_t>(batch, order.size() - b0);
    const int64_t T = static_cast<int64_t>(inputs[order[b0]].size());
    std::vector<int64_t> ids(n * T, 0), pos, tgt;    // right padding: the model is causal
    int64_t scored_tokens = 0;
    for (size_t r = 0; r < n; ++r) {
      const auto& in = inputs[order[b0 + r]];
      const auto& cont = targets[order[b0 + r]];
      std::copy(in.begin(), in.end(), ids.begin() + r * T);
      const int64_t L = static_cast<int64_t>(in.size()), C = static_cast<int64_t>(cont.size());
      for (int64_t j = 0; j < C; ++j) pos.push_back(r * T + L - C + j);   // the position predicting cont[j]
      tgt.insert(tgt.end(), cont.begin(), cont.end());
      scored_tokens += L;
    }
    const at::Device dev = model.device();
    const at::Tensor x = at::tensor(ids, at::kLong).view({static_cast<int64_t>(n), T}).to(dev);   // [B, T]
    const at::Tensor h = model.hidden_states(x);                                                  // [B, T, d]
    const at::Tensor picked = h.reshape({-1, h.size(-1)}).index_select(0, at::tensor(pos, at::kLong).to(dev));
    const at::Tensor target = at::tensor(tgt, at::kLong).to(dev);                                // [N]
    std::vector<at::Tensor> logp_parts, greedy_parts;
    for (int64_t k0 = 0; k0 < picked.size(0); k0 += 1024) {   // at most [1024, V] logits at a time
      const int64_t k = std::min<int64_t>(1024, picked.size(0) - k0);
      const at::Tensor logits =
          parallel::gather_last_dim(at::linear(picked.narrow(0, k0, k), head), model.tp()).to(at::kFloat);   // [k, V]
      const at::Tensor t = target.narrow(0, k0, k);
      logp_parts.push_back(at::log_softmax(logits, -1).gather(1, t.unsqueeze(1)).squeeze(1));
      greedy_parts.push_back(logits.argmax(-1).eq(t));
    }
    const at::Tensor logp_cpu = at::cat(logp_parts).to(at::kCPU, at::kDouble).contiguous();   // [N]
    const at::Tensor greedy_cpu = at::cat(greedy_parts).to(at::kCPU).contiguous();           // [N]
    const double* lp = logp_cpu.data_ptr<double>();
    const bool* g = greedy_cpu.data_ptr<bool>();
    for (size_t r = 0, k = 0; r < n; ++r) {
      Scored& s = out[order[b0 + r]];
      s.tokens = static_cast<int64_t>(targets[order[b0 + r]].size());
      s.greedy = true;
      for (int64_t j = 0; j < s.tokens; ++j, ++k) {
        s.loglik += lp[k];
        s.greedy = s.greedy && g[k];
      }
    }
    if (progress) progress->add(scored_tokens);
  }
  return out;
}

TaskResult evaluate_task(const model::Decoder& model, const text::Tokenizer& tokenizer, const TaskInfo& task,
                         const std::vector<Example>& examples, int64_t batch, parallel::Comm* dp) {
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
  std::vector<std::pair<std::vector<int32_t>, std::vector<int32_t>>> requests;
  int64_t my_tokens = 0;
  for (int64_t e = mine.begin; e < mine.end; ++e) {
    for (const Request& q : examples[e].choices) {
      requests.emplace_back(tokenizer.encode(q.context), tokenizer.encode(q.continuation));
      my_tokens += static_cast<int64_t>(requests.back().first.size() + requests.back().second.size()) - 1;
    }
  }
  Progress progress(task.name, my_tokens);
  const std::vector<Scored> scored = score_requests(model, requests, batch, &progress);
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
