"""Zero-shot evaluation speed: the same 7 tasks (LLM-Pruner's) and examples scored three ways, in one run,
on the same threads:

* baseline — every request whole, 8 requests a forward pass: lm-evaluation-harness's way, and Secateur's
  before eval.shared_prefix (eval.shared_prefix=false eval.task_tokens=0);
* shared   — the defaults: an example's choices packed into one row after their common prefix, passes of
  up to eval.task_tokens tokens;
* shared in bf16 (model.dtype=bfloat16), to show what bf16 would add and what it would change.

Each mode's per-example samples are compared with the baseline's: the chosen answer (the task's reported
metric, and acc and acc_norm) and the log-likelihood of every choice. Median wall time of --rounds
alternating rounds, per task and in all; ratios against the baseline.

    .venv/bin/python tools/bench/eval_speed.py --secateur build/secateur \
        --model data/models/SmolLM2-135M-Instruct.Q4_1.gguf --out tools/bench/results/eval_speed_smollm2.json
"""
import argparse, json, os, shutil, statistics, subprocess, tempfile, time

from results_file import write_json

TASKS = ["boolq", "piqa", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa"]
MODES = {
    "baseline": ["eval.shared_prefix=false", "eval.task_tokens=0", "eval.batch=8"],
    "shared": [],
    "shared_bf16": ["model.dtype=bfloat16"],
}


def run_eval(a, run_dir, overrides):
    shutil.rmtree(run_dir, ignore_errors=True)
    t0 = time.perf_counter()
    subprocess.run([a.secateur, "eval", f"model.path={a.model}", f"run.dir={run_dir}", "eval.windows=[]",
                    "eval.speed=false", f"eval.task_limit={a.examples}", f"eval.tasks=[{','.join(TASKS)}]",
                    f"run.threads={a.threads}"] + overrides, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    records = {m["task"]: m for m in map(json.loads, open(os.path.join(run_dir, "metrics.jsonl")))
               if m.get("metric") == "zero_shot"}
    samples = {t: [json.loads(l) for l in open(records[t]["samples"])] for t in TASKS}
    return wall, records, samples


def compare(base, other, reported):
    """Agreement of the chosen answers and the largest log-likelihood difference, per task."""
    out = {}
    for t in TASKS:
        b, o = base[t], other[t]
        assert len(b) == len(o), f"{t}: {len(b)} vs {len(o)} examples"
        key = {"acc": "pred", "acc_norm": "pred_norm", "acc_per_token": "pred_token"}[reported[t]]
        out[t] = {
            "examples": len(b),
            "chosen_agree_pct": 100.0 * sum(x[key] == y[key] for x, y in zip(b, o)) / len(b),
            "acc_agree_pct": 100.0 * sum(x["pred"] == y["pred"] for x, y in zip(b, o)) / len(b),
            "acc_norm_agree_pct": 100.0 * sum(x["pred_norm"] == y["pred_norm"] for x, y in zip(b, o)) / len(b),
            "max_abs_dloglik": max(abs(c["loglik"] - d["loglik"]) for x, y in zip(b, o)
                                   for c, d in zip(x["choices"], y["choices"])),
        }
    n = sum(v["examples"] for v in out.values())
    out["all"] = {"examples": n,
                  "chosen_agree_pct": sum(v["chosen_agree_pct"] * v["examples"] for v in out.values()) / n,
                  "max_abs_dloglik": max(v["max_abs_dloglik"] for v in out.values())}
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--secateur", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--examples", type=int, default=200, help="the first N examples of each task")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="secateur-eval-speed-")
    times = {m: {t: [] for t in TASKS + ["all", "wall"]} for m in MODES}
    samples, records = {}, {}
    for _ in range(a.rounds):
        for mode, overrides in MODES.items():
            wall, records[mode], samples[mode] = run_eval(a, os.path.join(tmp, mode), overrides)
            for t in TASKS:
                times[mode][t].append(records[mode][t]["seconds"])
            times[mode]["all"].append(sum(records[mode][t]["seconds"] for t in TASKS))
            times[mode]["wall"].append(wall)
    shutil.rmtree(tmp, ignore_errors=True)
    median = {m: {t: statistics.median(v) for t, v in times[m].items()} for m in MODES}
    reported = {t: records["baseline"][t]["reported"] for t in TASKS}
    result = {
        "what": "zero-shot scoring of the 7 tasks: baseline (each request whole, 8 a pass, as lm-eval) vs shared "
                "prefix (the defaults) vs shared prefix in bf16; seconds = the tasks' scoring (tokenizing included), "
                "wall = the whole process",
        "model": a.model, "examples_per_task": a.examples, "threads": a.threads, "rounds": a.rounds,
        "seconds": median,
        "speedup_vs_baseline": {m: {t: median["baseline"][t] / median[m][t] for t in TASKS + ["all", "wall"]}
                                for m in MODES if m != "baseline"},
        "agreement_vs_baseline": {m: compare(samples["baseline"], samples[m], reported)
                                  for m in MODES if m != "baseline"},
        "values": {m: {t: records[m][t]["value"] for t in TASKS} for m in MODES},
    }
    write_json(a.out, result)
    for m in MODES:
        if m == "baseline":
            continue
        ag = result["agreement_vs_baseline"][m]["all"]
        print(f"{m:12s} x{result['speedup_vs_baseline'][m]['all']:.2f} on the 7 tasks "
              f"({median['baseline']['all']:.0f} s -> {median[m]['all']:.0f} s); chosen answer agrees in "
              f"{ag['chosen_agree_pct']:.2f}% of {ag['examples']} examples, max |dloglik| {ag['max_abs_dloglik']:.2e}")


if __name__ == "__main__":
    main()
