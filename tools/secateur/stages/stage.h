// tools/secateur/stages/stage.h — a stage of a run (run.stages, or one subcommand): its options,
// read from the config once (each stage's file: an options struct, from_config() and validate()
// beside it), checked before any stage does work, then run on every rank.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "runtime/config/config.h"
#include "runtime/core/phase.h"
#include "tools/secateur/run.h"

namespace secateur::tools {

class Stage {
 public:
  virtual ~Stage() = default;
  // Refuses bad options and inputs (one Error naming the key or file) before any stage runs.
  virtual void validate(Run& run) const {}
  virtual void run(Run& run) const = 0;
};

// The stage of a name of config::choices::stages; Error naming the allowed ones otherwise.
std::unique_ptr<Stage> make_stage(const std::string& name, const config::Config& cfg);

// One factory per stage file.
std::unique_ptr<Stage> convert_stage(const config::Config& cfg);
std::unique_ptr<Stage> eval_stage(const config::Config& cfg);
std::unique_ptr<Stage> prune_stage(const config::Config& cfg);
std::unique_ptr<Stage> gum_stage(const config::Config& cfg);
std::unique_ptr<Stage> sparse_stage(const config::Config& cfg);
std::unique_ptr<Stage> recover_stage(const config::Config& cfg);
std::unique_ptr<Stage> report_stage(const config::Config& cfg);
std::unique_ptr<Stage> generate_stage(const config::Config& cfg);
std::unique_ptr<Stage> score_stage(const config::Config& cfg);     // in prune.cpp

}  // namespace secateur::tools
