"""Checkpoint and resume of `secateur recover`, under mpirun with DP = 2 (CPU, fixed seed):
  * a run killed with SIGKILL after its step-8 checkpoint, then resumed, ends with weights
    byte-identical to an uninterrupted run;
  * incomplete checkpoints are never loaded: a newer one without DONE and a DONE one with a
    truncated file are skipped (resume takes step 4, and still ends byte-identical);
  * with only incomplete checkpoints, resume stops with a clear error;
  * the training-time pruners resume the same way, their state (GUM's running cosine statistics and
    multipliers, RPP's reweighting, IMP's masks) in the checkpoint: gum, rpp and imp runs killed
    after step 8 and resumed end with weights, masks and gum.json / sparsity.json byte-identical to
    uninterrupted runs; a checkpoint of another grid is refused, naming both grids.
The model is a small random LLaMA (transformers' init) with SmolLM2's tokenizer.
"""
import argparse, os, shutil, signal, subprocess, sys, time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from random_llama import make_random_llama  # noqa: E402

ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMP_NUM_THREADS="1")


def make_model(tokenizer_dir, out):
    make_random_llama(tokenizer_dir, out, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      tie_word_embeddings=True)


def command(a, run_dir, model, *extra, stage="recover", ranks=2):
    return ["mpirun", "--oversubscribe", "--bind-to", "none", "-np", str(ranks), a.secateur, "run",
            f"run.stages=[{stage}]", f"model.path={model}", f"run.dir={run_dir}", "recover.method=full",
            "recover.steps=12", "recover.save_every=4", "recover.batch=4", "recover.micro_batch=1",
            "recover.seq_len=32", "recover.lr=0.001", *extra]


def weights(run_dir):
    return open(os.path.join(run_dir, "recovered", "model.safetensors"), "rb").read()


def kill_after(cmd, done_marker):
    """Starts cmd, SIGKILLs mpirun and its ranks once done_marker exists; True if it had not finished."""
    p = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    while not os.path.exists(done_marker) and p.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    finished = p.poll() is not None
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    return not finished


# Training-time pruning runs: (name, stage, its options, the files that must come out byte-identical).
PRUNERS = [
    ("gum", "gum", ["gum.method=gum", "gum.keep=0.5", "gum.lambda=10", "gum.warmup=0.1"],
     ["pruned/model.safetensors", "gum.json"]),
    ("rpp", "sparse", ["sparse.method=rpp", "sparse.sparsity=0.5", "sparse.reweight_every=5", "sparse.prune_at=0.75",
                       "sparse.gamma=1"], ["sparse/model.safetensors", "sparse/masks.safetensors", "sparsity.json"]),
    ("imp", "sparse", ["sparse.method=imp", "sparse.sparsity=0.5", "sparse.rounds=4", "sparse.prune_at=0.75"],
     ["sparse/model.safetensors", "sparse/masks.safetensors", "sparsity.json"]),
]


def resume_pruner(a, model, name, stage, options, outputs):
    ok = True
    straight, killed = (os.path.join(a.tmp, f"{name}-{k}") for k in ("straight", "killed"))
    subprocess.run(command(a, straight, model, *options, stage=stage), check=True, env=ENV, capture_output=True)
    done8 = os.path.join(killed, f"checkpoints-{stage}", "step-000008", "DONE")
    interrupted = kill_after(command(a, killed, model, *options, stage=stage), done8)
    r = subprocess.run(command(a, killed, model, *options, "recover.resume=true", stage=stage), env=ENV,
                       capture_output=True, text=True)
    resumed = "(step 8)" in r.stdout + r.stderr
    same = r.returncode == 0 and all(open(os.path.join(killed, f), "rb").read() == open(os.path.join(straight, f), "rb").read()
                                     for f in outputs)
    print(f"{name}: killed after step 8's checkpoint ({'mid-run' if interrupted else 'ALREADY FINISHED'}), resumed from "
          f"step 8: {resumed}; {', '.join(outputs)} {'byte-identical' if same else 'DIFFERENT'} to the uninterrupted run")
    ok &= interrupted and resumed and same
    return ok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--secateur", required=True)
    ap.add_argument("--tokenizer", required=True, help="an HF directory with SmolLM2's tokenizer files")
    ap.add_argument("--tmp", required=True)
    a = ap.parse_args()
    shutil.rmtree(a.tmp, ignore_errors=True)
    model = os.path.join(a.tmp, "model")
    make_model(a.tokenizer, model)
    ok = True

    # 1. uninterrupted
    straight = os.path.join(a.tmp, "straight")
    subprocess.run(command(a, straight, model), check=True, env=ENV, capture_output=True)

    # 2. SIGKILL once the step-8 checkpoint is complete, then resume
    killed = os.path.join(a.tmp, "killed")
    kill_after(command(a, killed, model), os.path.join(killed, "checkpoints", "step-000008", "DONE"))
    finished = os.path.exists(os.path.join(killed, "recovered"))
    print(f"killed after step 8's checkpoint; the run had {'already finished (too fast to test)' if finished else 'not finished'}")
    ok &= not finished
    subprocess.run(command(a, killed, model, "recover.resume=true"), check=True, env=ENV, capture_output=True)
    same = weights(killed) == weights(straight)
    print(f"resumed after SIGKILL: final weights {'byte-identical' if same else 'DIFFERENT'} to the uninterrupted run")
    ok &= same

    # 3. incomplete checkpoints are skipped: step 12 without DONE, step 8 with a truncated file
    ck = os.path.join(straight, "checkpoints")
    os.remove(os.path.join(ck, "step-000012", "DONE"))
    victim = os.path.join(ck, "step-000008", "optim-rank1.safetensors")
    os.truncate(victim, os.path.getsize(victim) // 2)
    shutil.rmtree(os.path.join(straight, "recovered"))
    r = subprocess.run(command(a, straight, model, "recover.resume=true"), env=ENV, capture_output=True, text=True)
    took4 = "step-000004 (step 4)" in r.stdout + r.stderr
    print(f"incomplete step 12 and truncated step 8 skipped, resumed from step 4: {took4}")
    ok &= r.returncode == 0 and took4 and weights(straight) == weights(killed)

    # 4. nothing complete: a clear error, non-zero exit
    for d in os.listdir(ck):                           # the resumed run rewrote steps 8 and 12
        os.remove(os.path.join(ck, d, "DONE"))
    r = subprocess.run(command(a, straight, model, "recover.resume=true"), env=ENV, capture_output=True, text=True)
    refused = r.returncode != 0 and "no complete checkpoint to resume from" in r.stdout + r.stderr
    print(f"only incomplete checkpoints: refused with a clear error: {refused}")
    ok &= refused

    # 5. the training-time pruners, and a checkpoint of another grid
    for name, stage, options, outputs in PRUNERS:
        ok &= resume_pruner(a, model, name, stage, options, outputs)
    gum_options = PRUNERS[0][2]
    r = subprocess.run(command(a, os.path.join(a.tmp, "gum-killed"), model, *gum_options, "recover.resume=true",
                               stage="gum", ranks=1), env=ENV, capture_output=True, text=True)
    other_grid = r.returncode != 0 and "written on a DP 2 x TP 1 grid, this run is 1 x 1" in r.stdout + r.stderr
    print(f"gum's DP = 2 checkpoints resumed on one rank: refused naming both grids: {other_grid}")
    ok &= other_grid
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
