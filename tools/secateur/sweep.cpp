#include "tools/secateur/sweep.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "pruning/score.h"
#include "runtime/config/config.h"
#include "runtime/core/check.h"
#include "runtime/core/hash.h"
#include "runtime/io/atomic_file.h"
#include "tools/secateur/process.h"

namespace secateur::tools {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// s in single quotes, as a POSIX shell (and sweep.sbatch's xargs) reads it back.
std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// A YAML value as the text of a key=value override (flow style for lists and maps).
std::string override_text(const YAML::Node& v) {
  if (v.IsScalar()) return v.Scalar();
  YAML::Emitter e;
  e << YAML::Flow << v;
  return e.c_str();
}

// A piece of a point's name: letters, digits and . + - _ kept, anything else '-'.
std::string name_part(const std::string& s) {
  std::string out;
  for (char c : s) {
    out += std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '+' || c == '-' || c == '_' ? c : '-';
  }
  out.erase(std::unique(out.begin(), out.end(), [](char a, char b) { return a == '-' && b == '-'; }), out.end());
  while (!out.empty() && out.front() == '-') out.erase(out.begin());
  while (!out.empty() && out.back() == '-') out.pop_back();
  return out;
}

struct Choice {
  std::string name;                     // "ratio=0.2"
  std::vector<std::string> overrides;
};

std::vector<std::string> map_overrides(const YAML::Node& m, const std::string& where, bool allow_name = false) {
  SECATEUR_CHECK(m.IsMap() || m.IsNull(), "[sweep] {}: must be a map of key: value", where);
  std::vector<std::string> out;
  for (const auto& kv : m) {
    const std::string key = kv.first.Scalar();
    if (allow_name && key == "name") continue;
    out.push_back(key + "=" + override_text(kv.second));
  }
  return out;
}

std::vector<std::vector<Choice>> grid_axes(const YAML::Node& grid, const std::string& file) {
  std::vector<std::vector<Choice>> axes;
  if (!grid) return axes;
  SECATEUR_CHECK(grid.IsMap(), "[sweep] {}: 'grid' must be a map of axes", file);
  for (const auto& axis : grid) {
    const std::string key = axis.first.Scalar();
    const std::string short_key = key.substr(key.rfind('.') + 1);
    std::vector<Choice> choices;
    if (axis.second.IsSequence()) {
      for (const auto& v : axis.second) {
        choices.push_back({short_key + "=" + name_part(override_text(v)), {key + "=" + override_text(v)}});
      }
    } else if (axis.second.IsMap()) {
      for (const auto& alt : axis.second) {
        choices.push_back({key + "=" + name_part(alt.first.Scalar()),
                           map_overrides(alt.second, fmt::format("{}: grid.{}.{}", file, key, alt.first.Scalar()))});
      }
    } else {
      SECATEUR_FAIL("[sweep] {}: grid.{} must be a list of values or a map of named alternatives", file, key);
    }
    SECATEUR_CHECK(!choices.empty(), "[sweep] {}: grid.{} is empty", file, key);
    axes.push_back(std::move(choices));
  }
  return axes;
}

// Every combination of one choice per axis (one empty one without axes).
std::vector<Choice> product(const std::vector<std::vector<Choice>>& axes) {
  std::vector<Choice> out = {{"", {}}};
  for (const auto& axis : axes) {
    std::vector<Choice> next;
    for (const Choice& so_far : out) {
      for (const Choice& c : axis) {
        Choice x = so_far;
        x.name += (x.name.empty() ? "" : "_") + c.name;
        x.overrides.insert(x.overrides.end(), c.overrides.begin(), c.overrides.end());
        next.push_back(std::move(x));
      }
    }
    out = std::move(next);
  }
  return out;
}

// The score run a point can share: it prunes before it trains, with a criterion that calibrates;
// criteria of the same needs (taylor_element1 and taylor_vector: first-order) share one; SLEB's
// search, the points of the same budget. "" when it cannot.
std::string shared_scoring(const config::Config& cfg) {
  const auto stages = cfg.get<std::vector<std::string>>("run.stages");
  for (const std::string& s : stages) {
    if (s == "gum" || s == "sparse" || s == "recover") return "";
    if (s == "prune") break;
  }
  if (std::find(stages.begin(), stages.end(), "prune") == stages.end()) return "";
  if (!cfg.get<std::string>("prune.scores").empty()) return "";
  const std::string needs = pruning::calibration_needs(pruning::parse_criterion(cfg.get<std::string>("prune.criterion")),
                                                      pruning::parse_compensation(cfg.get<std::string>("prune.compensation")),
                                                      pruning::scope_reads_model_wide(cfg.get<std::string>("prune.scope")));
  if (needs.empty()) return "";
  Fnv1a h;
  for (const char* key : {"model.path", "model.dtype", "calibration.text", "data.austen"}) h.text(cfg.get<std::string>(key));
  for (const char* key : {"calibration.samples", "calibration.seq_len", "run.seed"}) h.integer(cfg.get<int64_t>(key));
  for (const std::string& e : cfg.get<std::vector<std::string>>("calibration.mixture")) h.text(e);
  if (needs == "sleb") {   // a search for one budget, among the layers not kept
    for (const char* key : {"prune.ratio", "prune.keep_first", "prune.keep_last"}) {
      h.text(fmt::format("{:.17g}", cfg.get<double>(key)));
    }
    for (int64_t l : cfg.get<std::vector<int64_t>>("prune.keep_layers")) h.integer(l);
  }
  return fmt::format("{}-{:08x}", needs, h.value() & 0xffffffffu);
}

}  // namespace

Sweep load_sweep(const std::string& path) {
  YAML::Node y;
  try {
    y = YAML::LoadFile(path);
  } catch (const YAML::Exception& e) {
    SECATEUR_FAIL("[sweep] {}: {}", path, e.what());
  }
  SECATEUR_CHECK(y.IsMap(), "[sweep] {}: must be a map (config, dir, parallel, set, grid, points)", path);
  static const std::set<std::string> keys = {"config", "dir", "parallel", "set", "grid", "points"};
  for (const auto& kv : y) {
    SECATEUR_CHECK(keys.count(kv.first.Scalar()), "[sweep] {}: unknown key '{}' (allowed: {})", path,
                   kv.first.Scalar(), fmt::join(keys, ", "));
  }
  Sweep s;
  s.file = path;
  s.config = y["config"] ? y["config"].as<std::string>() : "";
  s.dir = y["dir"] ? y["dir"].as<std::string>() : "runs/sweep-" + fs::path(path).stem().string();
  try {
    s.parallel = y["parallel"] ? y["parallel"].as<int64_t>() : 1;
  } catch (const YAML::Exception&) {
    SECATEUR_FAIL("[sweep] {}: 'parallel' must be an integer", path);
  }
  SECATEUR_CHECK(s.parallel >= 1, "[sweep] {}: 'parallel' = {} must be at least 1", path, s.parallel);
  const std::vector<std::string> common = map_overrides(y["set"], path + ": set");
  std::vector<Choice> listed;
  if (y["points"]) {
    SECATEUR_CHECK(y["points"].IsSequence() && y["points"].size() > 0, "[sweep] {}: 'points' must be a non-empty list",
                   path);
    for (size_t i = 0; i < y["points"].size(); ++i) {
      const YAML::Node p = y["points"][i];
      const std::string where = fmt::format("{}: points[{}]", path, i);
      std::vector<std::string> o = map_overrides(p, where, /*allow_name=*/true);
      listed.push_back({p["name"] ? name_part(p["name"].as<std::string>()) : name_part(fmt::format("{}", fmt::join(o, "_"))),
                        std::move(o)});
    }
  }
  SECATEUR_CHECK(!listed.empty() || y["grid"], "[sweep] {}: no points (give a grid, points, or both)", path);
  std::vector<Choice> all = y["grid"] ? product(grid_axes(y["grid"], path)) : std::vector<Choice>{};
  all.insert(all.end(), listed.begin(), listed.end());
  std::set<std::string> names;
  std::map<std::string, SweepPoint> scores;
  for (const Choice& c : all) {
    SweepPoint p;
    p.name = c.name.empty() ? "point" : c.name;
    SECATEUR_CHECK(names.insert(p.name).second, "[sweep] {}: two points are named '{}' (give them names)", path, p.name);
    p.overrides = common;
    p.overrides.insert(p.overrides.end(), c.overrides.begin(), c.overrides.end());
    p.dir = (fs::path(s.dir) / p.name).string();
    p.overrides.push_back("run.dir=" + p.dir);
    config::Config cfg;
    try {
      cfg = config::Config::load(s.config, p.overrides);
    } catch (const Error& e) {
      SECATEUR_FAIL("[sweep] {}: point {}: {}", path, p.name, e.what());
    }
    const std::string shared = shared_scoring(cfg);
    if (!shared.empty()) {
      const fs::path dir = fs::path(s.dir) / "_scores" / shared;
      if (!scores.count(shared)) {
        SweepPoint score{shared, dir.string(), p.overrides, ""};
        score.overrides.back() = "run.stages=[score]";
        score.overrides.push_back("run.dir=" + score.dir);
        scores[shared] = std::move(score);
      }
      p.scores = shared;
      p.overrides.insert(p.overrides.end() - 1, "prune.scores=" + (dir / "scores.safetensors").string());
    }
    s.points.push_back(std::move(p));
  }
  for (auto& [name, p] : scores) s.scores.push_back(std::move(p));
  return s;
}

std::string sweep_lines(const Sweep& s, bool scores) {
  std::string out;
  for (const SweepPoint& p : scores ? s.scores : s.points) {
    out += s.config.empty() ? "" : shell_quote(s.config) + " ";
    std::vector<std::string> q;
    for (const std::string& o : p.overrides) q.push_back(shell_quote(o));
    out += fmt::format("{}\n", fmt::join(q, " "));
  }
  return out;
}

namespace {

struct Job {
  const SweepPoint* point;
  fs::path dir;
  pid_t pid = -1;
  std::chrono::steady_clock::time_point start;
};

// The last line of a point's log that says "error".
std::string error_line(const fs::path& log) {
  std::ifstream in(log);
  std::string line, last;
  while (std::getline(in, line)) {
    std::string lower = line;
    std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
    if (lower.find("error") != std::string::npos) last = line;
  }
  return last;
}

pid_t spawn(const std::string& exe, const std::string& config, const SweepPoint& p, const fs::path& log) {
  std::vector<std::string> args = {exe, "run"};
  if (!config.empty()) args.push_back(config);
  args.insert(args.end(), p.overrides.begin(), p.overrides.end());
  return spawn_process(args, log.string(), log.string());
}

// Runs the points not DONE, `parallel` at a time; false for those that failed (or whose score run did).
int run_jobs(const Sweep& s, const std::vector<SweepPoint>& points, const std::string& exe,
             std::set<std::string>& failed, const char* what) {
  std::vector<Job> pending, running;
  int done = 0, total = static_cast<int>(points.size()), failures = 0;
  for (const SweepPoint& p : points) {
    const fs::path dir(p.dir);
    if (fs::exists(dir / "DONE")) {
      ++done;
      continue;
    }
    pending.push_back({&p, dir, -1, {}});
  }
  if (done > 0) spdlog::info("[sweep] {} of {} {}s done already (DONE): skipped", done, total, what);
  while (!pending.empty() || !running.empty()) {
    while (!pending.empty() && static_cast<int64_t>(running.size()) < s.parallel) {
      Job j = pending.front();
      pending.erase(pending.begin());
      if (!j.point->scores.empty() && failed.count(j.point->scores)) {
        ++failures;
        failed.insert(j.point->name);
        fs::create_directories(j.dir);
        io::write_file_atomic((j.dir / "FAILED").string(),
                              json{{"exit", -1}, {"error", "its score run " + j.point->scores + " failed"}}.dump() + "\n");
        spdlog::warn("[sweep] {}: not run, its score run {} failed", j.point->name, j.point->scores);
        continue;
      }
      fs::create_directories(j.dir);
      fs::remove(j.dir / "FAILED");
      j.start = std::chrono::steady_clock::now();
      j.pid = spawn(exe, s.config, *j.point, j.dir / "sweep.log");
      running.push_back(j);
    }
    int status = 0;
    rusage ru{};
    const pid_t pid = wait4(-1, &status, 0, &ru);
    SECATEUR_CHECK(pid > 0, "[sweep] wait failed: {}", std::strerror(errno));
    const auto it = std::find_if(running.begin(), running.end(), [&](const Job& j) { return j.pid == pid; });
    if (it == running.end()) continue;
    const Job j = *it;
    running.erase(it);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - j.start).count();
    ++done;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
      io::write_file_atomic((j.dir / "DONE").string(),
                            json{{"seconds", seconds}, {"peak_rss_mib", ru.ru_maxrss / 1024.0}}.dump() + "\n");
      spdlog::info("[sweep] {} {}/{}: {} done in {:.1f} s", what, done, total, j.point->name, seconds);
    } else {
      const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      const std::string err = error_line(j.dir / "sweep.log");
      io::write_file_atomic((j.dir / "FAILED").string(), json{{"exit", code}, {"error", err}}.dump() + "\n");
      spdlog::warn("[sweep] {} {}/{}: {} FAILED (exit {}): {} (log {})", what, done, total, j.point->name, code, err,
                   (j.dir / "sweep.log").string());
      failed.insert(j.point->name);
      ++failures;
    }
  }
  return failures;
}

}  // namespace

namespace {

// sbatch --parsable ...: the job id it prints.
std::string sbatch(const std::vector<std::string>& args) {
  std::string cmd = "sbatch --parsable";
  for (const std::string& a : args) cmd += " " + shell_quote(a);
  FILE* p = popen(cmd.c_str(), "r");
  SECATEUR_CHECK(p != nullptr, "[sweep] cannot run sbatch: {}", std::strerror(errno));
  std::string out;
  char buf[256];
  while (fgets(buf, sizeof buf, p)) out += buf;
  const int rc = pclose(p);
  out.erase(out.find_last_not_of(" \n\r") + 1);
  SECATEUR_CHECK(rc == 0 && !out.empty(), "[sweep] sbatch refused the job ({}): {}", rc, cmd);
  return out.substr(0, out.find(';'));
}

// The project file `relative` (its repository holds the binary in build/): found in the working
// directory, or above the executable; "" when neither has it.
fs::path project_file(const std::string& exe, const fs::path& relative) {
  const fs::path exe_dir = fs::path(exe).parent_path();
  for (const fs::path& root : {fs::current_path(), exe_dir.parent_path(), exe_dir}) {
    if (fs::exists(root / relative)) return root / relative;
  }
  return {};
}

}  // namespace

void plot_sweep(const std::string& dir, const std::string& exe) {
  const fs::path python = project_file(exe, ".venv/bin/python"), script = project_file(exe, "tools/plot/sweep.py");
  if (python.empty() || script.empty()) {
    spdlog::info("[sweep] no .venv with tools/plot/sweep.py found: no plots (tools/setup.sh installs matplotlib)");
    return;
  }
  const std::string cmd = shell_quote(python.string()) + " " + shell_quote(script.string()) + " " + shell_quote(dir);
  if (std::system(cmd.c_str()) != 0) spdlog::warn("[sweep] the plots failed: {}", cmd);
}

int submit_sweep(const Sweep& s, const std::string& exe, const std::vector<std::string>& sbatch_args) {
  const fs::path script = project_file(exe, "launch/slurm/sweep.sbatch");
  SECATEUR_CHECK(!script.empty(), "[sweep] launch/slurm/sweep.sbatch not found beside {} or the working directory", exe);
  fs::create_directories(s.dir);
  const std::string file = fs::absolute(s.file).string();
  const auto array = [&](const char* list, size_t n, const std::string& after) {
    std::vector<std::string> a = {fmt::format("--array=0-{}%{}", n - 1, s.parallel),
                                  fmt::format("--export=ALL,SECATEUR_BIN={},SECATEUR_SWEEP_LIST={}", exe, list),
                                  fmt::format("--output={}/slurm-{}-%A_%a.out", s.dir, list)};
    if (!after.empty()) a.push_back("--dependency=afterok:" + after);
    a.insert(a.end(), sbatch_args.begin(), sbatch_args.end());
    a.push_back(script.string());
    a.push_back(file);
    return sbatch(a);
  };
  const std::string scores = s.scores.empty() ? "" : array("scores", s.scores.size(), "");
  const std::string points = array("points", s.points.size(), scores);
  std::vector<std::string> c = {"--dependency=afterany:" + points, "--ntasks=1", "--job-name=secateur-sweep-collect",
                                fmt::format("--output={}/slurm-collect-%j.out", s.dir)};
  c.insert(c.end(), sbatch_args.begin(), sbatch_args.end());
  c.push_back("--wrap=" + shell_quote(exe) + " sweep --collect " + shell_quote(s.dir));
  const std::string collect = sbatch(c);
  spdlog::info("[sweep] {}: submitted {}{} points as job {} (array 0-{}, {} at a time), collected by job {} into {}",
               s.file, scores.empty() ? "" : fmt::format("{} score runs as job {}, then ", s.scores.size(), scores),
               s.points.size(), points, s.points.size() - 1, s.parallel, collect, s.dir);
  std::cout << collect << "\n";   // the job to wait for
  return 0;
}

int run_sweep(const Sweep& s, const std::string& exe) {
  fs::create_directories(s.dir);
  spdlog::info("[sweep] {}: {} points, {} shared score runs, {} at a time, in {}", s.file, s.points.size(),
               s.scores.size(), s.parallel, s.dir);
  std::set<std::string> failed;
  int failures = run_jobs(s, s.scores, exe, failed, "score run");
  failures += run_jobs(s, s.points, exe, failed, "point");
  std::cout << collect_sweep(s.dir);
  if (failures > 0) spdlog::warn("[sweep] {} of {} points failed (their FAILED files say why)", failures, s.points.size());
  return failures > 0 ? 1 : 0;
}

}  // namespace secateur::tools
