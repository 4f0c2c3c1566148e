#!/usr/bin/env bash
# tools/demo.sh — set up if needed, then run Secateur's pipeline on the embedded default
# config (configs/default.yaml): convert the real model to HF, perplexity at 128 and 2048, generate.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
exec build/secateur run "$@"
