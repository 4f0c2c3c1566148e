// runtime/core/phase.h — where a run's time goes: named, nested spans of wall time on this process
// (load, tokenize, calibrate, score, decide, apply, export, perplexity, train, ...). A span's own
// time is its duration less that of the spans opened inside it, so the own times of a stage's
// spans add up to no more than the stage. The pipeline sums them per stage into metrics.jsonl and
// the run summary; run.profile writes every span as a Chrome trace (chrome://tracing, Perfetto).
// Main thread only.
#pragma once
#include <chrono>
#include <cstddef>
#include <map>
#include <string>
#include <vector>

namespace secateur {

struct Span {
  std::string name;
  double start = 0, seconds = 0, own = 0;   // start: seconds since the process's first span
  int depth = 0;
};

class Phase {
 public:
  explicit Phase(std::string name);
  ~Phase();
  Phase(const Phase&) = delete;
  Phase& operator=(const Phase&) = delete;

 private:
  std::string name_;
  std::chrono::steady_clock::time_point start_;
};

size_t span_count();                                          // spans closed so far: a mark
const std::vector<Span>& spans();                             // every span closed, in closing order
std::map<std::string, double> own_seconds_since(size_t mark); // own time by name, of the spans closed since
// The spans as a Chrome trace: "X" events in microseconds, pid = rank.
std::string trace_json(int rank);

}  // namespace secateur
