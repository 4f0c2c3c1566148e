#!/usr/bin/env bash
# tests/launch/mpirun_wrapper.sh — launch/mpirun.sh end to end, with an MPI hello-world standing
# in for secateur (SECATEUR_BIN). ctest: tests/launch/mpirun_wrapper.sh $<TARGET_FILE:test_mpi_hello>
#
# Checks: 2 ranks print "rank 0/2" and "rank 1/2" and get the arguments; --tp 2 appends
# parallel.tp=2; OMP_NUM_THREADS defaults to max(1, cores / ranks) and a set value is kept;
# more ranks than cores run (--oversubscribe); bad arguments exit 2 with a message.
set -euo pipefail

fail() {
  echo "[mpirun-wrapper-test] FAIL: $*" >&2
  exit 1
}
(($# == 1)) || { echo "usage: $0 MPI_HELLO_BINARY" >&2; exit 2; }
[[ -x "$1" ]] || fail "'$1' is not an executable file"
export SECATEUR_BIN=$1
wrapper=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/launch/mpirun.sh
cores=$(nproc)
unset OMP_NUM_THREADS
out=$(mktemp)
trap 'rm -f "$out"' EXIT

run() { # EXPECTED_RC ARGS... : run the wrapper, output in $out
  local want=$1 rc=0
  shift
  timeout 60 "$wrapper" "$@" >"$out" 2>&1 || rc=$?
  ((rc == want)) || { cat "$out" >&2; fail "launch/mpirun.sh $* exited with $rc, expected $want"; }
}
expect() { # PATTERN WHAT : an extended regex the output must match
  grep -qE -- "$1" "$out" || { cat "$out" >&2; fail "$2: no line matching '$1'"; }
}
count() { grep -cE -- "$1" "$out" || true; }

# Two ranks, arguments passed through, default threads.
run 0 -n 2 -- run cfg.yaml a.b=1
expect 'rank 0/2 .*args \[run cfg.yaml a.b=1\]' "-n 2"
expect 'rank 1/2 .*args \[run cfg.yaml a.b=1\]' "-n 2"
threads=$((cores / 2 > 0 ? cores / 2 : 1))
[[ $(count "omp_threads $threads ") == 2 ]] || { cat "$out" >&2; fail "-n 2: OMP_NUM_THREADS is not $threads on both ranks"; }

# --tp appends the override; a set OMP_NUM_THREADS is kept.
OMP_NUM_THREADS=3 run 0 -n 2 --tp 2 -- run cfg.yaml
[[ $(count 'omp_threads 3 args \[run cfg.yaml parallel.tp=2\]') == 2 ]] ||
  { cat "$out" >&2; fail "--tp 2: parallel.tp=2 or OMP_NUM_THREADS=3 missing"; }

# More ranks than cores.
n=$((cores + 1))
run 0 -n "$n" -- x
[[ $(count "rank [0-9]+/$n ") == "$n" ]] || { cat "$out" >&2; fail "-n $n (> $cores cores): not $n ranks"; }
expect 'omp_threads 1 ' "-n $n: OMP_NUM_THREADS"

# Bad arguments: exit 2 and a message naming the problem.
run 2 -- x
expect 'error: -n N is required' "no -n"
run 2 -n two -- x
expect "error: -n: 'two' is not a positive integer" "-n two"
run 2 -n 3 --tp 2 -- x
expect 'error: -n 3 is not a multiple of --tp 2' "-n 3 --tp 2"
run 2 -n 2 --frobnicate -- x
expect "error: unknown option '--frobnicate'" "unknown option"
SECATEUR_BIN=/nonexistent/secateur run 2 -n 2 -- x
expect "binary '/nonexistent/secateur' not found" "missing binary"
run 0 --help
expect '^usage: launch/mpirun.sh -n N' "--help"

echo "[mpirun-wrapper-test] PASS"
