#!/usr/bin/env bash
# tools/fuzz/run.sh — builds the libFuzzer harnesses (clang, ASan + UBSan) in build-fuzz/ and runs
# each one for a time budget, starting from its seeds and kept inputs (tools/fuzz/corpus/<name>/) and
# from what earlier runs grew (build-fuzz/corpus/<name>/). Prints one JSON line per harness:
# executions, speed, coverage (libFuzzer's cov and ft), corpus size, peak RSS, and the findings (a
# crash, sanitizer report, timeout, leak or out-of-memory, kept under build-fuzz/findings/<name>/).
# Exits non-zero when any harness has a finding.
#
# usage: tools/fuzz/run.sh [--runs N] [--json FILE] [SECONDS [HARNESS...]]
#   SECONDS per harness (default 20; CI's smoke run), --runs stops a harness after N executions
#   (a campaign: --runs 1000000 3600), --json also appends the lines to FILE.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
runs=0 json=""
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs=$2; shift 2 ;;
    --json) json=$2; shift 2 ;;
    -h|--help) sed -n 2,13p "$0"; exit 0 ;;
    *) break ;;
  esac
done
seconds=${1:-20}
shift || true

command -v clang++ >/dev/null || { echo "[fuzz] clang++ is missing (Debian: clang, libclang-rt-14-dev)" >&2; exit 2; }
export CCACHE_BASEDIR="$root" CCACHE_NOHASHDIR=true
if [ ! -f build-fuzz/build.ninja ]; then
  cmake -S . -B build-fuzz -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=Release \
        -DCMAKE_CXX_FLAGS_RELEASE="-O1" -DSECATEUR_FUZZ=ON >/dev/null
fi
echo "[fuzz] building the harnesses in build-fuzz/" >&2
cmake --build build-fuzz --target fuzz_all -- -j "$(nproc)" >&2

harnesses=("$@")
if [ ${#harnesses[@]} -eq 0 ]; then
  for f in build-fuzz/tools/fuzz/fuzz_*; do [ -x "$f" ] && harnesses+=("${f##*/fuzz_}"); done
fi
# Leaks are checked per input (-detect_leaks: an input that mallocs more than it frees is re-run under LSan).
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=0:handle_abort=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
status=0
for h in "${harnesses[@]}"; do
  bin=build-fuzz/tools/fuzz/fuzz_$h
  [ -x "$bin" ] || { echo "[fuzz] no harness '$h' (build-fuzz/tools/fuzz/fuzz_*)" >&2; exit 2; }
  work=build-fuzz/corpus/$h findings=build-fuzz/findings/$h log=build-fuzz/logs/$h.log
  mkdir -p "$work" "$findings" build-fuzz/logs
  rc=0 start=$SECONDS
  "$bin" -max_total_time="$seconds" -runs="$([ "$runs" -gt 0 ] && echo "$runs" || echo -1)" \
         -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=1024 -print_final_stats=1 -detect_leaks=1 \
         -artifact_prefix="$findings/" "$work" "tools/fuzz/corpus/$h" >"$log" 2>&1 || rc=$?
  line=$(python3 - "$h" "$seconds" "$rc" "$log" "$work" "$findings" "$((SECONDS - start))" <<'PY'
import json, os, re, sys
h, seconds, rc, log, work, findings, wall = sys.argv[1:]
text = open(log, errors="replace").read()
stat = dict(re.findall(r"^stat::(\w+):\s+(\d+)", text, re.M))
cov = re.findall(r"cov: (\d+) ft: (\d+)", text)
found = sorted(os.path.join(findings, f) for f in os.listdir(findings))
execs = int(stat.get("number_of_executed_units", 0))
elapsed = max(1, int(wall))
print(json.dumps({"harness": h, "budget_s": int(seconds), "executions": execs, "seconds": elapsed,
                  "execs_per_s": round(execs / elapsed, 1),
                  "coverage": int(cov[-1][0]) if cov else 0, "features": int(cov[-1][1]) if cov else 0,
                  "corpus": len(os.listdir(work)), "peak_rss_mb": int(stat.get("peak_rss_mb", 0)),
                  "findings": found, "exit": int(rc), "log": log}))
PY
)
  echo "$line"
  [ -n "$json" ] && echo "$line" >> "$json"
  if [ "$rc" -ne 0 ] || ! grep -q '"findings": \[\]' <<<"$line"; then
    status=1
    echo "[fuzz] $h: a finding (exit $rc); its log: $log" >&2
    grep -m 3 -E "ERROR: |runtime error:|\[fuzz\] finding|SUMMARY" "$log" >&2 || true
  fi
done
exit $status
