#!/usr/bin/env bash
# tools/test.sh — set up if needed, then run the whole test suite (unit, fidelity, CLI, fuzzing).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
(cd build && ctest --output-on-failure -j "$(nproc)" "$@")
# The whole suite (no ctest arguments) ends with every fuzz harness for 20 s under ASan + UBSan,
# from its seeds and kept inputs; a crash, sanitizer report, leak, hang or runaway allocation fails it.
if [ $# -eq 0 ]; then
  tools/fuzz/run.sh 20
fi
