"""Score once, prune many (SmolLM2-135M): `secateur score` writes the calibration statistics with the
fingerprints of the model and of the calibration; `prune.scores` reuses them.
  * prunes at two ratios and two scopes from one score run give decision.json and pruned checkpoints
    byte-identical to prunes that calibrate themselves; a score run on DP = 2 ranks serves too;
  * a statistics file of another checkpoint (the GGUF the HF directory was converted from), of other
    calibration windows, of a criterion with other needs, or a file that is not one: one error line
    naming it, a non-zero exit, and nothing pruned.
"""
import argparse, os, subprocess, sys

MPI_ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMP_NUM_THREADS="1")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--secateur", required=True)
    ap.add_argument("--model", required=True, help="the converted SmolLM2 HF directory")
    ap.add_argument("--gguf", required=True, help="the GGUF it was converted from")
    ap.add_argument("--tmp", required=True)
    a = ap.parse_args()
    ok = True

    def run(*args, ranks=1, check=True):
        cmd = [a.secateur, *args, f"model.path={a.model}"]
        if ranks > 1:
            cmd = ["mpirun", "--oversubscribe", "--bind-to", "none", "-np", str(ranks)] + cmd
        return subprocess.run(cmd, env=MPI_ENV, capture_output=True, text=True, check=check)

    def outputs(run_dir):
        return [open(os.path.join(run_dir, *f), "rb").read()
                for f in (("decision.json",), ("pruned", "model.safetensors"), ("pruned", "config.json"))]

    scores = os.path.join(a.tmp, "score", "scores.safetensors")
    run("score", f"run.dir={a.tmp}/score")
    run("score", f"run.dir={a.tmp}/score-dp2", ranks=2)
    for name, extra in (("ratio20", ()), ("uniform35", ("prune.ratio=0.35", "prune.scope=uniform", "prune.keep_layers=[]"))):
        run("prune", f"run.dir={a.tmp}/{name}-calibrated", *extra)
        for source in ("score", "score-dp2"):
            d = f"{a.tmp}/{name}-from-{source}"
            run("prune", f"run.dir={d}", f"prune.scores={a.tmp}/{source}/scores.safetensors", *extra)
            same = outputs(d) == outputs(f"{a.tmp}/{name}-calibrated")
            print(f"{name}: prune from the statistics of `{source}` vs calibrating: "
                  f"{'byte-identical' if same else 'DIFFERENT'}")
            ok &= same
    bad = (
        ("another checkpoint", [f"prune.scores={scores}", f"model.path={a.gguf}"], "was computed on"),
        ("other calibration", [f"prune.scores={scores}", "calibration.samples=8"], "other calibration windows"),
        ("other needs", [f"prune.scores={scores}", "prune.criterion=activation"], "prune.criterion activation needs"),
        ("not a statistics file", [f"prune.scores={a.model}/model.safetensors"], "is not a statistics file"),
    )
    for what, extra, want in bad:
        d = f"{a.tmp}/bad"
        r = subprocess.run([a.secateur, "prune", f"model.path={a.model}", f"run.dir={d}", *extra],
                           capture_output=True, text=True)
        errors = [l for l in r.stderr.splitlines() if "error" in l.lower()]
        good = r.returncode != 0 and len(errors) == 1 and want in errors[0] and not os.path.exists(f"{d}/pruned")
        print(f"{what}: {'ok' if good else 'FAIL'}, exit {r.returncode}: {errors[0] if errors else r.stderr[-300:]}")
        ok &= good
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
