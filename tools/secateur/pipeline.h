// tools/secateur/pipeline.h — a run as a short sequence of typed stages: every stage's options
// are read from the one resolved config and checked before any stage works, then the stages run
// in order on every rank, leaving together; the run's state passes from one to the next (run.h).
// `secateur run` executes run.stages; each subcommand executes one stage.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "tools/secateur/run.h"
#include "tools/secateur/stages/stage.h"

namespace secateur::tools {

class Pipeline {
 public:
  // fresh: start metrics.jsonl anew.
  Pipeline(config::Config cfg, parallel::Grid& grid, bool fresh, const std::vector<std::string>& stages);
  void run();   // validate every stage, run each, write the report

 private:
  Run run_;
  std::vector<std::pair<std::string, std::unique_ptr<Stage>>> stages_;
};

}  // namespace secateur::tools
