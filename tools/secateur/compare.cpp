#include "tools/secateur/compare.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
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
      const std::string reported = m["reported"].get<std::string>();   // accuracies in percent, bpb as it is
      r.set(fmt::format("{} ({})", m["task"].get<std::string>(), reported),
            (reported == "bpb" ? 1.0 : 100.0) * m["value"].get<double>());
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

std::string compare_runs(const std::vector<std::string>& runs) {
  SECATEUR_CHECK(runs.size() >= 2, "[compare] --compare needs at least two run directories, got {}", runs.size());
  std::vector<Rows> results;
  std::vector<std::string> rows;
  for (const std::string& run : runs) {
    results.push_back(read_run(run));
    for (const std::string& row : results.back().order) {
      if (std::find(rows.begin(), rows.end(), row) == rows.end()) rows.push_back(row);
    }
  }
  const auto letter = [](size_t i) { return i < 26 ? std::string(1, static_cast<char>('A' + i)) : fmt::format("R{}", i + 1); };
  std::string head = "|", rule = "|---|";
  for (size_t i = 0; i < runs.size(); ++i) {
    head += fmt::format(" | {}: {}", letter(i), runs[i]);
    rule += "---|";
  }
  for (size_t i = 1; i < runs.size(); ++i) {
    head += fmt::format(" | {} / A", letter(i));
    rule += "---|";
  }
  std::string md = head + " |\n" + rule + "\n";
  const Rows& first = results.front();
  for (const std::string& row : rows) {
    md += "| " + row;
    for (const Rows& r : results) md += r.value.count(row) ? fmt::format(" | {:.4g}", r.value.at(row)) : " | –";
    for (size_t i = 1; i < results.size(); ++i) {
      const bool both = first.value.count(row) && results[i].value.count(row) && first.value.at(row) != 0;
      md += both ? fmt::format(" | {:.3f}", results[i].value.at(row) / first.value.at(row)) : " | –";
    }
    md += " |\n";
  }
  return md;
}

}  // namespace secateur::tools
