#!/usr/bin/env bash
# launch/mpirun.sh — run Secateur on N ranks with mpirun (OpenMPI), on one machine or on the hosts
# of a hostfile.
#
#   launch/mpirun.sh -n N [--tp T] [--hostfile FILE] [--bind POLICY] [--dry-run] -- <secateur args...>
#
# What it adds to a plain `mpirun -n N build/secateur ...`:
#   * --oversubscribe when N exceeds this machine's cores (one machine, no hostfile);
#   * --bind-to none (mpirun otherwise pins each rank to one core when N <= 2, which starves
#     LibTorch's intra-op threads); --bind POLICY picks another (core, socket, numa, ...);
#   * OMPI_ALLOW_RUN_AS_ROOT(_CONFIRM)=1, only when run as root (containers, CI);
#   * OMP_NUM_THREADS = max(1, cores / ranks per host), unless it is already set;
#   * parallel.tp=T appended as a config override when --tp is given (the world is DP x TP with
#     TP the fast index: tp_rank = rank % T, dp_rank = rank / T, so N must be a multiple of T);
#   * -x for the environment the ranks need (threads, CUDA, NCCL, Secateur's own SECATEUR_*),
#     so ranks on other hosts see the same settings.
#
# The binary is build/secateur under the repository this script lives in; SECATEUR_BIN overrides
# it (any MPI program works: the tests run a hello-world through this wrapper).
# SECATEUR_MPIRUN_ARGS adds raw mpirun options (word-split), e.g. "--mca btl tcp,self".
#
# Examples:
#   launch/mpirun.sh -n 2 -- run configs/default.yaml
#   launch/mpirun.sh -n 4 --tp 2 -- prune configs/x.yaml prune.ratio=0.2
#   launch/mpirun.sh -n 16 --tp 8 --hostfile hosts.txt -- run configs/x.yaml   # hosts.txt: "node1 slots=8"
set -euo pipefail

prog=launch/mpirun.sh
usage() {
  cat <<EOF
usage: $prog -n N [--tp T] [--hostfile FILE] [--bind POLICY] [--dry-run] -- <secateur args...>

  -n, -np N        number of ranks (required, >= 1)
  --tp T           tensor-parallel size: appends parallel.tp=T (N must be a multiple of T)
  --hostfile FILE  OpenMPI hostfile ("host slots=K" per line); default: this machine only
  --bind POLICY    mpirun --bind-to POLICY (default: none)
  --dry-run        print the command instead of running it
  -h, --help       this message

Runs \${SECATEUR_BIN:-<repo>/build/secateur} <secateur args...> under mpirun.
EOF
}
die() {
  echo "$prog: error: $*" >&2
  echo "run '$prog --help' for usage" >&2
  exit 2
}
is_pos_int() { [[ "$1" =~ ^[1-9][0-9]*$ ]]; }

nranks="" tp="" hostfile="" bind=none dry_run=0
while (($#)); do
  case "$1" in
    -n|-np|--np)
      (($# >= 2)) || die "$1 needs a value"
      nranks=$2; shift 2 ;;
    -n=*|-np=*|--np=*) nranks=${1#*=}; shift ;;
    --tp)
      (($# >= 2)) || die "--tp needs a value"
      tp=$2; shift 2 ;;
    --tp=*) tp=${1#*=}; shift ;;
    --hostfile)
      (($# >= 2)) || die "--hostfile needs a value"
      hostfile=$2; shift 2 ;;
    --hostfile=*) hostfile=${1#*=}; shift ;;
    --bind)
      (($# >= 2)) || die "--bind needs a value"
      bind=$2; shift 2 ;;
    --bind=*) bind=${1#*=}; shift ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; break ;;
    *) die "unknown option '$1' (Secateur's own arguments go after '--')" ;;
  esac
done

[[ -n "$nranks" ]] || die "-n N is required"
is_pos_int "$nranks" || die "-n: '$nranks' is not a positive integer"
if [[ -n "$tp" ]]; then
  is_pos_int "$tp" || die "--tp: '$tp' is not a positive integer"
  ((nranks % tp == 0)) || die "-n $nranks is not a multiple of --tp $tp (world = DP x TP)"
fi
if [[ -n "$hostfile" ]]; then
  [[ -r "$hostfile" ]] || die "--hostfile: cannot read '$hostfile'"
fi
command -v mpirun >/dev/null || die "mpirun not found on PATH (Debian: apt-get install openmpi-bin)"

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
bin=${SECATEUR_BIN:-$root/build/secateur}
[[ -x "$bin" ]] || die "binary '$bin' not found or not executable (build it, or set SECATEUR_BIN)"

cores=$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)
args=(mpirun -n "$nranks" --bind-to "$bind")

# Ranks per host: all on this machine, or spread over the hostfile's distinct hosts.
per_host=$nranks
if [[ -n "$hostfile" ]]; then
  args+=(--hostfile "$hostfile")
  nhosts=$(awk '!/^[[:space:]]*(#|$)/ { print $1 }' "$hostfile" | sort -u | wc -l)
  ((nhosts >= 1)) || die "--hostfile: '$hostfile' names no host"
  per_host=$(((nranks + nhosts - 1) / nhosts))
elif ((nranks > cores)); then
  args+=(--oversubscribe)
fi

if [[ -z "${OMP_NUM_THREADS:-}" ]]; then
  threads=$((cores / per_host))
  ((threads >= 1)) || threads=1
  export OMP_NUM_THREADS=$threads
fi
if [[ "$(id -u)" == 0 ]]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi

# Forward the environment the ranks read (mpirun copies nothing to remote hosts by itself).
while IFS= read -r name; do
  args+=(-x "$name")
done < <(compgen -e | grep -E '^(OMP_|MKL_|OPENBLAS_|SECATEUR_|NCCL_|CUDA_|TORCH_|PYTORCH_|UCX_|LD_LIBRARY_PATH$|PATH$|OPAL_PREFIX$)' | sort)

if [[ -n "${SECATEUR_MPIRUN_ARGS:-}" ]]; then
  read -ra extra <<<"$SECATEUR_MPIRUN_ARGS"
  args+=("${extra[@]}")
fi

args+=("$bin" "$@")
[[ -n "$tp" ]] && args+=("parallel.tp=$tp")

if ((dry_run)); then
  printf '%q ' "${args[@]}"
  echo
  exit 0
fi
exec "${args[@]}"
