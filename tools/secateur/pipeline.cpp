#include "tools/secateur/pipeline.h"

#include "parallel/collectives.h"
#include "parallel/grid.h"
#include "runtime/core/check.h"
#include "runtime/core/log.h"

namespace secateur::tools {

namespace {

using Factory = std::unique_ptr<Stage> (*)(const config::Config&);

// The one table of stages.
const std::vector<std::pair<std::string, Factory>>& stage_table() {
  static const std::vector<std::pair<std::string, Factory>> t = {
      {"convert", convert_stage}, {"eval", eval_stage},     {"prune", prune_stage},     {"gum", gum_stage},
      {"sparse", sparse_stage},   {"recover", recover_stage}, {"report", report_stage}, {"generate", generate_stage},
  };
  return t;
}

}  // namespace

const std::vector<std::string>& stage_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> n;
    for (const auto& [name, make] : stage_table()) n.push_back(name);
    return n;
  }();
  return names;
}

std::unique_ptr<Stage> make_stage(const std::string& name, const config::Config& cfg) {
  for (const auto& [n, make] : stage_table()) {
    if (n == name) return make(cfg);
  }
  SECATEUR_FAIL("[pipeline] unknown stage '{}' (allowed: {})", name, fmt::join(stage_names(), ", "));
}

Pipeline::Pipeline(config::Config cfg, parallel::Grid& grid, bool fresh, const std::vector<std::string>& stages)
    : run_(std::move(cfg), grid, fresh) {
  for (const std::string& s : stages) stages_.emplace_back(s, make_stage(s, run_.cfg()));
}

void Pipeline::run() {
  for (const auto& [name, stage] : stages_) stage->validate(run_);   // every option, before any work
  for (const auto& [name, stage] : stages_) {
    spdlog::info("stage {}", name);
    stage->run(run_);
    parallel::barrier(run_.grid().world());                            // every rank leaves a stage together
  }
  run_.finish();
}

}  // namespace secateur::tools
