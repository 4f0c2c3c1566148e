#!/usr/bin/env bash
# Bad grid input under mpirun: each case must end the whole job with a non-zero exit, quickly,
# with one error line from secateur that names the problem (OpenMPI adds its own abort notice).
#   usage: bad_grid.sh SECATEUR HF_MODEL_DIR TMP
set -u
secateur=$1 model=$2 tmp=$3
rm -rf "$tmp" && mkdir -p "$tmp"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
mpi="mpirun --oversubscribe --bind-to none"

# A checkpoint whose shapes disagree with its config: claim a wider MLP than the weights have.
mkdir -p "$tmp/bad-shapes"
for f in model.safetensors tokenizer.json tokenizer_config.json; do ln -sf "$(readlink -f "$model")/$f" "$tmp/bad-shapes/$f"; done
sed 's/"intermediate_size": 1536/"intermediate_size": 2048/' "$model/config.json" > "$tmp/bad-shapes/config.json"

fail=0
check() {   # name, expected words (regex), command...
  local name=$1 want=$2; shift 2
  local start=$SECONDS
  timeout 90 "$@" >"$tmp/$name.out" 2>"$tmp/$name.err"
  local rc=$? took=$((SECONDS - start))
  local lines; lines=$(grep -c "secateur: error:" "$tmp/$name.err")
  local line; line=$(grep -m1 "secateur: error:" "$tmp/$name.err")
  if [ $rc -ne 0 ] && [ $rc -ne 124 ] && [ "$lines" -eq 1 ] && echo "$line" | grep -Eq "$want"; then
    echo "OK   $name: exit $rc in ${took}s: $line"
  else
    echo "FAIL $name: exit $rc in ${took}s, $lines error line(s):"; sed 's/^/     /' "$tmp/$name.err" | head -20
    fail=1
  fi
}
check tp-does-not-divide-world "world size 4 is not divisible by tp 3|not divisible" \
  $mpi -np 4 "$secateur" eval parallel.tp=3 model.path="$model" run.dir="$tmp/r1"
check tp-larger-than-world "tp=4 is larger than the world of 2" \
  $mpi -np 2 "$secateur" eval parallel.tp=4 model.path="$model" run.dir="$tmp/r2"
check shapes-disagree-with-config "gate_proj.weight' has shape 1536x576 in the checkpoint, the config needs 2048x576" \
  $mpi -np 2 "$secateur" eval parallel.tp=2 model.path="$tmp/bad-shapes" run.dir="$tmp/r3" eval.max_tokens=256
exit $fail
