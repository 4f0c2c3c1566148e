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
  * FLAP with bias compensation (LLaMA + attention_bias/mlp_bias, zero biases where SmolLM2 had
    none): per layer through the modeling file, uniform as a stock LlamaForCausalLM;
  * the decision.json and the pruned checkpoint are byte-identical for (DP, TP) = (1,1), (2,1),
    (1,2), (2,2): with TP the statistics are made whole over the TP ranks and every rank writes
    its own slices of the pruned weights into the checkpoint. Compensated FLAP: the same bytes at
    DP = 2; at TP = 2 the same decision.json and config, every weight the same, and the
    compensation biases within 1e-5 of TP = 1's (max|d|/max|ref|: TP's activations differ from
    TP = 1's in the last bits, and the biases are their means). Least-squares compensation at
    TP = 2: the same decision and config, the compensated o_proj/down_proj weights and biases
    within 1e-3 (the solve amplifies those last bits; 7e-5 measured), every other tensor equal.
Qwen2.5-Coder-0.5B (when its GGUF is given and present; 4 calibration windows, bf16 exports):
  * a uniform export loads in stock transformers as Qwen2ForCausalLM, a per-layer one as
    SecateurQwen2ForCausalLM; compensated FLAP (uniform) as LlamaForCausalLM (Qwen2's class has no
    o_proj or MLP bias); logits as Secateur's;
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

FLAP = ("prune.criterion=flap", "prune.compensation=bias")
FLAP_LS = ("prune.criterion=flap", "prune.compensation=least_squares")
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
    flap = prune(a.secateur, a.qwen_gguf, os.path.join(a.tmp, "qwen2-flap"), "prune.scope=uniform",
                 "prune.keep_layers=[]", *FLAP, *small)
    ok &= loads_in_transformers(a, flap, "qwen2-flap", "LlamaForCausalLM")

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
    for d in ("qwen2-uniform", "qwen2-flap", "qwen2-dp1tp1", "qwen2-dp2tp1", "qwen2-dp1tp2"):   # 1 GB each
        shutil.rmtree(os.path.join(a.tmp, d), ignore_errors=True)
    return ok


def same_but_compensated(a, name, dp, tp, one, got, run_dir, compensated, tol):
    """The same decision.json and config.json; every tensor equal but the compensated ones (names
    ending in `compensated`), which are within tol (max|d|/max|ref|) of TP = 1's."""
    t1 = load_file(os.path.join(a.tmp, name, "pruned", "model.safetensors"))
    t2 = load_file(os.path.join(run_dir, "pruned", "model.safetensors"))
    worst, others = 0.0, t1.keys() == t2.keys()
    for k in t1:
        if k.endswith(compensated):
            worst = max(worst, ((t1[k] - t2[k]).abs().max() / t1[k].abs().max().clamp_min(1e-30)).item())
        else:
            others &= torch.equal(t1[k], t2[k])
    ok = got[0] == one[0] and got[2] == one[2] and others and worst <= tol
    print(f"{name} (DP, TP) = ({dp}, {tp}) vs (1, 1): decision.json and config "
          f"{'byte-identical' if got[0] == one[0] and got[2] == one[2] else 'DIFFERENT'}, other tensors "
          f"{'equal' if others else 'DIFFERENT'}, compensated tensors max|d|/max|ref| = {worst:.1e} (at most {tol:.0e})"
          f" {'OK' if ok else 'FAIL'}")
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
             ("gum", "gum", gum, "SecateurLlamaForCausalLM"),
             ("flap", "prune", FLAP, "SecateurLlamaForCausalLM"),
             ("flap-uniform", "prune", FLAP + ("prune.scope=uniform", "prune.keep_layers=[]"), "LlamaForCausalLM"))
    for name, stage, extra, expected in kinds:
        out = prune(a.secateur, a.model, os.path.join(a.tmp, name), *extra, stage=stage)
        ok &= loads_in_transformers(a, out, name, expected)
    cfg = json.load(open(os.path.join(a.tmp, "uniform", "pruned", "config.json")))
    ok &= "secateur_layer_widths" not in cfg and "auto_map" not in cfg   # a uniform export is a stock config
    cfg = json.load(open(os.path.join(a.tmp, "flap-uniform", "pruned", "config.json")))
    biased = cfg.get("attention_bias") is True and cfg.get("mlp_bias") is True
    print(f"compensated export: attention_bias and mlp_bias {'set' if biased else 'MISSING'}")
    ok &= biased
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
    prune(a.secateur, a.model, os.path.join(a.tmp, "flap-ls"), *FLAP_LS)
    compensated = {"flap": (("o_proj.bias", "down_proj.bias"), 1e-5),
                   "flap-ls": (("o_proj.bias", "down_proj.bias", "o_proj.weight", "down_proj.weight"), 1e-3)}
    for name, extra, grids in (("per_layer", (), ((2, 1), (1, 2), (2, 2))), ("flap", FLAP, ((2, 1), (1, 2), (2, 2))),
                               ("flap-ls", FLAP_LS, ((1, 2),))):
        one = outputs(os.path.join(a.tmp, name))
        for dp, tp in grids:
            run_dir = os.path.join(a.tmp, f"{name}-dp{dp}tp{tp}")
            prune(a.secateur, a.model, run_dir, *extra, ranks=dp * tp, tp=tp)
            got = outputs(run_dir)
            if name in compensated and tp > 1:
                ok &= same_but_compensated(a, name, dp, tp, one, got, run_dir, *compensated[name])
                continue
            same = got == one
            print(f"{name} (DP, TP) = ({dp}, {tp}) vs (1, 1): decision.json and pruned checkpoint "
                  f"{'byte-identical' if same else 'DIFFERENT'}")
            ok &= same
    if a.qwen_gguf and os.path.exists(a.qwen_gguf):
        ok &= qwen2(a)
    else:
        print(f"qwen2: SKIPPED: {a.qwen_gguf} missing (tools/setup.sh fetches it)")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
