#include "tools/secateur/bench_prune.h"

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>   // getpid

#include <fmt/format.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "runtime/config/config.h"
#include "runtime/core/check.h"
#include "runtime/eval/speed.h"
#include "runtime/io/atomic_file.h"
#include "tools/secateur/process.h"

namespace secateur::tools {

namespace {

namespace fs = std::filesystem;

struct Measured {
  double wall = 0, rss_mib = 0;
  std::string out;   // the child's stdout
};

// Runs argv to its end with stdout and stderr in files under dir; Error with the tail of its log
// when it fails.
Measured run_child(const std::vector<std::string>& argv, const fs::path& dir) {
  const fs::path out = dir / "stdout", err = dir / "stderr";
  const auto t0 = std::chrono::steady_clock::now();
  const pid_t pid = spawn_process(argv, out.string(), err.string());
  int status = 0;
  rusage ru{};
  SECATEUR_CHECK(wait4(pid, &status, 0, &ru) == pid, "[bench] wait4 failed");
  Measured m;
  m.wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  m.rss_mib = ru.ru_maxrss / 1024.0;
  std::ifstream so(out), se(err);
  std::stringstream o, e;
  o << so.rdbuf();
  e << se.rdbuf();
  m.out = o.str();
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::string cmd;
    for (const std::string& a : argv) cmd += (cmd.empty() ? "" : " ") + a;
    std::string tail = e.str();
    if (tail.size() > 2000) tail = tail.substr(tail.size() - 2000);
    const std::string how = WIFEXITED(status) ? fmt::format("exit code {}", WEXITSTATUS(status))
                                              : fmt::format("signal {}", WTERMSIG(status));
    SECATEUR_FAIL("[bench] '{}' failed ({}):\n{}", cmd, how, tail);
  }
  return m;
}

// The last line a child printed.
std::string last_line(std::string s) {
  while (!s.empty() && s.back() == '\n') s.pop_back();
  const size_t nl = s.rfind('\n');
  return nl == std::string::npos ? s : s.substr(nl + 1);
}

}  // namespace

int bench_prune(const BenchPruneOptions& opt) {
  const std::string exe = self_exe();
  SECATEUR_CHECK(opt.rounds > 0 && !opt.criteria.empty(), "[bench] prune needs rounds > 0 and criteria");
  // The calibration every `secateur prune` child uses, so that the floor runs over as many tokens.
  std::vector<std::string> common = {"model.path=" + opt.model, "run.threads=" + std::to_string(opt.threads)};
  common.insert(common.end(), opt.overrides.begin(), opt.overrides.end());
  const config::Config cfg = config::Config::load("", common);
  const int64_t samples = cfg.get<int64_t>("calibration.samples"), seq = cfg.get<int64_t>("calibration.seq_len");
  const std::string dtype = cfg.get<std::string>("model.dtype");   // the floor in the prune's dtype
  for (const std::string& c : opt.criteria) (void)config::Config::load("", {"prune.criterion=" + c});   // refused here
  const fs::path tmp = fs::temp_directory_path() / ("secateur-bench-prune-" + std::to_string(getpid()));
  fs::create_directories(tmp);
  struct Remove {
    fs::path p;
    ~Remove() { std::error_code ec; fs::remove_all(p, ec); }
  } remove{tmp};
  std::map<std::string, std::vector<double>> wall, rss;
  for (int64_t r = 0; r < opt.rounds; ++r) {
    const Measured f = run_child({exe, "bench", "forward", "--backward", "--model", opt.model, "--batch",
                                  std::to_string(samples), "--seq", std::to_string(seq), "--iters", "1", "--threads",
                                  std::to_string(opt.threads), "--dtype", dtype}, tmp);
    const double step = nlohmann::json::parse(last_line(f.out)).at("seconds").get<double>();   // its JSON line
    wall["floor"].push_back(f.wall - step);                                                      // load + one step
    rss["floor"].push_back(f.rss_mib);
    for (const std::string& c : opt.criteria) {
      const fs::path dir = tmp / c;
      fs::remove_all(dir);
      std::vector<std::string> argv = {exe, "prune", "run.dir=" + dir.string(), "prune.criterion=" + c};
      argv.insert(argv.end(), common.begin(), common.end());
      const Measured m = run_child(argv, tmp);
      wall[c].push_back(m.wall);
      rss[c].push_back(m.rss_mib);
      std::cerr << fmt::format("[bench] round {}/{}: {} {:.2f} s {:.0f} MiB (floor {:.2f} s {:.0f} MiB)\n", r + 1,
                               opt.rounds, c, m.wall, m.rss_mib, wall["floor"].back(), rss["floor"].back());
    }
  }
  const double fw = eval::median(wall["floor"]), fr = eval::median(rss["floor"]);
  nlohmann::json crit = nlohmann::json::object(), runs = nlohmann::json::object();
  for (const auto& [name, v] : wall) runs[name] = {{"wall", v}, {"rss", rss[name]}};
  for (const std::string& c : opt.criteria) {
    const double w = eval::median(wall[c]), m = eval::median(rss[c]);
    crit[c] = {{"wall_seconds", w}, {"peak_rss_mib", m}, {"wall_vs_floor", w / fw}, {"rss_vs_floor", m / fr}};
  }
  const nlohmann::json j = {
      {"bench", "prune"},
      {"what", fmt::format("whole `secateur prune` processes (calibration {} x {} tokens) against the floor process "
                           "(load + one forward+backward over the same tokens), medians of alternating rounds",
                           samples, seq)},
      {"model", opt.model}, {"threads", opt.threads}, {"rounds", opt.rounds}, {"overrides", opt.overrides},
      {"floor", {{"wall", fw}, {"rss", fr}}}, {"criteria", crit}, {"runs", runs}};
  std::cout << j.dump() << std::endl;
  if (!opt.out.empty()) io::write_file_atomic(opt.out, j.dump(1) + "\n");
  return 0;
}

}  // namespace secateur::tools
