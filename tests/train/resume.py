"""Checkpoint and resume of `secateur recover`, under mpirun with DP = 2 (CPU, fixed seed):
  * a run killed with SIGKILL after its step-8 checkpoint, then resumed, ends with weights
    byte-identical to an uninterrupted run;
  * incomplete checkpoints are never loaded: a newer one without DONE and a DONE one with a
    truncated file are skipped (resume takes step 4, and still ends byte-identical);
  * with only incomplete checkpoints, resume stops with a clear error.
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


def command(a, run_dir, model, *extra):
    return ["mpirun", "--oversubscribe", "--bind-to", "none", "-np", "2", a.secateur, "run", "run.stages=[recover]",
            f"model.path={model}", f"run.dir={run_dir}", "recover.method=full", "recover.steps=12",
            "recover.save_every=4", "recover.batch=4", "recover.micro_batch=1", "recover.seq_len=32",
            "recover.lr=0.001", *extra]


def weights(run_dir):
    return open(os.path.join(run_dir, "recovered", "model.safetensors"), "rb").read()


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
    p = subprocess.Popen(command(a, killed, model), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    done8 = os.path.join(killed, "checkpoints", "step-000008", "DONE")
    deadline = time.time() + 240
    while not os.path.exists(done8) and p.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(p.pid, signal.SIGKILL)                   # mpirun and both ranks, mid-training
    p.wait()
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
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
