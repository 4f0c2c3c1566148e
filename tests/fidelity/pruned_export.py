"""Pruned checkpoints, end to end on SmolLM2-135M (Taylor element-1, 20% of parameters):
  * every kind of export loads in stock transformers: a stock shape (uniform widths, whole layers
    removed) with no flag, as LlamaForCausalLM; widths that differ per layer (scopes per_layer and
    global, GUM) through the modeling file the export carries (trust_remote_code=True). Each one's
    logits match Secateur's on the same checkpoint (max|d|/max|ref| <= 1e-4), and greedy generation
    through transformers' KV cache picks the tokens its full forward pass picks;
  * the same for GPT-2 (a random one with SmolLM2's tokenizer): heads pruned per layer, or in every
    layer alike (narrower heads than n_embd / n_head: not a stock GPT2Config either);
  * scope per_layer (uneven layers): the export round-trips exactly (convert it again: every
    tensor and the per-layer widths come back bit for bit);
  * the decision.json and the pruned checkpoint are byte-identical for (DP, TP) = (1,1), (2,1),
    (1,2), (2,2): with TP the statistics are made whole over the TP ranks and every rank writes
    its own slices of the pruned weights into the checkpoint.
Qwen2.5-Coder-0.5B (when its GGUF is given and present; 4 calibration windows, bf16 exports):
  * a uniform export loads in stock transformers as Qwen2ForCausalLM, a per-layer one as
    SecateurQwen2ForCausalLM; logits as Secateur's;
  * DP = 2 gives the byte-identical decision and checkpoint; TP = 2 the same widths, and removed
    neurons that differ only at near-ties of fp32 scores (the row-parallel sums round differently):
    at least 99.9% of them the same, the number printed.
"""
import argparse, json, os, shutil, subprocess, sys

import torch
from safetensors.torch import load_file

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools"))
from random_llama import make_random_gpt2  # noqa: E402
from hf_check import load_export  # noqa: E402

MPI_ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMP_NUM_THREADS="1")
TOL = 1e-4


def prune(secateur, model, run_dir, *extra, ranks=1, tp=1, stage="prune"):
    cmd = [secateur, "run", f"run.stages=[{stage}]", f"model.path={model}", f"run.dir={run_dir}",
           f"parallel.tp={tp}", *extra]
    if ranks > 1:
        cmd = ["mpirun", "--oversubscribe", "--bind-to", "none", "-np", str(ranks)] + cmd
    subprocess.run(cmd, check=True, env=MPI_ENV, stdout=subprocess.DEVNULL)
    return os.path.join(run_dir, "pruned")


def loads_in_transformers(a, model_dir, name, expected_class):
    """transformers loads the export (with no flag unless it names its own classes in auto_map);
    True when it is of expected_class, its logits are Secateur's and its cached generation is
    consistent. Prints one line."""
    ref, tokenizer, custom = load_export(model_dir)
    ids = tokenizer("It is a truth universally acknowledged, that a single man in possession of a good fortune")["input_ids"]
    with open(os.path.join(a.tmp, f"{name}.ids.json"), "w") as f:
        json.dump([ids], f)
    out = os.path.join(a.tmp, f"{name}.logits.safetensors")
    subprocess.run([a.dump, model_dir, "float32", os.path.join(a.tmp, f"{name}.ids.json"), out], check=True)
    with torch.no_grad():
        want = ref(torch.tensor([ids])).logits[0]
        generated = ref.generate(torch.tensor([ids]), max_new_tokens=8, do_sample=False)
        picked = ref(generated).logits[0, len(ids) - 1:-1].argmax(-1)
    got = load_file(out)["logits.0"]
    rel = ((got - want).abs().max() / want.abs().max()).item()
    cached = torch.equal(picked, generated[0, len(ids):])
    kind = type(ref).__name__
    ok = kind == expected_class and rel <= TOL and cached
    print(f"{name:>16}: transformers loads it as {kind}{' (trust_remote_code)' if custom else ''}, logits "
          f"max|d|/max|ref| = {rel:.2e} (tolerance {TOL:.0e}), cached generation {'consistent' if cached else 'DIFFERS'}"
          f" {'OK' if ok else 'FAIL'}")
    return ok


def gpt2(a):
    """A random GPT-2 with SmolLM2's tokenizer: heads and neurons pruned per layer, and alike in every layer."""
    model = os.path.join(a.tmp, "random-gpt2")
    make_random_gpt2(a.model, model, n_embd=256, n_layer=4, n_head=4, n_inner=1024, n_positions=256)
    ok = True   # 5% of all parameters: most of them are the embedding
    for name, extra in (("gpt2-per_layer", ()), ("gpt2-uniform", ("prune.scope=uniform", "prune.keep_layers=[]"))):
        out = prune(a.secateur, model, os.path.join(a.tmp, name), "prune.ratio=0.05", *extra)
        ok &= loads_in_transformers(a, out, name, "SecateurGPT2LMHeadModel")
    return ok


def removed(run_dir):
    layers = json.load(open(os.path.join(run_dir, "decision.json")))["layers"]
    return [(l["layer"], k, set(v)) for l in layers for k, v in l.items() if k.startswith("removed_")]


def qwen2(a):
    ok = True
    small = ("calibration.samples=4", "convert.dtype=bfloat16")   # bf16 exports: half the disk
    uniform = prune(a.secateur, a.qwen_gguf, os.path.join(a.tmp, "qwen2-uniform"), "prune.scope=uniform",
                    "prune.keep_layers=[]", *small)
    ok &= loads_in_transformers(a, uniform, "qwen2-uniform", "Qwen2ForCausalLM")

    def outputs(run_dir):
        return [open(os.path.join(run_dir, *f), "rb").read()
                for f in (("decision.json",), ("pruned", "model.safetensors"), ("pruned", "config.json"))]
    one_dir = os.path.join(a.tmp, "qwen2-dp1tp1")
    ok &= loads_in_transformers(a, prune(a.secateur, a.qwen_gguf, one_dir, *small), "qwen2-per_layer",
                                "SecateurQwen2ForCausalLM")
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

    # 1. every kind of export -> transformers
    gum = ("recover.steps=4", "recover.batch=2", "recover.micro_batch=2", "recover.seq_len=32", "gum.keep=0.6")
    kinds = (("uniform", "prune", ("prune.scope=uniform", "prune.keep_layers=[]"), "LlamaForCausalLM"),
             ("per_layer", "prune", (), "SecateurLlamaForCausalLM"),
             ("global", "prune", ("prune.scope=global",), "SecateurLlamaForCausalLM"),
             ("layers-removed", "prune", ("prune.scope=layer",), "LlamaForCausalLM"),
             ("gum", "gum", gum, "SecateurLlamaForCausalLM"))
    for name, stage, extra, expected in kinds:
        out = prune(a.secateur, a.model, os.path.join(a.tmp, name), *extra, stage=stage)
        ok &= loads_in_transformers(a, out, name, expected)
    cfg = json.load(open(os.path.join(a.tmp, "uniform", "pruned", "config.json")))
    ok &= "secateur_layer_widths" not in cfg and "auto_map" not in cfg   # a uniform export is a stock config
    ok &= gpt2(a)

    # 2. per_layer (uneven) -> exact round trip
    uneven = os.path.join(a.tmp, "per_layer", "pruned")
    again = os.path.join(a.tmp, "uneven-again")
    subprocess.run([a.secateur, "convert", "--in", uneven, "--out", again, f"run.dir={a.tmp}/convert-run"],
                   check=True, stdout=subprocess.DEVNULL)
    c1, c2 = (json.load(open(os.path.join(d, "config.json"))) for d in (uneven, again))
    t1, t2 = (load_file(os.path.join(d, "model.safetensors")) for d in (uneven, again))
    same = c1 == c2 and t1.keys() == t2.keys() and all(
        torch.equal(t1[k], t2[k]) for k in t1)
    print(f"per-layer export: widths {c1['secateur_layer_widths']['intermediate_size'][:5]}..., "
          f"{len(t1)} tensors round-trip exactly: {same}")
    ok &= same

    # 3. the same decision and checkpoint on every grid
    def outputs(run_dir):
        return [open(os.path.join(run_dir, *f), "rb").read()
                for f in (("decision.json",), ("pruned", "model.safetensors"), ("pruned", "config.json"))]
    one = outputs(os.path.join(a.tmp, "per_layer"))
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
