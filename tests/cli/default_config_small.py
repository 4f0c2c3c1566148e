"""The embedded default config runs on a model other than SmolLM2: a random 4-layer LLaMA (transformers'
init, SmolLM2's tokenizer). Every stage of the demo (convert, eval, prune, eval, generate) runs with the
model-dependent defaults untouched; only the evaluation slice is shortened (eval.max_tokens) to keep the
test quick. The kept layers are counted from both ends of the model (keep_first / keep_last: 0 and 3 of 4),
and the pruned model reaches the default ratio. Every stage has its timing record (its phases' own
times add up to its wall time), and --profile writes a Chrome trace of those phases.
"""
import argparse, json, os, shutil, subprocess, sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from random_llama import make_random_llama  # noqa: E402


def make_model(tokenizer_dir, out):
    # Wide layers, so that 20% of all parameters fit in the two prunable layers beside the embedding.
    make_random_llama(tokenizer_dir, out, hidden_size=512, intermediate_size=8192, num_hidden_layers=4,
                      num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=2048,
                      tie_word_embeddings=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--secateur", required=True)
    ap.add_argument("--tokenizer", required=True, help="an HF directory with SmolLM2's tokenizer files")
    ap.add_argument("--tmp", required=True)
    a = ap.parse_args()
    shutil.rmtree(a.tmp, ignore_errors=True)
    model = os.path.join(a.tmp, "model")
    make_model(a.tokenizer, model)
    run_dir = os.path.join(a.tmp, "run")
    trace = os.path.join(a.tmp, "trace.json")
    r = subprocess.run([a.secateur, "run", "--profile", trace, f"model.path={model}", f"run.dir={run_dir}",
                        "eval.max_tokens=4096"], capture_output=True, text=True)
    if r.returncode != 0:
        print(r.stdout[-4000:], r.stderr[-4000:])
        sys.exit(f"FAIL: the default config on a 4-layer model exited {r.returncode}")
    decision = json.load(open(os.path.join(run_dir, "decision.json")))
    metrics = [json.loads(l) for l in open(os.path.join(run_dir, "metrics.jsonl"))]
    stages = [m["stage"] for m in metrics if m["stage"] not in ("load", "timing")]
    timings = [m for m in metrics if m["stage"] == "timing"]
    ok = True

    def check(cond, what):
        nonlocal ok
        print(("ok   " if cond else "FAIL ") + what)
        ok = ok and cond

    check(decision["keep_layers"] == [0, 3], f"layers 0 and 3 kept dense (got {decision['keep_layers']})")
    check(0.15 <= decision["ratio_achieved"] <= 0.2, f"ratio achieved {decision['ratio_achieved']:.4f} near 0.2")
    check([l.get("removed_neuron") is not None for l in decision["layers"]] == [False, True, True, False],
          "neurons removed in layers 1 and 2 only")
    check(os.path.isfile(os.path.join(run_dir, "pruned", "config.json")), "pruned model written")
    check(stages.count("eval") >= 4 and "prune" in stages and "generate" in stages and "convert" in stages,
          f"every stage of the demo ran ({stages})")
    check([t["of"] for t in timings] == ["convert", "eval", "prune", "eval", "generate"], "a timing record per stage")
    check(all(abs(sum(t["phases"].values()) - t["seconds"]) <= 1e-6 * t["seconds"] + 1e-9 for t in timings),
          "each stage's phases add up to its wall time")
    prune = next(t["phases"] for t in timings if t["of"] == "prune")
    check(all(prune.get(p, 0) > 0 for p in ("calibrate", "score", "decide", "apply", "export")),
          f"the prune stage's phases timed ({sorted(prune)})")
    names = {e["name"] for e in json.load(open(trace))["traceEvents"]}
    check({"stage prune", "calibrate", "perplexity", "generate"} <= names, f"the trace has the phases ({sorted(names)})")
    check("time (prune)" in r.stderr + r.stdout, "the summary shows where the time went")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
