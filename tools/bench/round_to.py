"""What prune.round_to does to a pruned model's speed and perplexity (LLM-Pruner #33: odd widths made
its pruned model slower). The same calibration and criterion (Taylor element-1, per_layer, 20%) with
round_to 1, 64 and 128; each pruned model's batch-1 prefill (256 tokens) and greedy decode (32 steps)
in Secateur (eval.speed, fp32 and bf16) and in transformers (fp32, the export loaded as a user would),
the median of --rounds alternating rounds, and its perplexity at window 128 — all in one run, ratios
against the dense model and against round_to 1.

    .venv/bin/python tools/bench/round_to.py --secateur build/secateur \
        --model data/models/SmolLM2-135M-Instruct.Q4_1.gguf --out tools/bench/results/round_to_smollm2.json
"""
import argparse, json, os, statistics, subprocess, sys

from results_file import write_json

HF_CHILD = r"""
import json, sys, time, torch
model_dir, prompt, decode, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
sys.path.insert(0, sys.argv[5])
from hf_check import load_export
torch.set_num_threads(threads)
m = load_export(model_dir)[0]
ids = torch.randint(0, m.config.vocab_size, (1, prompt), generator=torch.Generator().manual_seed(0))
def once():
    t0 = time.perf_counter()
    out = m(ids, use_cache=True)
    t1 = time.perf_counter()
    past, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
    for _ in range(decode):
        out = m(nxt, past_key_values=past, use_cache=True)
        past, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
    return t1 - t0, (time.perf_counter() - t1) / decode
with torch.no_grad():
    once()
    runs = sorted(once() for _ in range(3))
prefill, per_token = runs[1]
print(json.dumps({"prefill_tokens_per_second": prompt / prefill, "decode_tokens_per_second": 1 / per_token,
                  "class": type(m).__name__}))
"""


def secateur_eval(a, model, run_dir, dtype, ppl):
    """Secateur's eval of one model: speed (and, with ppl, perplexity at window 128)."""
    subprocess.run([a.secateur, "run", "run.stages=[eval]", f"model.path={model}", f"run.dir={run_dir}",
                    f"model.dtype={dtype}", f"eval.windows={'[128]' if ppl else '[]'}", f"eval.speed={str(not ppl).lower()}",
                    f"run.threads={a.threads}"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out = {}
    for m in json.load(open(os.path.join(run_dir, "report.json")))["metrics"]:
        if m.get("metric") == "speed":
            out.update(prefill_tokens_per_second=m["prefill_tokens_per_second"],
                       decode_tokens_per_second=m["decode_tokens_per_second"])
        elif m.get("metric") == "perplexity":
            out["ppl_128"] = m["ppl"]
    return out


def transformers_speed(a, model):
    tools = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    return json.loads(subprocess.run([sys.executable, "-c", HF_CHILD, model, "256", "32", str(a.threads), tools],
                                     check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--secateur", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--tmp", default="runs/bench-round-to")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--rounds", type=int, default=3, help="speed rounds, every model once a round; medians reported")
    ap.add_argument("--out")
    a = ap.parse_args()
    dense = os.path.join(a.tmp, "dense")
    subprocess.run([a.secateur, "convert", "--in", a.model, "--out", dense, f"run.dir={a.tmp}/convert"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    models = {"dense": dense}
    for r in (1, 64, 128):
        run_dir = os.path.join(a.tmp, f"round_to_{r}")
        subprocess.run([a.secateur, "run", "run.stages=[prune]", f"model.path={dense}", f"run.dir={run_dir}",
                        f"prune.round_to={r}", f"run.threads={a.threads}"], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        models[f"round_to_{r}"] = os.path.join(run_dir, "pruned")
    rows = {}
    for name, model in models.items():
        cfg = json.load(open(os.path.join(model, "config.json")))
        widths = cfg.get("secateur_layer_widths", {}).get("intermediate_size", [cfg["intermediate_size"]])
        rows[name] = {"model": name, "d_ff": sorted(set(widths)),
                      "ppl_128": secateur_eval(a, model, os.path.join(a.tmp, name + "-ppl"), "float32", True)["ppl_128"],
                      "runs": {"secateur_fp32": [], "secateur_bf16": [], "transformers_fp32": []}}
    for _ in range(a.rounds):   # alternating: a slow moment of the machine hits every model alike
        for name, model in models.items():
            runs = rows[name]["runs"]
            runs["secateur_fp32"].append(secateur_eval(a, model, os.path.join(a.tmp, name + "-32"), "float32", False))
            runs["secateur_bf16"].append(secateur_eval(a, model, os.path.join(a.tmp, name + "-16"), "bfloat16", False))
            runs["transformers_fp32"].append(transformers_speed(a, model))
        print(json.dumps({n: {k: [round(x["decode_tokens_per_second"], 1) for x in v] for k, v in r["runs"].items()}
                          for n, r in rows.items()}))
    for row in rows.values():
        for impl, runs in row["runs"].items():
            row[impl] = {key: statistics.median(x[key] for x in runs)
                         for key in ("prefill_tokens_per_second", "decode_tokens_per_second")}
    for row in rows.values():   # speed-ups: against the dense model and against round_to 1
        for impl in row["runs"]:
            for key in ("prefill_tokens_per_second", "decode_tokens_per_second"):
                phase = key.split("_")[0]
                row[impl][phase + "_vs_dense"] = row[impl][key] / rows["dense"][impl][key]
                row[impl][phase + "_vs_round_to_1"] = row[impl][key] / rows["round_to_1"][impl][key]
    result = {"bench": "round_to", "model": a.model, "criterion": "taylor_element1", "scope": "per_layer",
              "ratio": 0.2, "threads": a.threads, "prompt_tokens": 256, "decode_steps": 32, "rounds": a.rounds,
              "rows": list(rows.values())}
    if a.out:
        write_json(a.out, result)
    for row in rows.values():
        print(row["model"], row["d_ff"], f"ppl {row['ppl_128']:.2f}",
              {impl: (round(row[impl]["prefill_tokens_per_second"]), round(row[impl]["decode_tokens_per_second"], 1))
               for impl in row["runs"]})


if __name__ == "__main__":
    main()
