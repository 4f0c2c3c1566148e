#!/usr/bin/env bash
# tests/launch/slurm_localhost.sh — bring up a private single-node Slurm on localhost and run a
# 2-rank MPI job through launch/slurm/secateur.sbatch (sbatch, both launchers) and through srun.
#
#   tests/launch/slurm_localhost.sh BINARY [ARGS...]
#
# BINARY is an MPI program that prints "rank R/N ..." on each rank (ctest passes test_mpi_hello).
# The test:
#   1. installs slurm-wlm and munge with apt-get when they are missing (needs root);
#   2. starts its own munged, slurmctld and slurmd, all state under one temporary directory, on
#      free ports, with a generated slurm.conf (NodeName=localhost NodeAddr=127.0.0.1, cons_tres,
#      proctrack/linuxproc, task/none, munge auth): nothing depends on /etc/slurm or /etc/munge,
#      and a Slurm already running on this machine is left alone;
#   3. waits (bounded) until sinfo shows the node idle;
#   4. sbatch of launch/slurm/secateur.sbatch with 2 tasks, submitted from outside the repository,
#      once with the automatic launcher (srun --mpi=pmix where available) and once with mpirun
#      inside the allocation: the job's output must have "rank 0/2" and "rank 1/2"; then
#      parallel.tp=4 on 2 tasks per node must be refused with a clear error; then
#      launch/slurm/sweep.sbatch as a 2-task job array: each task runs its own sweep line; and,
#      with SECATEUR_SLURM_TEST_SECATEUR (the real binary) and SECATEUR_SLURM_TEST_MODEL (SmolLM2 in
#      HF), `secateur sweep sweep.yaml --slurm`: a score-run array, a 4-point array after it, and
#      the job that collects them into sweep.json, every point done; and a recovery job scancelled
#      after its step-4 checkpoint, then resubmitted with recover.resume=true: the recovered model
#      byte-identical to an uninterrupted job's;
#   5. srun -n 2 (--mpi=pmix when available) of the same command, same check;
#   6. on exit, always: cancels its jobs, stops the processes of its cluster (daemons, slurmstepd,
#      job tasks: found by PID file, command line or SLURM_CONF in their environment) and removes
#      its temporary directory. The leftovers of an earlier run that was killed are found the same
#      way (a temporary directory whose owner PID is gone) and removed first.
# Each job is bounded (120 s; SECATEUR_SLURM_TEST_JOB_TIMEOUT), the node's start too (60 s).
#
# Exit status: 0 pass, 1 fail (with a message and the daemons' log tails), 77 skipped (not root).
# SECATEUR_SLURM_TEST_KEEP=1 keeps the temporary directory for inspection (daemons still stop).
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"

JOB_TIMEOUT=${SECATEUR_SLURM_TEST_JOB_TIMEOUT:-120} # seconds for each job (sbatch, srun)
IDLE_TIMEOUT=60                                     # seconds for the node to become idle
NAME=secateur-slurm-test

log() { echo "[slurm-test] $*"; }
fail() {
  echo "[slurm-test] FAIL: $*" >&2
  exit 1
}

if (($# < 1)); then
  echo "usage: $0 BINARY [ARGS...]   (an MPI program printing 'rank R/N' per rank)" >&2
  exit 2
fi
[[ -x "$1" ]] || fail "'$1' is not an executable file"
binary=$(readlink -f "$1")
shift
prog_args=("$@")
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
sbatch_script=$root/launch/slurm/secateur.sbatch
[[ -f "$sbatch_script" ]] || fail "missing $sbatch_script"

if [[ "$(id -u)" != 0 ]]; then
  echo "[slurm-test] SKIP: needs root (it installs Slurm and runs slurmctld/slurmd as root)"
  exit 77
fi
t_start=$(date +%s)

# --- 1. Slurm and munge -------------------------------------------------------------------------
have_slurm() {
  local c
  for c in slurmctld slurmd sbatch srun sinfo squeue scancel scontrol munged munge unmunge; do
    command -v "$c" >/dev/null || return 1
  done
}
if ! have_slurm; then
  command -v apt-get >/dev/null || fail "Slurm/munge are not installed and there is no apt-get"
  log "installing slurm-wlm and munge (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt_log=$(mktemp "${TMPDIR:-/tmp}/$NAME-apt.XXXXXX.log")
  if ! apt-get install -y -q slurm-wlm munge >"$apt_log" 2>&1; then
    apt-get update -q >>"$apt_log" 2>&1 || true
    apt-get install -y -q slurm-wlm munge >>"$apt_log" 2>&1 ||
      { tail -n 20 "$apt_log" >&2; fail "apt-get install slurm-wlm munge failed (log: $apt_log)"; }
  fi
  rm -f "$apt_log"
  have_slurm || fail "slurm-wlm/munge installed, but their commands are still missing"
  log "installed in $(($(date +%s) - t_start)) s"
fi
log "$(slurmd -V), $(munged --version 2>&1 | awk '{print $1; exit}')"

# --- 2. leftovers of earlier runs ----------------------------------------------------------------
# Each run records its own PID in its directory (owner); a directory whose owner is gone is a
# leftover. The processes of a run are those whose command line names its directory (the daemons)
# or whose environment has SLURM_CONF in it (slurmstepd and job tasks, which inherit it): only
# those are signalled. Builtins only while scanning, so the scan never sees itself.
tmp_base=${TMPDIR:-/tmp}
procs_of() { # DIR : PIDs of the processes that belong to DIR's cluster
  local p pid
  local -a a
  for p in /proc/[0-9]*; do
    pid=${p#/proc/}
    ((pid != $$ && pid != BASHPID)) || continue
    mapfile -d '' a 2>/dev/null <"$p/cmdline" || continue
    if [[ "${a[*]}" == *"$1/"* ]]; then echo "$pid"; continue; fi
    mapfile -d '' a 2>/dev/null <"$p/environ" || continue
    [[ "${a[*]}" == *"SLURM_CONF=$1/"* ]] && echo "$pid"
  done
}
daemon_alive() { # DIR NAME : is that run's daemon still running (a zombie is not)?
  local pid
  local -a a
  pid=$(awk -v n="$2" '$2 == n {print $1}' "$1/daemons" 2>/dev/null)
  [[ -n "$pid" ]] && mapfile -d '' a 2>/dev/null <"/proc/$pid/cmdline" && [[ "${a[*]}" == *"$1/"* ]]
}
alive() { daemon_alive "$T" "$1"; }
cancel_jobs() { # CONF : cancel every job of that cluster, wait (bounded) until they are gone
  local jobs i
  jobs=$(SLURM_CONF=$1 timeout 5 squeue -h -o %i 2>/dev/null) || return 0
  [[ -n "$jobs" ]] || return 0
  # shellcheck disable=SC2086
  SLURM_CONF=$1 timeout 5 scancel $jobs 2>/dev/null
  for ((i = 0; i < 20; i++)); do
    [[ -z "$(SLURM_CONF=$1 timeout 5 squeue -h -o %i 2>/dev/null)" ]] && return 0
    sleep 0.25
  done
}
stop_procs() { # DIR : stop the daemons one by one (slurmctld first: it shuts down slowly when
  local i name pid  # slurmd goes first), then TERM the rest, wait up to 3 s, KILL what is left
  local -a pids     # (slurmstepd and srun outlive a TERM)
  for name in slurmctld slurmd munged; do
    daemon_alive "$1" "$name" || continue
    pid=$(awk -v n="$name" '$2 == n {print $1}' "$1/daemons")
    kill -TERM "$pid" 2>/dev/null || continue
    for ((i = 0; i < 50; i++)); do
      daemon_alive "$1" "$name" || break
      sleep 0.1
    done
  done
  mapfile -t pids < <(procs_of "$1")
  ((${#pids[@]})) || return 0
  kill -TERM "${pids[@]}" 2>/dev/null || true
  for ((i = 0; i < 30; i++)); do
    mapfile -t pids < <(procs_of "$1")
    ((${#pids[@]})) || return 0
    sleep 0.1
  done
  kill -KILL "${pids[@]}" 2>/dev/null || true
}
for old in "$tmp_base/$NAME".*; do
  [[ -d "$old" ]] || continue
  # No owner yet: another run starting right now, unless the directory is older than a minute.
  [[ -f "$old/owner" || -n "$(find "$old" -maxdepth 0 -mmin +1)" ]] || continue
  owner=$(cat "$old/owner" 2>/dev/null || true)
  if [[ "$owner" =~ ^[0-9]+$ ]] && mapfile -d '' cmd 2>/dev/null <"/proc/$owner/cmdline" &&
    [[ "${cmd[*]}" == *slurm_localhost* ]]; then
    continue # another run, still going
  fi
  t0=$SECONDS
  daemon_alive "$old" slurmctld && cancel_jobs "$old/etc/slurm.conf"
  stop_procs "$old"
  rm -rf "$old"
  log "removed the leftovers of an earlier run ($old) in $((SECONDS - t0)) s"
done

# --- 3. a private cluster --------------------------------------------------------------------------
T=$(mktemp -d "$tmp_base/$NAME.XXXXXX")
chmod 711 "$T" # munged wants its socket reachable by every user
echo $$ >"$T/owner"
: >"$T/daemons"
mkdir -p "$T/etc" "$T/munge" "$T/state" "$T/spool" "$T/log" "$T/run" "$T/job" "$T/tmp"
conf=$T/etc/slurm.conf
export SLURM_CONF=$conf
started=0

dump_logs() { # the daemons' stderr (in the foreground mode they log there too)
  local f
  for f in "$T"/log/*.out; do
    [[ -s "$f" ]] || continue
    echo "----- $f (last 15 lines)" >&2
    tail -n 15 "$f" >&2
  done
}
cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  if ((rc != 0 && rc != 77)) && [[ -d "$T" ]]; then dump_logs; fi
  ((started)) && cancel_jobs "$conf"
  unset SLURM_CONF # our own commands from here on must not look like the cluster's processes
  stop_procs "$T"
  if [[ "${SECATEUR_SLURM_TEST_KEEP:-0}" == 1 ]]; then
    log "kept $T"
  else
    rm -rf "$T"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start_daemon() { # NAME CMD... : run in the foreground mode, in the background, logs under $T/log
  local name=$1
  shift
  "$@" </dev/null >"$T/log/$name.out" 2>&1 &
  echo "$! $name" >>"$T/daemons"
  disown $! # no job-control chatter if cleanup has to KILL it
}
daemon_died() { # NAME
  echo "----- $T/log/$1.out" >&2
  tail -n 20 "$T/log/$1.out" >&2 || true
  fail "$1 exited during start-up (logs above)"
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() { # a free TCP port above 20000, not equal to $1
  local p i
  for ((i = 0; i < 200; i++)); do
    p=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
    [[ "$p" != "${1:-}" ]] && ! port_in_use "$p" && { echo "$p"; return 0; }
  done
  fail "no free TCP port found"
}
ctld_port=$(free_port)
slurmd_port=$(free_port "$ctld_port")

# munge: our own key, socket and daemon.
head -c 1024 /dev/urandom >"$T/munge/munge.key"
chmod 600 "$T/munge/munge.key"
sock=$T/munge/munge.socket
start_daemon munged munged --foreground --force --key-file="$T/munge/munge.key" --socket="$sock" \
  --pid-file="$T/munge/munged.pid" --log-file="$T/munge/munged.log" --seed-file="$T/munge/munged.seed"
for ((i = 0; ; i++)); do
  munge -n -S "$sock" 2>/dev/null | unmunge -S "$sock" >/dev/null 2>&1 && break
  alive munged || daemon_died munged
  ((i < 100)) || fail "munged did not answer on $sock within 10 s"
  sleep 0.1
done

cpus=$(nproc)
((cpus >= 2)) || cpus=2 # the job needs 2 CPUs; config_overrides lets slurmd accept more than it has
cat >"$conf" <<EOF
# Generated by tests/launch/slurm_localhost.sh: a single-node Slurm on localhost, for tests only.
ClusterName=secateurtest
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$sock
StateSaveLocation=$T/state
SlurmdSpoolDir=$T/spool
TmpFS=$T/tmp
MailProg=/bin/true
SlurmctldPidFile=$T/run/slurmctld.pid
SlurmdPidFile=$T/run/slurmd.pid
SlurmctldLogFile=$T/log/slurmctld.log
SlurmdLogFile=$T/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SlurmdParameters=config_overrides
ReturnToService=2
KillWait=5
InactiveLimit=0
MinJobAge=60
SchedulerParameters=batch_sched_delay=0
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF

started=1
t_daemons=$(date +%s)
start_daemon slurmctld slurmctld -D -f "$conf"
start_daemon slurmd slurmd -D -N localhost -f "$conf"
log "slurmctld :$ctld_port, slurmd :$slurmd_port, state in $T"

for ((i = 0; ; i++)); do
  state=$(timeout 5 sinfo -h -n localhost -o %T 2>/dev/null || true)
  [[ "$state" == idle ]] && break
  alive slurmctld || daemon_died slurmctld
  alive slurmd || daemon_died slurmd
  ((i < IDLE_TIMEOUT * 5)) || fail "node localhost not idle after ${IDLE_TIMEOUT} s (sinfo state: '${state:-no answer}')"
  sleep 0.2
done
log "node localhost idle $(($(date +%s) - t_daemons)) s after the daemons started"

plugins=$(srun --mpi=list 2>&1) || true
if grep -qw pmix <<<"$plugins"; then pmix=1; else pmix=0; fi

# --- 4. sbatch: secateur.sbatch (both launchers), the TP-per-node check, sweep.sbatch ------------
check_ranks() { # FILE WHAT
  local r
  for r in 0 1; do
    grep -qE "rank $r/2([^0-9]|$)" "$1" || { echo "----- $1" >&2; cat "$1" >&2; fail "$2: no 'rank $r/2' in its output"; }
  done
}
# Both set globals rather than print: a long loop inside $(...) would be a subshell that outlives
# this script if it is killed.
submit() { # LAUNCHER SBATCH_ARGS... : submit with the test's environment; sets job_id
  local launcher=$1
  shift
  # From a directory outside the repository: the scripts must find the repository themselves.
  job_id=$(cd "$T/job" && SECATEUR_BIN=$binary SECATEUR_SUBCOMMAND='' SECATEUR_LAUNCHER=$launcher TMPDIR=$T/tmp \
    timeout 30 sbatch --parsable --nodes=1 --ntasks-per-node=2 --time=2 "$@") || fail "sbatch $* was refused"
  job_id=${job_id%%;*}
}
# WHAT : poll until every record of job $job_id (each array task) has ended; sets job_states to
# their final states, space-separated. (Polled: sbatch --wait sleeps up to ~10 s after the end.)
wait_job() {
  local t0=$SECONDS
  while :; do
    job_states=$(timeout 10 scontrol show job -o "$job_id" 2>/dev/null | grep -o 'JobState=[A-Z_]*' | cut -d= -f2 | tr '\n' ' ')
    job_states=${job_states% }
    if [[ -n "$job_states" ]] &&
      ! tr ' ' '\n' <<<"$job_states" | grep -qvE '^(COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY|PREEMPTED|BOOT_FAIL|DEADLINE)$'; then
      return 0
    fi
    ((SECONDS - t0 < JOB_TIMEOUT)) || fail "$1: job $job_id not done within $JOB_TIMEOUT s (states: ${job_states:-none})"
    sleep 0.25
  done
}

for launcher in auto mpirun; do
  t0=$SECONDS
  out=$T/job/sbatch-$launcher.out
  submit "$launcher" --job-name="test-$launcher" --output="$out" "$sbatch_script" "${prog_args[@]}"
  wait_job "sbatch ($launcher)"
  [[ -f "$out" ]] || fail "sbatch ($launcher): job $job_id ($job_states) wrote no output"
  [[ "$job_states" == COMPLETED ]] || { cat "$out" >&2; fail "sbatch ($launcher): job $job_id ended $job_states"; }
  check_ranks "$out" "sbatch ($launcher), job $job_id"
  log "sbatch ($launcher) job $job_id: $(grep -m1 -o 'launcher [a-z]*' "$out"), $(grep -cE 'rank [0-9]+/2' "$out") rank lines, $((SECONDS - t0)) s"
done

# A TP group must not span nodes: parallel.tp=4 on 2 tasks per node stops before launching.
t0=$SECONDS
out=$T/job/sbatch-tp.out
submit auto --job-name=test-tp --output="$out" "$sbatch_script" "${prog_args[@]}" parallel.tp=4
wait_job "sbatch (parallel.tp=4)"
if [[ "$job_states" != FAILED ]] || ! grep -q 'parallel.tp=4 does not divide the 2 tasks of a node' "$out"; then
  cat "$out" >&2
  fail "sbatch with parallel.tp=4 on 2 tasks per node: expected a failed job and a clear error (got $job_states)"
fi
log "sbatch (parallel.tp=4, 2 tasks per node) job $job_id: refused as expected, $((SECONDS - t0)) s"

# A sweep: a job array of 2 runs over a sweep file with a comment, a blank line, quotes, and a
# line without run.dir (which gets runs/sweep-<array job>/<index>).
t0=$SECONDS
printf '%s\n' '# a tiny sweep' 'sweep.x=1 run.dir=runs/one' '' "sweep.x=2 'sweep.y=two words'" >"$T/job/sweep.txt"
submit auto --job-name=test-sweep --array=0-1 --output="$T/job/sweep-%a.out" \
  "$root/launch/slurm/sweep.sbatch" "$T/job/sweep.txt" "${prog_args[@]}" common.k=v
wait_job "sweep.sbatch --array=0-1"
[[ "$job_states" == "COMPLETED COMPLETED" ]] || { cat "$T"/job/sweep-*.out >&2; fail "sweep job $job_id: states $job_states"; }
want=("common.k=v sweep.x=1 run.dir=runs/one]" "common.k=v sweep.x=2 sweep.y=two words run.dir=runs/sweep-$job_id/1]")
for a in 0 1; do
  check_ranks "$T/job/sweep-$a.out" "sweep task $a"
  [[ $(grep -E 'rank [01]/2 ' "$T/job/sweep-$a.out" | grep -cF "${want[a]}") == 2 ]] ||
    { cat "$T/job/sweep-$a.out" >&2; fail "sweep task $a: both ranks should end their arguments with '${want[a]}'"; }
done
log "sweep.sbatch array job $job_id: 2 tasks, each with its own line of overrides, $((SECONDS - t0)) s"

# A sweep.yaml through `secateur sweep --slurm` (when ctest gives the real binary and SmolLM2): an
# array of its one score run, an array of its 4 points after it, and a job collecting the sweep.
if [[ -n "${SECATEUR_SLURM_TEST_SECATEUR:-}" && -d "${SECATEUR_SLURM_TEST_MODEL:-}" ]]; then
  t0=$SECONDS
  sw=$T/job/sweep-yaml
  cat >"$T/job/sweep.yaml" <<EOF
dir: $sw
parallel: 2
set:
  model.path: $SECATEUR_SLURM_TEST_MODEL
  run.stages: [prune, eval]
  run.threads: 1
  eval.windows: [128]
  eval.max_tokens: 512
  eval.speed: false
grid:
  prune.criterion: [taylor_element1, l1]
  prune.ratio: [0.1, 0.2]
EOF
  job_id=$(cd "$T/job" && TMPDIR=$T/tmp SECATEUR_LAUNCHER=mpirun timeout 60 "$SECATEUR_SLURM_TEST_SECATEUR" sweep \
    "$T/job/sweep.yaml" --slurm --sbatch "--nodes=1 --ntasks-per-node=1 --time=5" 2>"$T/job/sweep-submit.err" | tail -1) ||
    { cat "$T/job/sweep-submit.err" >&2; fail "secateur sweep --slurm was refused"; }
  [[ "$job_id" =~ ^[0-9]+$ ]] || { cat "$T/job/sweep-submit.err" >&2; fail "secateur sweep --slurm printed no job id"; }
  JOB_TIMEOUT=$((JOB_TIMEOUT * 2)) wait_job "secateur sweep --slurm (collect job)"
  if [[ "$job_states" != COMPLETED || ! -f "$sw/sweep.json" ]]; then
    cat "$sw"/slurm-*.out >&2 || true
    fail "secateur sweep --slurm: the collect job $job_id ended $job_states (sweep.json: $(ls "$sw" 2>&1))"
  fi
  summary=$(python3 -c 'import json, sys
p = json.load(open(sys.argv[1]))["points"]
print(len(p), sum(x["status"] == "done" and "128" in x["ppl"] for x in p), sum(bool(x.get("scores_reused")) for x in p))' \
    "$sw/sweep.json")
  [[ "$summary" == "4 4 2" ]] || { cat "$sw"/slurm-*.out >&2; fail "sweep --slurm: points, done with ppl@128, reusing scores: $summary (want 4 4 2)"; }
  log "secateur sweep --slurm: 1 score run, 4 points after it, collected by job $job_id into sweep.md, $((SECONDS - t0)) s"
fi

# A preempted recovery (when ctest gives the real binary and SmolLM2): scancel of the job once its
# step-4 checkpoint is complete, then the same job submitted again with recover.resume=true,
# continues from step 4 to a recovered model byte-identical to an uninterrupted job's.
if [[ -n "${SECATEUR_SLURM_TEST_SECATEUR:-}" && -d "${SECATEUR_SLURM_TEST_MODEL:-}" ]]; then
  t0=$SECONDS
  recover_job() { # RUN_DIR OUT [key=value...]
    local dir=$1 out=$2
    shift 2
    job_id=$(cd "$T/job" && SECATEUR_BIN=$SECATEUR_SLURM_TEST_SECATEUR SECATEUR_LAUNCHER=mpirun TMPDIR=$T/tmp       timeout 30 sbatch --parsable --nodes=1 --ntasks-per-node=2 --time=5 --output="$out" "$sbatch_script"       run.stages=[recover] "model.path=$SECATEUR_SLURM_TEST_MODEL" "run.dir=$dir" run.threads=1 recover.method=lora       recover.steps=10 recover.save_every=2 recover.batch=2 recover.micro_batch=1 recover.seq_len=32       recover.heldout=0 "$@") || fail "sbatch of a recovery job was refused"
    job_id=${job_id%%;*}
  }
  rec=$T/job/recover
  recover_job "$rec-straight" "$T/job/recover-straight.out"
  JOB_TIMEOUT=$((JOB_TIMEOUT * 2)) wait_job "recovery (uninterrupted)"
  [[ "$job_states" == COMPLETED ]] || { cat "$T/job/recover-straight.out" >&2; fail "recovery job $job_id ended $job_states"; }
  recover_job "$rec-preempted" "$T/job/recover-preempted.out"
  t1=$SECONDS
  until [[ -f "$rec-preempted/checkpoints/step-000004/DONE" ]]; do
    ((SECONDS - t1 < JOB_TIMEOUT)) || fail "recovery job $job_id: no step-4 checkpoint within $JOB_TIMEOUT s"
    sleep 0.1
  done
  timeout 10 scancel "$job_id" || fail "scancel $job_id failed"
  wait_job "recovery (scancelled)"
  [[ "$job_states" == CANCELLED && ! -e "$rec-preempted/recovered" ]] ||
    fail "recovery job $job_id: after scancel, state $job_states and recovered/ $(ls -d "$rec-preempted/recovered" 2>&1)"
  recover_job "$rec-preempted" "$T/job/recover-resumed.out" recover.resume=true
  JOB_TIMEOUT=$((JOB_TIMEOUT * 2)) wait_job "recovery (resubmitted)"
  [[ "$job_states" == COMPLETED ]] || { cat "$T/job/recover-resumed.out" >&2; fail "resubmitted recovery job $job_id ended $job_states"; }
  from=$(grep -o 'resumed from [^ ]* (step [0-9]*)' "$T/job/recover-resumed.out" | head -1)
  [[ "$from" == *"(step "[468]")" ]] || { cat "$T/job/recover-resumed.out" >&2; fail "the resubmitted job did not resume from a checkpoint"; }
  cmp -s "$rec-straight/recovered/model.safetensors" "$rec-preempted/recovered/model.safetensors" ||
    fail "scancel + resubmit: the recovered model differs from the uninterrupted job's"
  log "recovery scancelled after its step-4 checkpoint, resubmitted: $from, recovered model byte-identical, $((SECONDS - t0)) s"
fi

# --- 5. srun -------------------------------------------------------------------------------------
out=$T/job/srun.out
if ((pmix)); then
  TMPDIR=$T/tmp timeout "$JOB_TIMEOUT" srun --mpi=pmix --nodes=1 --ntasks=2 --time=2 "$binary" "${prog_args[@]}" >"$out" 2>&1 ||
    { rc=$?; cat "$out" >&2; fail "srun --mpi=pmix -n 2 exited with $rc"; }
  check_ranks "$out" "srun --mpi=pmix -n 2"
  log "srun --mpi=pmix -n 2: $(grep -c 'rank [0-9]*/2' "$out") rank lines"
else
  # Without pmix srun cannot wire up MPI: check that it starts the two tasks at least.
  # shellcheck disable=SC2016 # expanded by the task's shell
  TMPDIR=$T/tmp timeout "$JOB_TIMEOUT" srun --nodes=1 --ntasks=2 --time=2 bash -c 'echo "rank $SLURM_PROCID/$SLURM_NTASKS"' >"$out" 2>&1 ||
    { rc=$?; cat "$out" >&2; fail "srun -n 2 exited with $rc"; }
  check_ranks "$out" "srun -n 2 (no pmix plugin: plain tasks)"
  log "srun -n 2 (no pmix plugin in this Slurm: plain tasks, not MPI)"
fi

log "PASS in $(($(date +%s) - t_start)) s"
