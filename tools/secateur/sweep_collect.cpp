// tools/secateur/sweep_collect.cpp — a sweep's points gathered into sweep.json, sweep.csv and
// sweep.md (tools/secateur/sweep.h).
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "runtime/core/check.h"
#include "runtime/io/atomic_file.h"
#include "tools/secateur/sweep.h"

namespace secateur::tools {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

json read_json_or_null(const fs::path& p) {
  std::ifstream in(p);
  if (!in) return nullptr;
  try {
    return json::parse(in);
  } catch (const json::exception&) {
    return nullptr;
  }
}

// One point: what its metrics.jsonl says of the final model, and how the run went.
json point_row(const fs::path& dir) {
  json row = {{"point", dir.filename().string()}, {"ppl", json::object()}, {"zero_shot", json::object()}};
  const json done = read_json_or_null(dir / "DONE"), failed = read_json_or_null(dir / "FAILED");
  row["status"] = !done.is_null() ? "done" : !failed.is_null() ? "failed" : "incomplete";
  if (!done.is_null()) row.update(done);
  if (!failed.is_null()) row["error"] = failed.value("error", "");
  std::ifstream in(dir / "metrics.jsonl");
  std::string line, criterion, scope, compensation, recovery, gum;
  while (std::getline(in, line)) {
    json m;
    try {
      m = json::parse(line);
    } catch (const json::exception&) {
      continue;   // a point killed mid-write: its complete lines still count
    }
    const std::string stage = m.value("stage", ""), metric = m.value("metric", "");
    if (stage == "prune") {
      criterion = m.value("criterion", "");
      scope = m.value("scope", "");
      compensation = m.value("compensation", "none");
      row["ratio"] = m.value("ratio_target", 0.0);
      row["params_before"] = m.value("params_before", int64_t{0});
      row["params"] = m.value("params_after", int64_t{0});
      row["scores_reused"] = !m.value("scores", std::string()).empty();
    } else if (stage == "gum") {
      gum = m.value("method", "");
      row["params"] = m.value("params_after", int64_t{0});
    } else if (stage == "recover") {
      recovery = fmt::format("{}{}", m.value("method", ""), m.value("steps", int64_t{0}));
    } else if (metric == "perplexity") {
      row["ppl"][std::to_string(m.value("window", int64_t{0}))] = m.value("ppl", 0.0);
    } else if (metric == "zero_shot") {
      row["zero_shot"][m.value("task", "")] = {{"value", m.value("value", 0.0)}, {"reported", m.value("reported", "")}};
    } else if (metric == "speed") {
      row["macs_per_token"] = m.value("macs_per_token", 0.0);
      row["prefill_tokens_per_second"] = m.value("prefill_tokens_per_second", 0.0);
      row["decode_tokens_per_second"] = m.value("decode_tokens_per_second", 0.0);
      if (!row.contains("params")) row["params"] = m.value("params", int64_t{0});
      if (m.contains("prefill_speedup")) row["prefill_speedup"] = m["prefill_speedup"];
      if (m.contains("decode_speedup")) row["decode_speedup"] = m["decode_speedup"];
    }
  }
  row["criterion"] = criterion;
  row["scope"] = scope;
  row["compensation"] = compensation;
  row["recovery"] = recovery;
  std::string method = !gum.empty() ? "gum:" + gum : criterion.empty() ? "dense" : criterion;
  if (!scope.empty() && scope != "per_layer") method += "/" + scope;
  if (!compensation.empty() && compensation != "none") method += "+" + compensation;
  if (!recovery.empty()) method += " + " + recovery;
  row["method"] = method;
  double sum = 0;
  int n = 0;
  for (const auto& [task, z] : row["zero_shot"].items()) {
    if (z["reported"] == "bpb") continue;
    sum += z["value"].get<double>();
    ++n;
  }
  if (n > 0) row["zero_shot_avg"] = sum / n;
  return row;
}

// The smallest window every point with perplexities has: the one the Pareto front is taken on.
std::string front_window(const json& rows) {
  std::set<int64_t> windows;
  for (const json& r : rows) {
    for (const auto& [w, v] : r["ppl"].items()) windows.insert(std::stoll(w));
  }
  return windows.empty() ? "" : std::to_string(*windows.begin());
}

void mark_pareto(json& rows, const std::string& window) {
  for (json& r : rows) {
    const auto usable = [&](const json& x) {
      return x["status"] == "done" && x.contains("params") && x["ppl"].contains(window);
    };
    if (window.empty() || !usable(r)) continue;
    bool dominated = false;
    for (const json& o : rows) {
      if (&o == &r || !usable(o)) continue;
      const int64_t pa = o["params"], pb = r["params"];
      const double qa = o["ppl"][window], qb = r["ppl"][window];
      dominated |= pa <= pb && qa <= qb && (pa < pb || qa < qb);
    }
    r["pareto"] = !dominated;
  }
}

std::string cell(const json& v, const char* format) {
  return v.is_number() ? fmt::format(fmt::runtime(format), v.get<double>()) : "";
}

}  // namespace

std::string collect_sweep(const std::string& dir) {
  SECATEUR_CHECK(fs::is_directory(dir), "[sweep] --collect: {} is not a directory", dir);
  std::vector<fs::path> dirs;
  for (const auto& e : fs::directory_iterator(dir)) {
    const fs::path p = e.path();
    if (e.is_directory() && p.filename() != "_scores" &&
        (fs::exists(p / "metrics.jsonl") || fs::exists(p / "DONE") || fs::exists(p / "FAILED"))) {
      dirs.push_back(p);
    }
  }
  std::sort(dirs.begin(), dirs.end());
  SECATEUR_CHECK(!dirs.empty(), "[sweep] --collect: no point directories (metrics.jsonl, DONE or FAILED) in {}", dir);
  json rows = json::array();
  std::set<std::string> windows, tasks;
  for (const fs::path& d : dirs) {
    rows.push_back(point_row(d));
    for (const auto& [w, v] : rows.back()["ppl"].items()) windows.insert(w);
    for (const auto& [t, v] : rows.back()["zero_shot"].items()) tasks.insert(t);
  }
  std::vector<std::string> ws(windows.begin(), windows.end());
  std::sort(ws.begin(), ws.end(), [](const std::string& a, const std::string& b) { return std::stoll(a) < std::stoll(b); });
  const std::string front = front_window(rows);
  mark_pareto(rows, front);
  // Speed-ups of a point without a dense eval of its own: against the sweep's dense point, if any.
  const auto dense = std::find_if(rows.begin(), rows.end(), [](const json& r) {
    return r["method"] == "dense" && r["status"] == "done" && r.contains("prefill_tokens_per_second");
  });
  for (json& r : rows) {
    if (dense == rows.end() || r.contains("prefill_speedup") || !r.contains("prefill_tokens_per_second")) continue;
    r["prefill_speedup"] = r["prefill_tokens_per_second"].get<double>() / (*dense)["prefill_tokens_per_second"].get<double>();
    r["decode_speedup"] = r["decode_tokens_per_second"].get<double>() / (*dense)["decode_tokens_per_second"].get<double>();
  }
  io::write_file_atomic((fs::path(dir) / "sweep.json").string(),
                        json{{"dir", dir}, {"pareto_window", front}, {"points", rows}}.dump(2) + "\n");
  // CSV: one row per point, every window and task a column.
  std::string csv = "point,status,method,criterion,scope,ratio,recovery,params,macs_per_token";
  for (const std::string& w : ws) csv += ",ppl@" + w;
  for (const std::string& t : tasks) csv += "," + t;
  csv += ",zero_shot_avg,prefill_speedup,decode_speedup,seconds,peak_rss_mib,pareto\n";
  std::vector<std::string> columns = {"point", "method", "ratio", "params (M)"};
  for (const std::string& w : ws) columns.push_back("ppl@" + w);
  if (!tasks.empty()) columns.push_back("zero-shot avg");
  for (const char* c : {"prefill ×", "decode ×", "wall s", "peak RSS MiB", "status"}) columns.push_back(c);
  std::string md = fmt::format("| {} |\n|", fmt::join(columns, " | "));
  for (size_t i = 0; i < columns.size(); ++i) md += "---|";
  md += "\n";
  for (const json& r : rows) {
    const auto get = [&](const char* k) { return r.contains(k) ? r[k] : json(); };
    csv += fmt::format("{},{},\"{}\",{},{},{},{},{},{}", r["point"].get<std::string>(), r["status"].get<std::string>(),
                       r["method"].get<std::string>(), r["criterion"].get<std::string>(), r["scope"].get<std::string>(),
                       cell(get("ratio"), "{}"), r["recovery"].get<std::string>(), cell(get("params"), "{:.0f}"),
                       cell(get("macs_per_token"), "{:.0f}"));
    for (const std::string& w : ws) csv += "," + cell(r["ppl"].contains(w) ? r["ppl"][w] : json(), "{:.6g}");
    for (const std::string& t : tasks) csv += "," + cell(r["zero_shot"].contains(t) ? r["zero_shot"][t]["value"] : json(), "{:.6g}");
    csv += fmt::format(",{},{},{},{},{},{}\n", cell(get("zero_shot_avg"), "{:.6g}"), cell(get("prefill_speedup"), "{:.4g}"),
                       cell(get("decode_speedup"), "{:.4g}"), cell(get("seconds"), "{:.1f}"),
                       cell(get("peak_rss_mib"), "{:.0f}"), r.value("pareto", false) ? "yes" : "");
    const json params = get("params");
    md += fmt::format("| {}{} | {} | {} | {} |", r["point"].get<std::string>(), r.value("pareto", false) ? " ★" : "",
                      r["method"].get<std::string>(), cell(get("ratio"), "{}"),
                      params.is_number() ? fmt::format("{:.1f}", params.get<double>() / 1e6) : "");
    for (const std::string& w : ws) md += " " + cell(r["ppl"].contains(w) ? r["ppl"][w] : json(), "{:.2f}") + " |";
    if (!tasks.empty()) md += " " + cell(get("zero_shot_avg").is_number() ? json(100 * get("zero_shot_avg").get<double>()) : json(), "{:.2f}") + " |";
    md += fmt::format(" {} | {} | {} | {} | {} |\n", cell(get("prefill_speedup"), "{:.2f}"), cell(get("decode_speedup"), "{:.2f}"),
                      cell(get("seconds"), "{:.0f}"), cell(get("peak_rss_mib"), "{:.0f}"), r["status"].get<std::string>());
  }
  md += fmt::format("\n★: on the Pareto front of parameters against perplexity at window {} (no other point has "
                    "fewer or as many parameters and a lower or equal perplexity). Zero-shot avg: the mean accuracy of "
                    "the tasks evaluated, in percent. Speed-ups (batch-1 prefill and decode, eval.speed) against the run's "
                    "own dense eval, else the sweep's dense point.\n",
                    front.empty() ? "–" : front);
  io::write_file_atomic((fs::path(dir) / "sweep.csv").string(), csv);
  io::write_file_atomic((fs::path(dir) / "sweep.md").string(), md);
  return md;
}

}  // namespace secateur::tools
