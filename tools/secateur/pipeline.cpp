#include "tools/secateur/pipeline.h"

#include "parallel/collectives.h"
#include "parallel/grid.h"
#include "runtime/config/choices.h"
#include "runtime/core/check.h"
#include "runtime/core/log.h"

namespace secateur::tools {

namespace {

using Factory = std::unique_ptr<Stage> (*)(const config::Config&);

// One factory per stage name of config::choices::stages, in that order.
constexpr Factory kFactories[] = {convert_stage, eval_stage,    prune_stage,  gum_stage,     sparse_stage,
                                  recover_stage, report_stage,  generate_stage, score_stage};
static_assert(std::size(kFactories) == std::size(config::choices::stages));

}  // namespace

std::unique_ptr<Stage> make_stage(const std::string& name, const config::Config& cfg) {
  return kFactories[config::choice_index(config::choices::stages, "run.stages", name)](cfg);
}

Pipeline::Pipeline(config::Config cfg, parallel::Grid& grid, bool fresh, const std::vector<std::string>& stages)
    : run_(std::move(cfg), grid, fresh) {
  for (const std::string& s : stages) stages_.emplace_back(s, make_stage(s, run_.cfg()));
}

void Pipeline::run() {
  for (const auto& [name, stage] : stages_) stage->validate(run_);   // every option, before any work
  for (const auto& [name, stage] : stages_) {
    spdlog::info("stage {}", name);
    const size_t mark = span_count();
    {
      Phase whole(Run::stage_span(name));
      stage->run(run_);
      parallel::barrier(run_.grid().world());                          // every rank leaves a stage together
    }
    run_.record_phases(name, mark);
  }
  run_.finish();
}

}  // namespace secateur::tools
