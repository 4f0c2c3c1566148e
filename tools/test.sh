#!/usr/bin/env bash
# tools/test.sh — set up if needed, then run the whole test suite (unit, fidelity, CLI).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
cd build
exec ctest --output-on-failure -j "$(nproc)" "$@"
