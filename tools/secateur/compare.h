// tools/secateur/compare.h — `secateur eval --compare A B [C ...]`: the final model of each run side
// by side (the last perplexity per window, the last zero-shot score per task, the last speed
// measurement, parameters) with each run's ratio to the first, as a Markdown table on stdout and,
// if asked, a file.
#pragma once
#include <string>
#include <vector>

namespace secateur::tools {

// Error naming the file (and line) when a run has no readable metrics.jsonl.
std::string compare_runs(const std::vector<std::string>& runs);

}  // namespace secateur::tools
