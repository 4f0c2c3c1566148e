// pruning/stats_file.cpp — calibration statistics to and from a safetensors file (pruning/stats.h).
#include <ATen/ATen.h>
#include <fmt/format.h>

#include <cmath>

#include "pruning/stats.h"
#include "runtime/core/check.h"
#include "runtime/io/safetensors.h"

namespace secateur::pruning {

namespace {

constexpr const char* kMarker = "secateur_statistics";

// The statistics of WeightStats with their names in the file, in one order.
template <typename Stats, typename F>
void for_each_stat(Stats& w, F&& f) {
  f("l1", w.l1);
  f("l2", w.l2);
  f("abs_wg", w.abs_wg);
  f("wg", w.wg);
  f("w2f", w.w2f);
  f("mix", w.mix);
  f("act", w.act);
  f("act_sum", w.act_sum);
}

}  // namespace

void save_statistics(const std::string& path, const Statistics& stats, std::map<std::string, std::string> metadata) {
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& [name, w] : stats.weights) {
    for_each_stat(w, [&](const char* stat, const std::array<at::Tensor, 2>& dims) {
      for (int d = 0; d < 2; ++d) {
        if (dims[d].defined()) tensors.emplace_back(fmt::format("{}/{}/{}", name, stat, d), dims[d].to(at::kDouble));
      }
    });
  }
  for (const auto& [name, g] : stats.gram) tensors.emplace_back(name + "/gram", g.to(at::kDouble));
  if (stats.residual_cosine.defined()) {
    tensors.emplace_back("residual/cosine", stats.residual_cosine);
    tensors.emplace_back("residual/angle", stats.residual_angle);
  }
  if (!stats.sleb_order.empty()) {
    tensors.emplace_back("sleb/order", at::tensor(stats.sleb_order, at::kLong).to(at::kDouble));
    tensors.emplace_back("sleb/nll", at::tensor(stats.sleb_nll, at::kDouble));
    metadata["sleb_ratio"] = fmt::format("{:.17g}", stats.sleb_ratio);
  }
  metadata[kMarker] = "1";
  metadata["samples"] = std::to_string(stats.samples);
  metadata["tokens"] = std::to_string(stats.tokens);
  io::write_safetensors(path, tensors, metadata);
}

Statistics load_statistics(const std::string& path, std::map<std::string, std::string>* metadata) {
  const io::SafetensorsFile f(path);
  SECATEUR_CHECK(f.metadata().count(kMarker) && f.metadata().count("samples"),
                 "[pruning] {} is not a statistics file of `secateur score` (no {} in its metadata)", path, kMarker);
  Statistics s;
  const auto count = [&](const char* key) -> int64_t {
    if (!f.metadata().count(key)) return 0;
    try {
      return std::stoll(f.metadata().at(key));
    } catch (const std::exception&) {
      SECATEUR_FAIL("[pruning] {}: metadata '{}' = '{}' is not a count", path, key, f.metadata().at(key));
    }
  };
  s.samples = count("samples");
  s.tokens = count("tokens");
  for (const std::string& key : f.names()) {
    if (key == "residual/cosine" || key == "residual/angle") {
      const at::Tensor m = f.tensor(key).to(at::kDouble).clone();
      SECATEUR_CHECK(m.dim() == 2 && m.size(0) == m.size(1), "[pruning] {}: '{}' must be a square matrix", path, key);
      (key == "residual/cosine" ? s.residual_cosine : s.residual_angle) = m;
      continue;
    }
    if (key == "sleb/order" || key == "sleb/nll") {
      const at::Tensor v = f.tensor(key).to(at::kDouble).contiguous();
      SECATEUR_CHECK(v.dim() == 1, "[pruning] {}: '{}' must be a vector", path, key);
      const double* p = v.data_ptr<double>();
      if (key == "sleb/nll") s.sleb_nll.assign(p, p + v.numel());
      for (int64_t i = 0; key == "sleb/order" && i < v.numel(); ++i) s.sleb_order.push_back(std::llround(p[i]));
      continue;
    }
    if (key.size() > 5 && key.compare(key.size() - 5, 5, "/gram") == 0) {   // [in, in] of an output projection
      s.gram[key.substr(0, key.size() - 5)] = f.tensor(key).clone();
      continue;
    }
    const size_t b = key.rfind('/', key.size() - 3);
    SECATEUR_CHECK(b != std::string::npos && key.size() > 2 && key[key.size() - 2] == '/' &&
                       (key.back() == '0' || key.back() == '1'),
                   "[pruning] {}: tensor '{}' is not named <weight>/<statistic>/<dim>", path, key);
    const std::string weight = key.substr(0, b), stat = key.substr(b + 1, key.size() - 3 - b);
    bool known = false;
    for_each_stat(s.weights[weight], [&](const char* name, std::array<at::Tensor, 2>& dims) {
      if (stat != name) return;
      dims[key.back() - '0'] = f.tensor(key).clone();
      known = true;
    });
    SECATEUR_CHECK(known, "[pruning] {}: tensor '{}' holds an unknown statistic '{}'", path, key, stat);
  }
  if (!s.sleb_order.empty()) {
    SECATEUR_CHECK(f.metadata().count("sleb_ratio") && s.sleb_nll.size() == s.sleb_order.size(), "[pruning] {}: "
                   "'sleb/order' needs 'sleb/nll' of its length and metadata 'sleb_ratio'", path);
    try {
      s.sleb_ratio = std::stod(f.metadata().at("sleb_ratio"));
    } catch (const std::exception&) {
      SECATEUR_FAIL("[pruning] {}: metadata 'sleb_ratio' = '{}' is not a number", path, f.metadata().at("sleb_ratio"));
    }
  }
  SECATEUR_CHECK(s.residual_cosine.defined() == s.residual_angle.defined(), "[pruning] {}: 'residual/cosine' and "
                 "'residual/angle' go together", path);
  if (metadata) *metadata = f.metadata();
  return s;
}

}  // namespace secateur::pruning
