#include "tools/secateur/compare.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <map>
#include <vector>

#include "runtime/core/check.h"

namespace secateur::tools {

namespace {

// The last value of every row a run reports, in first-seen order.
struct Rows {
  std::vector<std::string> order;
  std::map<std::string, double> value;
  void set(const std::string& row, double v) {
    if (!value.count(row)) order.push_back(row);
    value[row] = v;
  }
};

Rows read_run(const std::string& run) {
  const std::string path = (std::filesystem::path(run) / "metrics.jsonl").string();
  std::ifstream in(path);
  SECATEUR_CHECK(in.good(), "[compare] {}: cannot read (is {} a run directory?)", path, run);
  Rows r;
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    if (line.empty()) continue;
    nlohmann::json m;
    try {
      m = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      SECATEUR_FAIL("[compare] {}:{}: invalid JSON: {}", path, n, e.what());
    }
    const std::string metric = m.value("metric", "");
    if (m.value("stage", "") == "prune") r.set("parameters (M)", m["params_after"].get<double>() / 1e6);
    if (metric == "perplexity") r.set(fmt::format("perplexity @{}", m["window"].get<int64_t>()), m["ppl"]);
    if (metric == "zero_shot") {
      r.set(fmt::format("{} ({})", m["task"].get<std::string>(), m["reported"].get<std::string>()),
            100.0 * m["value"].get<double>());
      if (m.contains("ppl")) r.set(m["task"].get<std::string>() + " ppl", m["ppl"]);
    }
    if (metric == "speed") {
      r.set("parameters (M)", m["params"].get<double>() / 1e6);
      r.set("MACs/token (M)", m["macs_per_token"].get<double>() / 1e6);
      r.set("prefill tok/s", m["prefill_tokens_per_second"]);
      r.set("decode tok/s", m["decode_tokens_per_second"]);
    }
  }
  SECATEUR_CHECK(!r.order.empty(), "[compare] {}: no evaluation results", path);
  return r;
}

}  // namespace

std::string compare_runs(const std::string& run_a, const std::string& run_b) {
  const Rows a = read_run(run_a), b = read_run(run_b);
  std::string md = fmt::format("| | A: {} | B: {} | B / A |\n|---|---|---|---|\n", run_a, run_b);
  std::vector<std::string> rows = a.order;
  for (const std::string& row : b.order) {
    if (!a.value.count(row)) rows.push_back(row);
  }
  const auto cell = [](const Rows& r, const std::string& row) {
    return r.value.count(row) ? fmt::format("{:.4g}", r.value.at(row)) : std::string("–");
  };
  for (const std::string& row : rows) {
    const bool both = a.value.count(row) && b.value.count(row) && a.value.at(row) != 0;
    md += fmt::format("| {} | {} | {} | {} |\n", row, cell(a, row), cell(b, row),
                      both ? fmt::format("{:.3f}", b.value.at(row) / a.value.at(row)) : "–");
  }
  return md;
}

}  // namespace secateur::tools
