#!/usr/bin/env bash
# tools/demo.sh — set up if needed, then run Secateur's pipeline on the embedded default
# config (configs/default.yaml): convert the real model to HF, perplexity at 128 and 2048, prune,
# evaluate and generate; then load the pruned export in stock transformers and check that its greedy
# continuation of the prompt is Secateur's (tools/hf_check.py). Arguments are config overrides.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
build/secateur run "$@"
run_dir=runs/demo
for arg in "$@"; do
  case "$arg" in
    run.dir=*) run_dir=${arg#run.dir=} ;;
    *=*) ;;
    *) echo "transformers check: skipped (a config file may set run.dir: run tools/hf_check.py RUN_DIR)"; exit 0 ;;
  esac
done
.venv/bin/python tools/hf_check.py "$run_dir"
