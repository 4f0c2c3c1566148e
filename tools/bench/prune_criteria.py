"""LLM-Pruner's criteria on SmolLM2-135M: 20% of all parameters removed, no recovery, perplexity
at window 128 on the evaluation slice (first 16,384 tokens of Persuasion).

    .venv/bin/python tools/bench/prune_criteria.py --secateur build/secateur \
        --out tools/bench/results/prune_criteria_20.json

Each row runs `secateur run run.stages=[prune,eval]` with the default config (calibration:
10 windows of 64 tokens from Emma, seed 1234; per_layer scope, kv-groups and neurons, layers
0, 1, 2 and 29 kept dense); the last two rows prune hidden channels (scope channel) and whole
layers (scope layer) instead, with no layer kept.
"""
import argparse, json, os, subprocess, time

from results_file import write_json

ROWS = [(c, "per_layer") for c in ("random", "l1", "l2", "taylor_element1", "taylor_element2", "taylor_vector",
                                    "taylor_mixed", "activation")] + [("taylor_element1", "channel"),
                                                                      ("taylor_element1", "layer")]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--secateur", required=True)
    ap.add_argument("--model", default="data/models/SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--ratio", type=float, default=0.2)
    ap.add_argument("--tmp", default="runs/prune_criteria")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    rows = []
    for crit, scope in ROWS:
        run_dir = os.path.join(a.tmp, f"{crit}-{scope}")
        t0 = time.time()
        subprocess.run([a.secateur, "run", "run.stages=[prune,eval]", f"model.path={a.model}", f"run.dir={run_dir}",
                        f"prune.criterion={crit}", f"prune.scope={scope}", f"prune.ratio={a.ratio}",
                        "eval.windows=[128]"] + (["prune.keep_first=0", "prune.keep_last=0"] if scope != "per_layer" else []),
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        metrics = [json.loads(l) for l in open(os.path.join(run_dir, "metrics.jsonl"))]
        p = next(m for m in metrics if m["stage"] == "prune")
        e = next(m for m in metrics if m["stage"] == "eval")
        rows.append({"criterion": crit, "scope": scope, "ratio_target": a.ratio, "ratio_achieved": p["ratio_achieved"],
                     "params_after": p["params_after"], "ppl_128": e["ppl"], "scoring_seconds": p["scoring_seconds"],
                     "peak_rss_mib_after_scoring": p["peak_rss_mib_after_scoring"], "decision_hash": p["hash"],
                     "wall_seconds": time.time() - t0})
        print(f"{crit:>16} {scope:>9}: {100 * p['ratio_achieved']:.2f}% removed, ppl@128 {e['ppl']:.2f}, "
              f"scoring {p['scoring_seconds']:.1f} s", flush=True)
    write_json(a.out, rows)


if __name__ == "__main__":
    main()
