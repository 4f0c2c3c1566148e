// tools/secateur/sweep.h — `secateur sweep sweep.yaml`: many runs of one base config, run here a
// few at a time (or listed for a Slurm array), then gathered into one table.
//
// sweep.yaml (configs/sweeps/*.yaml):
//   config: configs/prune.yaml     # the base config ("" or absent: the embedded default)
//   dir: runs/sweep-x              # every point runs in <dir>/<point>
//   parallel: 1                    # points at a time (local runs)
//   set: {eval.windows: [128]}     # overrides of every point
//   grid:                          # the product of its axes, in the file's order:
//     prune.ratio: [0.1, 0.2]      #   a config key and its values, or
//     recovery:                    #   an axis of named alternatives, each a map of overrides
//       none: {}
//       lora40: {run.stages: [prune, recover, eval], recover.steps: 40}
//   points:                        # and/or more points, each a map of overrides (besides the grid's)
//     - {name: dense, run.stages: [eval]}
// A point is named by its values ("ratio=0.2_recovery=lora40") unless it has a name. Every point's
// config is resolved and checked against the schema before anything runs (an unknown key, a bad
// value, an empty axis: one error naming the file, the point and the key).
//
// Points that prune first (no gum, sparse or recover before prune) and share model, dtype,
// calibration, seed and a criterion that calibrates share one `secateur score` run in
// <dir>/_scores/, and reuse it through prune.scores. A point that finished has <point>/DONE
// (wall time, peak RSS): a re-run skips it; a failed one gets <point>/FAILED (exit, its error line)
// and does not stop the others. At the end the sweep is collected: sweep.csv, sweep.json, sweep.md.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace secateur::tools {

struct SweepPoint {
  std::string name, dir;                // dir: its run.dir
  std::vector<std::string> overrides;   // key=value, run.dir last
  std::string scores;                   // the score run it shares ("" = none)
};

struct Sweep {
  std::string file, config, dir;
  int64_t parallel = 1;
  std::vector<SweepPoint> scores, points;   // score runs first, then the points
};

Sweep load_sweep(const std::string& path);

// Runs every point not DONE (score runs first) with `exe` (this binary), `parallel` at a time;
// each point's log is <point>/sweep.log. Then collects. Non-zero when a point failed.
int run_sweep(const Sweep& sweep, const std::string& exe);

// One line per point for launch/slurm/sweep.sbatch: the config file (if any), then the overrides.
std::string sweep_lines(const Sweep& sweep, bool scores);

// The sweep as Slurm jobs (sbatch from PATH, `sbatch_args` added to each): an array of the score
// runs, an array of the points after them (afterok; `parallel` at a time), and a job that collects
// the sweep once the points have ended (afterany). Each array task runs launch/slurm/sweep.sbatch
// on the same sweep.yaml (its line from --list) and writes DONE or FAILED as a local run does.
// Prints the collecting job's id.
int submit_sweep(const Sweep& sweep, const std::string& exe, const std::vector<std::string>& sbatch_args);

// Every point directory under dir (metrics.jsonl, DONE or FAILED) as one row each: sweep.json,
// sweep.csv and sweep.md (method, ratio, parameters, MACs, perplexity per window, zero-shot per
// task and their average, speed-ups, wall time, peak RSS; the Pareto front of parameters against
// the first perplexity marked). Returns the Markdown table.
std::string collect_sweep(const std::string& dir);

// sweep_ppl.png (and sweep_zero_shot.png) of a collected sweep, by tools/plot/sweep.py with the
// project's .venv Python; a line saying so when that is not found.
void plot_sweep(const std::string& dir, const std::string& exe);

}  // namespace secateur::tools
