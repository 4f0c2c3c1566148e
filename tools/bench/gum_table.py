"""Training-time pruning of SmolLM2-135M's MLP neurons to a kept fraction of 0.5: gradual random,
magnitude, movement and GUM, each with and without distillation from the dense model; perplexity at
window 128 on the evaluation slice (first 16,384 tokens of Persuasion).

    .venv/bin/python tools/bench/gum_table.py --secateur build/secateur \
        --out tools/bench/results/gum_smollm2.json

Each row runs `secateur run configs/gum.yaml gum.method=<m> recover.distill=<kd>` (40 steps of
4 x 128 tokens of Sense and Sensibility, full fine-tuning at lr 1e-4; movement and GUM share the
l1 weight, so they differ by the uniqueness term alone), then `secateur report` on each pruned model
and on the dense one (64 windows of 128 tokens of Emma), with --plot a PNG of the reports per layer.
"""
import argparse, json, os, subprocess, sys, time

from results_file import write_json

METHODS = ("random", "magnitude", "movement", "gum")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--secateur", required=True)
    ap.add_argument("--model", default="data/models/SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--tmp", default="runs/gum")
    ap.add_argument("--methods", nargs="*", default=list(METHODS))
    ap.add_argument("--out", required=True)
    ap.add_argument("--reports-only", action="store_true", help="the redundancy reports of runs already made")
    ap.add_argument("--plot", default="", help="PNG of the redundancy per layer (tools/plot/redundancy.py)")
    a = ap.parse_args()
    rows = json.load(open(a.out)) if os.path.exists(a.out) else []
    rows = rows["rows"] if isinstance(rows, dict) else rows
    for method in [] if a.reports_only else a.methods:
        for kd in (False, True):
            run_dir = os.path.join(a.tmp, method + ("-kd" if kd else ""))
            t0 = time.time()
            subprocess.run([a.secateur, "run", "configs/gum.yaml", f"model.path={a.model}", f"run.dir={run_dir}",
                            f"gum.method={method}", f"recover.distill={'true' if kd else 'false'}"],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            metrics = [json.loads(l) for l in open(os.path.join(run_dir, "metrics.jsonl"))]
            g = next(m for m in metrics if m["stage"] == "gum")
            e = next(m for m in metrics if m["stage"] == "eval")
            row = {"method": method, "distill": kd, "kept_fraction": g["kept_fraction"],
                   "params_after": g["params_after"], "ppl_128": e["ppl"], "final_loss": g["final_loss"],
                   "train_seconds": g["seconds"], "wall_seconds": time.time() - t0,
                   "layer_widths": json.load(open(os.path.join(run_dir, "gum.json")))["layers"]}
            rows = [r for r in rows if (r["method"], r["distill"]) != (method, kd)] + [row]
            write_json(a.out, rows)
            print(f"{method:>10} {'KD' if kd else '  '}: kept {100 * g['kept_fraction']:.1f}%, "
                  f"ppl@128 {e['ppl']:.2f}, {g['seconds']:.0f} s", flush=True)
    # Redundancy of each pruned model and of the dense one.
    reports = {}
    for label, model in [("dense", a.model)] + [(r["method"] + ("-kd" if r["distill"] else ""),
                                                 os.path.join(a.tmp, r["method"] + ("-kd" if r["distill"] else ""), "pruned"))
                                                for r in rows]:
        report_dir = os.path.join(a.tmp, "reports", label)
        subprocess.run([a.secateur, "report", f"model.path={model}", f"run.dir={report_dir}"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        reports[label] = os.path.join(report_dir, "redundancy.json")
        r = json.load(open(reports[label]))
        for row in rows:
            if row["method"] + ("-kd" if row["distill"] else "") == label:
                row["redundancy"] = {k: r[k] for k in ("sensitivity_sum", "unique", "r2_above_0.9", "r2_above_0.99")}
        print(f"{label:>12} report: unique {100 * r['unique']:.2f}%, R2>0.9 {100 * r['r2_above_0.9']:.1f}%, "
              f"sensitivity {r['sensitivity_sum']:.2f}", flush=True)
    dense = json.load(open(reports["dense"]))
    write_json(a.out, {"rows": rows, "dense_redundancy": {k: dense[k] for k in
                                                          ("sensitivity_sum", "unique", "r2_above_0.9", "r2_above_0.99")}}
               if rows else rows)
    if a.plot:
        subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "..", "plot", "redundancy.py"),
                        "--out", a.plot, "--title", "MLP neurons of SmolLM2-135M after pruning to half"] +
                       [f"{k}={v}" for k, v in reports.items()], check=True)


if __name__ == "__main__":
    main()
