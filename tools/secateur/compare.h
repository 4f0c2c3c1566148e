// tools/secateur/compare.h — `secateur eval --compare runA runB`: the final model of two runs side
// by side (the last perplexity per window, the last zero-shot score per task, the last speed
// measurement, parameters) with B/A ratios, as a Markdown table on stdout and, if asked, a file.
#pragma once
#include <string>

namespace secateur::tools {

// Error naming the file (and line) when a run has no readable metrics.jsonl.
std::string compare_runs(const std::string& run_a, const std::string& run_b);

}  // namespace secateur::tools
