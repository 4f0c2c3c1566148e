# launch/slurm/common.sh — the launch logic shared by secateur.sbatch and sweep.sbatch.
# shellcheck shell=bash
# Sourced (not run) inside a Slurm allocation, after the caller has set SECATEUR_ROOT.
#
# Environment it reads:
#   SECATEUR_BIN         the program to run (default: $SECATEUR_ROOT/build/secateur)
#   SECATEUR_SUBCOMMAND  prepended when the first argument is not already a subcommand (default: run;
#                        set it empty to pass the arguments through untouched, e.g. for another binary)
#   SECATEUR_LAUNCHER    auto (default: srun --mpi=pmix when `srun --mpi=list` shows pmix, else
#                        mpirun), srun, or mpirun
#   OMP_NUM_THREADS      kept when set; else SLURM_CPUS_PER_TASK; else the node's CPUs / its tasks

secateur_log() { echo "[secateur-slurm] $*"; }
secateur_die() {
  echo "[secateur-slurm] error: $*" >&2
  exit 2
}

# Tasks on each node, one count per line: SLURM_TASKS_PER_NODE looks like "4(x2),3".
secateur_tasks_per_node() {
  local item count reps
  local IFS=,
  for item in ${SLURM_TASKS_PER_NODE:-${SLURM_NTASKS:-1}}; do
    count=${item%%(*}
    reps=1
    [[ "$item" == *"(x"* ]] && { reps=${item#*(x}; reps=${reps%)}; }
    for ((; reps > 0; reps--)); do echo "$count"; done
  done
}

# A TP group must stay inside one node: with TP the fast index (tp_rank = rank % tp) and Slurm's
# default block distribution, that holds when every node's task count is a multiple of tp.
secateur_check_tp() {
  local arg tp="" n
  for arg in "$@"; do
    [[ "$arg" == parallel.tp=* ]] && tp=${arg#parallel.tp=}
  done
  [[ -z "$tp" ]] && return 0
  [[ "$tp" =~ ^[1-9][0-9]*$ ]] || secateur_die "parallel.tp='$tp' is not a positive integer"
  while read -r n; do
    ((n % tp == 0)) || secateur_die "parallel.tp=$tp does not divide the $n tasks of a node" \
      "(SLURM_TASKS_PER_NODE=${SLURM_TASKS_PER_NODE:-?}): a TP group would span nodes." \
      "Use --ntasks-per-node a multiple of tp, and tp <= GPUs per node."
  done < <(secateur_tasks_per_node)
}

secateur_set_threads() {
  if [[ -z "${OMP_NUM_THREADS:-}" ]]; then
    if [[ -n "${SLURM_CPUS_PER_TASK:-}" ]]; then
      OMP_NUM_THREADS=$SLURM_CPUS_PER_TASK
    else
      local cpus=${SLURM_CPUS_ON_NODE:-1} tasks
      tasks=$(secateur_tasks_per_node | head -n 1)
      OMP_NUM_THREADS=$((cpus / (tasks > 0 ? tasks : 1)))
      ((OMP_NUM_THREADS >= 1)) || OMP_NUM_THREADS=1
    fi
  fi
  export OMP_NUM_THREADS
}

secateur_has_pmix() {
  local plugins
  plugins=$(srun --mpi=list 2>&1) || return 1
  grep -qw pmix <<<"$plugins"
}

# secateur_launch ARGS... — run the binary on every task of the allocation.
secateur_launch() {
  [[ -n "${SLURM_JOB_ID:-}" ]] || secateur_die "not inside a Slurm allocation (submit with sbatch)"
  local bin=${SECATEUR_BIN:-$SECATEUR_ROOT/build/secateur}
  [[ -x "$bin" ]] || secateur_die "binary '$bin' not found or not executable (build it, or set SECATEUR_BIN)"

  local -a cmd=("$@")
  local sub=${SECATEUR_SUBCOMMAND-run}
  # A bare lowercase word first is already a subcommand (run, prune, eval, ...); a config file or
  # key=value is not.
  if [[ -n "$sub" ]] && ! [[ "${1:-}" =~ ^[a-z][a-z0-9_-]*$ && ! -e "${1:-}" ]]; then
    cmd=("$sub" "${cmd[@]}")
  fi
  secateur_check_tp "${cmd[@]}"
  secateur_set_threads

  local launcher=${SECATEUR_LAUNCHER:-auto}
  if [[ "$launcher" == auto ]]; then
    if secateur_has_pmix; then launcher=srun; else launcher=mpirun; fi
  fi
  local -a run
  case "$launcher" in
    srun)
      # srun of Slurm 22.05 no longer reads SLURM_CPUS_PER_TASK from the batch step: pass it.
      run=(srun --mpi=pmix --kill-on-bad-exit=1)
      [[ -n "${SLURM_CPUS_PER_TASK:-}" ]] && run+=(--cpus-per-task="$SLURM_CPUS_PER_TASK")
      run+=("$bin")
      ;;
    mpirun)
      # OpenMPI reads the allocation (hosts, slots) from Slurm; mpirun.sh adds root, binding, -x.
      run=(env SECATEUR_BIN="$bin" "$SECATEUR_ROOT/launch/mpirun.sh" -n "${SLURM_NTASKS:-1}" --)
      ;;
    *) secateur_die "SECATEUR_LAUNCHER='$launcher' (allowed: auto, srun, mpirun)" ;;
  esac

  secateur_log "job ${SLURM_JOB_ID} on ${SLURM_JOB_NUM_NODES:-1} node(s) ${SLURM_JOB_NODELIST:-}," \
    "${SLURM_NTASKS:-1} tasks (per node: ${SLURM_TASKS_PER_NODE:-?}), OMP_NUM_THREADS=$OMP_NUM_THREADS," \
    "launcher $launcher"
  secateur_log "command: ${run[*]} ${cmd[*]}"
  "${run[@]}" "${cmd[@]}"
}
