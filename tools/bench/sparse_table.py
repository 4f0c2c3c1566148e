"""Unstructured pruning of SmolLM2-135M's block matrices (q, k, v, o, gate, up, down): RPP against
iterative magnitude pruning at 30, 50, 70 and 90% sparsity on the same budget, plus the same
fine-tuning without pruning, and Wanda (one shot from 128 x 128 calibration tokens of Emma, no
training; also 2:4, and followed by the same fine-tuning budget under its mask); perplexity at
window 128 on the evaluation slice (first 16,384 tokens of Persuasion).

    .venv/bin/python tools/bench/sparse_table.py --secateur build/secateur \\
        --out tools/bench/results/sparse_smollm2.json [--plot sparsity.png]

Each row runs `secateur run configs/sparse.yaml sparse.method=<m> sparse.sparsity=<s> sparse.gamma=<g>`
(24 steps of 4 x 128 tokens of Sense and Sensibility, full fine-tuning at lr 1e-4; the hard prune
after 12); RPP runs with the default gamma 0.1 and with a gamma per target (TUNED). Wanda rows run
`sparse.method=wanda` alone (stages sparse, eval) or followed by `recover` with the same 24 steps.
"""
import argparse, json, os, subprocess, time

from results_file import write_json

# (method, target sparsity, RPP's gamma): gamma 0.1 is the default; the tuned values let the
# proximal steps alone reach about the target before the hard prune (|w| below ~sqrt(gamma · Σ lr)).
TUNED = {0.3: 0.6, 0.5: 1.2, 0.7: 2.5, 0.9: 8.0}
ROWS = ([("imp", 0.0, 0.1)] + [(m, s, 0.1) for s in (0.3, 0.5, 0.7, 0.9) for m in ("rpp", "imp")] +
        [("rpp", s, g) for s, g in TUNED.items()] +
        [("wanda", s, None) for s in (0.3, 0.5, 0.7, 0.9)] + [("wanda-2:4", 0.5, None)] +
        [("wanda+ft", s, None) for s in (0.3, 0.5, 0.7)])
WANDA_CALIBRATION = ["calibration.samples=128", "calibration.seq_len=128"]


def command(a, method, target, gamma, run_dir):
    """The secateur command line of one row."""
    cmd = [a.secateur, "run", "configs/sparse.yaml", f"model.path={a.model}", f"run.dir={run_dir}",
           f"sparse.sparsity={target}"]
    if not method.startswith("wanda"):
        return cmd + [f"sparse.method={method}", f"sparse.gamma={gamma}"]
    stages = "[sparse,recover,eval]" if method == "wanda+ft" else "[sparse,eval]"
    pattern = "2:4" if method == "wanda-2:4" else "unstructured"
    return cmd + ["sparse.method=wanda", f"sparse.pattern={pattern}", f"run.stages={stages}", *WANDA_CALIBRATION]


def plot(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for method, tuned, label in (("rpp", False, "RPP (γ 0.1)"), ("rpp", True, "RPP (γ tuned)"), ("imp", False, "IMP"),
                                 ("wanda", False, "Wanda (no training)"), ("wanda+ft", False, "Wanda + the same fine-tuning")):
        pts = sorted((r["sparsity"], r["ppl_128"]) for r in rows if r["method"] == method and r["target"] > 0
                     and (r.get("gamma") not in (None, 0.1)) == tuned)
        ax.plot([p[0] * 100 for p in pts], [p[1] for p in pts], marker="o", label=label)
    base = [r for r in rows if r["target"] == 0]
    if base:
        ax.axhline(base[0]["ppl_128"], color="gray", ls="--", label="fine-tuned, no pruning")
    ax.set_xlabel("sparsity of the block matrices (%)")
    ax.set_ylabel("perplexity @128 (Persuasion)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path + ".tmp.png", dpi=110)
    os.replace(path + ".tmp.png", path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--secateur", required=True)
    ap.add_argument("--model", default="data/models/SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--tmp", default="runs/sparse")
    ap.add_argument("--out", required=True)
    ap.add_argument("--plot", default="")
    a = ap.parse_args()
    rows = json.load(open(a.out)) if os.path.exists(a.out) else []
    for method, target, gamma in ROWS:
        if any(r["method"] == method and r["target"] == target and (r.get("gamma") or 0.1) == (gamma or 0.1) for r in rows):
            continue                                           # done in an earlier, interrupted run
        name = method.replace(":", "") + f"-{int(target * 100)}" + (f"-g{gamma}" if gamma not in (None, 0.1) else "")
        run_dir = os.path.join(a.tmp, name)
        t0 = time.time()
        subprocess.run(command(a, method, target, gamma, run_dir), check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        metrics = [json.loads(l) for l in open(os.path.join(run_dir, "metrics.jsonl"))]
        s = next(m for m in metrics if m["stage"] == "sparse")
        e = next(m for m in metrics if m["stage"] == "eval")
        before = [m["sparsity"] for m in metrics if m["stage"] == "sparse_step"]
        trained = [m for m in metrics if m["stage"] == "recover"]
        rows.append({"method": method, "target": target, "gamma": gamma, "sparsity": s["sparsity"], "ppl_128": e["ppl"],
                     "final_loss": trained[0]["final_loss"] if trained else s["final_loss"],
                     "natural_sparsity_before_prune": before[-1] if before else None,
                     "train_seconds": trained[0]["seconds"] if trained else s["seconds"],
                     "wall_seconds": time.time() - t0, "layers": s["layers"]})
        write_json(a.out, rows)
        print(f"{method:>9} {100 * target:3.0f}% (gamma {gamma}): {100 * s['sparsity']:.2f}% zeros, "
              f"ppl@128 {e['ppl']:.2f}, {time.time() - t0:.0f} s", flush=True)
    if a.plot:
        plot(rows, a.plot)


if __name__ == "__main__":
    main()
