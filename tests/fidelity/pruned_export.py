"""Pruned checkpoints, end to end on SmolLM2-135M (Taylor element-1, 20% of parameters):
  * scope uniform: the export is a stock LlamaConfig that transformers loads, and its logits
    match Secateur's on the same checkpoint (max|d|/max|ref| <= 1e-4);
  * scope per_layer (uneven layers): the export round-trips exactly (convert it again: every
    tensor and the per-layer widths come back bit for bit);
  * the decision.json and the pruned checkpoint are byte-identical for (DP, TP) = (1,1), (2,1),
    (1,2), (2,2): with TP the statistics are made whole over the TP ranks and every rank writes
    its own slices of the pruned weights into the checkpoint.
Qwen2.5-Coder-0.5B (when its GGUF is given and present; 4 calibration windows, bf16 exports):
  * a uniform export loads in stock transformers as Qwen2ForCausalLM, logits as Secateur's;
  * DP = 2 gives the byte-identical decision and checkpoint; TP = 2 the same widths, and removed
    neurons that differ only at near-ties of fp32 scores (the row-parallel sums round differently):
    at least 99.9% of them the same, the number printed.
"""
import argparse, json, os, shutil, subprocess, sys

import torch
from safetensors.torch import load_file
import transformers

MPI_ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMP_NUM_THREADS="1")


def prune(secateur, model, run_dir, *extra, ranks=1, tp=1):
    cmd = [secateur, "run", "run.stages=[prune]", f"model.path={model}", f"run.dir={run_dir}",
           f"parallel.tp={tp}", *extra]
    if ranks > 1:
        cmd = ["mpirun", "--oversubscribe", "--bind-to", "none", "-np", str(ranks)] + cmd
    subprocess.run(cmd, check=True, env=MPI_ENV, stdout=subprocess.DEVNULL)
    return os.path.join(run_dir, "pruned")


def logits_match(a, model_dir, name, tmp):
    """transformers' logits of an export vs Secateur's on the same checkpoint and tokens."""
    ref = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ids = transformers.AutoTokenizer.from_pretrained(model_dir)(
        "It is a truth universally acknowledged, that a single man in possession of a good fortune")["input_ids"]
    with open(os.path.join(tmp, f"{name}.ids.json"), "w") as f:
        json.dump([ids], f)
    out = os.path.join(tmp, f"{name}.logits.safetensors")
    subprocess.run([a.dump, model_dir, "float32", os.path.join(tmp, f"{name}.ids.json"), out], check=True)
    with torch.no_grad():
        want = ref(torch.tensor([ids])).logits[0]
    got = load_file(out)["logits.0"]
    return type(ref).__name__, ((got - want).abs().max() / want.abs().max()).item()


def removed(run_dir):
    layers = json.load(open(os.path.join(run_dir, "decision.json")))["layers"]
    return [(l["layer"], k, set(v)) for l in layers for k, v in l.items() if k.startswith("removed_")]


def qwen2(a):
    ok = True
    small = ("calibration.samples=4", "convert.dtype=bfloat16")   # bf16 exports: half the disk
    uniform = prune(a.secateur, a.qwen_gguf, os.path.join(a.tmp, "qwen2-uniform"), "prune.scope=uniform",
                    "prune.keep_layers=[]", *small)
    kind, rel = logits_match(a, uniform, "qwen2-uniform", a.tmp)
    print(f"qwen2 uniform export: transformers loads it as {kind}, logits max|d|/max|ref| = {rel:.2e} (tolerance 1e-4)")
    ok &= kind == "Qwen2ForCausalLM" and rel <= 1e-4

    def outputs(run_dir):
        return [open(os.path.join(run_dir, *f), "rb").read()
                for f in (("decision.json",), ("pruned", "model.safetensors"), ("pruned", "config.json"))]
    one_dir = os.path.join(a.tmp, "qwen2-dp1tp1")
    prune(a.secateur, a.qwen_gguf, one_dir, *small)
    dp2 = os.path.join(a.tmp, "qwen2-dp2tp1")
    prune(a.secateur, a.qwen_gguf, dp2, *small, ranks=2, tp=1)
    same = outputs(dp2) == outputs(one_dir)
    print(f"qwen2 (DP, TP) = (2, 1) vs (1, 1): decision.json and pruned checkpoint "
          f"{'byte-identical' if same else 'DIFFERENT'}")
    ok &= same
    tp2 = os.path.join(a.tmp, "qwen2-dp1tp2")
    prune(a.secateur, a.qwen_gguf, tp2, *small, ranks=2, tp=2)
    r1, r2 = removed(one_dir), removed(tp2)
    shapes = [(l, k, len(s)) for l, k, s in r1] == [(l, k, len(s)) for l, k, s in r2]
    total = sum(len(s) for _, _, s in r1)
    common = sum(len(s1 & s2) for (_, _, s1), (_, _, s2) in zip(r1, r2)) if shapes else 0
    print(f"qwen2 (DP, TP) = (1, 2) vs (1, 1): same widths {shapes}, {common} of {total} removed units the same "
          f"({100 * common / max(total, 1):.3f}%, at least 99.9%)")
    ok &= shapes and common >= 0.999 * total
    for d in ("qwen2-uniform", "qwen2-dp1tp1", "qwen2-dp2tp1", "qwen2-dp1tp2"):   # 1 GB each
        shutil.rmtree(os.path.join(a.tmp, d), ignore_errors=True)
    return ok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--secateur", required=True)
    ap.add_argument("--dump", required=True, help="logits_dump")
    ap.add_argument("--model", required=True, help="the converted SmolLM2 HF directory")
    ap.add_argument("--qwen-gguf", help="Qwen2.5-Coder-0.5B-Instruct GGUF; checked when the file exists")
    ap.add_argument("--tmp", required=True)
    a = ap.parse_args()
    os.makedirs(a.tmp, exist_ok=True)
    ok = True

    # 1. uniform -> stock transformers
    uniform = prune(a.secateur, a.model, os.path.join(a.tmp, "uniform"), "prune.scope=uniform", "prune.keep_layers=[]")
    cfg = json.load(open(os.path.join(uniform, "config.json")))
    assert "secateur_layer_widths" not in cfg, "a uniform export must be a stock config"
    kind, rel = logits_match(a, uniform, "uniform", a.tmp)
    print(f"uniform export: d_ff {cfg['intermediate_size']}, kv heads {cfg['num_key_value_heads']}, "
          f"transformers ({kind}) logits max|d|/max|ref| = {rel:.2e} (tolerance 1e-4)")
    ok &= rel <= 1e-4

    # 2. per_layer (uneven) -> exact round trip
    uneven = prune(a.secateur, a.model, os.path.join(a.tmp, "uneven"))
    again = os.path.join(a.tmp, "uneven-again")
    subprocess.run([a.secateur, "convert", "--in", uneven, "--out", again, f"run.dir={a.tmp}/convert-run"],
                   check=True, stdout=subprocess.DEVNULL)
    c1, c2 = (json.load(open(os.path.join(d, "config.json"))) for d in (uneven, again))
    t1, t2 = (load_file(os.path.join(d, "model.safetensors")) for d in (uneven, again))
    same = c1["secateur_layer_widths"] == c2["secateur_layer_widths"] and t1.keys() == t2.keys() and all(
        torch.equal(t1[k], t2[k]) for k in t1)
    print(f"per-layer export: widths {c1['secateur_layer_widths']['intermediate_size'][:5]}..., "
          f"{len(t1)} tensors round-trip exactly: {same}")
    ok &= same

    # 3. the same decision and checkpoint on every grid
    def outputs(run_dir):
        return [open(os.path.join(run_dir, *f), "rb").read()
                for f in (("decision.json",), ("pruned", "model.safetensors"), ("pruned", "config.json"))]
    one = outputs(os.path.join(a.tmp, "uneven"))
    for dp, tp in ((2, 1), (1, 2), (2, 2)):
        run_dir = os.path.join(a.tmp, f"dp{dp}tp{tp}")
        prune(a.secateur, a.model, run_dir, ranks=dp * tp, tp=tp)
        same = outputs(run_dir) == one
        print(f"(DP, TP) = ({dp}, {tp}) vs (1, 1): decision.json and pruned checkpoint "
              f"{'byte-identical' if same else 'DIFFERENT'}")
        ok &= same
    if a.qwen_gguf and os.path.exists(a.qwen_gguf):
        ok &= qwen2(a)
    else:
        print(f"qwen2: SKIPPED: {a.qwen_gguf} missing (tools/setup.sh fetches it)")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
