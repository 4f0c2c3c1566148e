"""Pruned checkpoints, end to end on SmolLM2-135M (Taylor element-1, 20% of parameters):
  * scope uniform: the export is a stock LlamaConfig that transformers loads, and its logits
    match Secateur's on the same checkpoint (max|d|/max|ref| <= 1e-4);
  * scope per_layer (uneven layers): the export round-trips exactly (convert it again: every
    tensor and the per-layer widths come back bit for bit);
  * the decision.json and the pruned checkpoint are byte-identical for (DP, TP) = (1,1), (2,1),
    (1,2), (2,2): with TP the statistics are made whole over the TP ranks and every rank writes
    its own slices of the pruned weights into the checkpoint.
"""
import argparse, json, os, subprocess, sys

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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--secateur", required=True)
    ap.add_argument("--dump", required=True, help="logits_dump")
    ap.add_argument("--model", required=True, help="the converted SmolLM2 HF directory")
    ap.add_argument("--tmp", required=True)
    a = ap.parse_args()
    os.makedirs(a.tmp, exist_ok=True)
    ok = True

    # 1. uniform -> stock transformers
    uniform = prune(a.secateur, a.model, os.path.join(a.tmp, "uniform"), "prune.scope=uniform", "prune.keep_layers=[]")
    cfg = json.load(open(os.path.join(uniform, "config.json")))
    assert "secateur_layer_widths" not in cfg, "a uniform export must be a stock config"
    ref = transformers.AutoModelForCausalLM.from_pretrained(uniform, dtype=torch.float32).eval()
    ids = transformers.AutoTokenizer.from_pretrained(uniform)(
        "It is a truth universally acknowledged, that a single man in possession of a good fortune")["input_ids"]
    with open(os.path.join(a.tmp, "ids.json"), "w") as f:
        json.dump([ids], f)
    out = os.path.join(a.tmp, "uniform.logits.safetensors")
    subprocess.run([a.dump, uniform, "float32", os.path.join(a.tmp, "ids.json"), out], check=True)
    with torch.no_grad():
        want = ref(torch.tensor([ids])).logits[0]
    got = load_file(out)["logits.0"]
    rel = ((got - want).abs().max() / want.abs().max()).item()
    print(f"uniform export: d_ff {cfg['intermediate_size']}, kv heads {cfg['num_key_value_heads']}, "
          f"transformers logits max|d|/max|ref| = {rel:.2e} (tolerance 1e-4)")
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
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
