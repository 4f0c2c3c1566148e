#include "runtime/core/phase.h"

#include <fmt/format.h>


namespace secateur {

namespace {

using Clock = std::chrono::steady_clock;

struct Spans {
  Clock::time_point origin = Clock::now();
  std::vector<Span> closed;
  std::vector<double> child_seconds;   // per open span: the time of the spans closed inside it
};

Spans& state() {
  static Spans s;
  return s;
}

// JSON string contents: the span names are ours, but a quote or backslash must not break the file.
std::string escaped(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (static_cast<unsigned char>(c) >= 0x20) out += c;
  }
  return out;
}

}  // namespace

Phase::Phase(std::string name) : name_(std::move(name)) {
  state().child_seconds.push_back(0);   // first: the first span starts the clock's origin
  start_ = Clock::now();
}

Phase::~Phase() {
  Spans& s = state();
  const double seconds = std::chrono::duration<double>(Clock::now() - start_).count();
  const double children = s.child_seconds.back();
  s.child_seconds.pop_back();
  if (!s.child_seconds.empty()) s.child_seconds.back() += seconds;
  s.closed.push_back({name_, std::chrono::duration<double>(start_ - s.origin).count(), seconds, seconds - children,
                      static_cast<int>(s.child_seconds.size())});
}

size_t span_count() { return state().closed.size(); }

const std::vector<Span>& spans() { return state().closed; }

std::map<std::string, double> own_seconds_since(size_t mark) {
  std::map<std::string, double> out;
  const auto& closed = state().closed;
  for (size_t i = mark; i < closed.size(); ++i) out[closed[i].name] += closed[i].own;
  return out;
}

std::string trace_json(int rank) {
  std::string out = "{\"traceEvents\": [\n";
  const auto& closed = state().closed;
  for (size_t i = 0; i < closed.size(); ++i) {
    const Span& s = closed[i];
    out += fmt::format("{{\"name\": \"{}\", \"ph\": \"X\", \"ts\": {:.1f}, \"dur\": {:.1f}, \"pid\": {}, \"tid\": 0}}{}\n",
                       escaped(s.name), 1e6 * s.start, 1e6 * s.seconds, rank, i + 1 < closed.size() ? "," : "");
  }
  return out + "], \"displayTimeUnit\": \"ms\"}\n";
}

}  // namespace secateur
