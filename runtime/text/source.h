// runtime/text/source.h — where text comes from: "austen:<novel>" (Debian r-cran-janeaustenr)
// or a path to a UTF-8 file; and mixtures of such texts for calibration.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace secateur::text {

std::string read_text(const std::string& spec, const std::string& austen_rdb);

// One text of a mixture, "source=weight" (the weight after the last '='; > 0).
struct Share {
  std::string source;
  double weight;
};
// Error naming `key` and the entry that is not "source=weight" with a positive weight.
std::vector<Share> parse_mixture(const std::vector<std::string>& entries, const std::string& key);
// How many of n windows each text gets: n × its share of the weights, rounded down, and the rest one
// each to the largest remainders (ties: the earlier entry). Error naming `key` when one gets none.
std::vector<int64_t> window_counts(const std::vector<Share>& shares, int64_t n, const std::string& key);

}  // namespace secateur::text
