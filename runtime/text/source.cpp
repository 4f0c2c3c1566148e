#include "runtime/text/source.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <numeric>
#include <sstream>

#include "runtime/core/check.h"
#include "runtime/text/austen.h"

namespace secateur::text {

std::string read_text(const std::string& spec, const std::string& austen_rdb) {
  const std::string prefix = "austen:";
  if (spec.rfind(prefix, 0) == 0) return austen_novel(austen_rdb, spec.substr(prefix.size()));
  std::ifstream in(spec, std::ios::binary);
  SECATEUR_CHECK(in.good(), "[text] cannot open text file {}", spec);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<Share> parse_mixture(const std::vector<std::string>& entries, const std::string& key) {
  std::vector<Share> out;
  for (const std::string& e : entries) {
    const size_t eq = e.rfind('=');
    double w = 0;
    bool ok = eq != std::string::npos && eq > 0 && eq + 1 < e.size();
    if (ok) {
      try {
        size_t used = 0;
        w = std::stod(e.substr(eq + 1), &used);
        ok = used == e.size() - eq - 1 && std::isfinite(w) && w > 0;
      } catch (const std::exception&) {
        ok = false;
      }
    }
    SECATEUR_CHECK(ok, "[config] '{}' has '{}': each entry is source=weight, the weight a number > 0 (e.g. "
                   "austen:emma=0.5)", key, e);
    out.push_back({e.substr(0, eq), w});
  }
  return out;
}

std::vector<int64_t> window_counts(const std::vector<Share>& shares, int64_t n, const std::string& key) {
  double total = 0;
  for (const Share& s : shares) total += s.weight;
  std::vector<int64_t> counts;
  std::vector<double> rest;
  int64_t given = 0;
  for (const Share& s : shares) {
    const double exact = static_cast<double>(n) * s.weight / total;
    counts.push_back(static_cast<int64_t>(std::floor(exact)));
    rest.push_back(exact - std::floor(exact));
    given += counts.back();
  }
  std::vector<size_t> order(shares.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return rest[a] > rest[b]; });
  for (size_t i = 0; given < n; ++i, ++given) ++counts[order[i % order.size()]];
  for (size_t i = 0; i < shares.size(); ++i) {
    SECATEUR_CHECK(counts[i] > 0, "[config] '{}': {} gets none of the {} windows (weight {} of {}): raise the "
                   "samples or its weight", key, shares[i].source, n, shares[i].weight, total);
  }
  return counts;
}

}  // namespace secateur::text
