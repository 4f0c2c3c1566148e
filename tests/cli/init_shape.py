"""`secateur init`: random-weight checkpoints of a shape, written piece by piece.

* A small LLaMA config.json, bfloat16 in at most 3 shards with SmolLM2's tokenizer: stock transformers
  loads it as LlamaForCausalLM; every tensor is as transformers initialises one (norms 1, matrices of
  standard deviation 0.02 and mean 0); the same seed gives the same bytes, another seed other ones.
* A small Qwen2 config: loads as Qwen2ForCausalLM, its q/k/v biases zero, the tied head absent.
* The prune path on the LLaMA one: calibration.recompute=true (a layer's forward again in the backward)
  gives the decision of the plain backward (float32), and the export is written in model.dtype
  (convert.dtype auto): BF16 tensors for a bfloat16 run.
* `secateur memory` of the LLaMA one: its TP-1 weights are the checkpoint's tensor bytes exactly, a TP-2
  rank holds half and the norms, full fine-tuning needs more than LoRA; an unknown --recover method
  is one error line.
* Bad input, one error line each, non-zero exit, no directory left: a head count that does not divide
  the hidden size (naming num_attention_heads), kv-heads that do not divide the heads (naming
  num_key_value_heads), an unknown shape name (listing the known ones).
"""
import argparse, glob, hashlib, json, os, shutil, struct, subprocess, sys

import torch
import transformers

LLAMA = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 49152, "hidden_size": 128,
         "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 512,
         "rms_norm_eps": 1e-5, "max_position_embeddings": 512, "tie_word_embeddings": False, "hidden_act": "silu"}
QWEN2 = {"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "vocab_size": 49152, "hidden_size": 32,
         "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 48,
         "rms_norm_eps": 1e-6, "max_position_embeddings": 512, "tie_word_embeddings": True, "rope_theta": 1e6}


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    return r.returncode, r.stdout + r.stderr


def digest(d):
    h = hashlib.sha256()
    for f in sorted(glob.glob(os.path.join(d, "*.safetensors"))):
        h.update(open(f, "rb").read())
    return h.hexdigest()


def header_dtypes(d):
    out = set()
    for f in glob.glob(os.path.join(d, "*.safetensors")):
        with open(f, "rb") as fh:
            n = struct.unpack("<Q", fh.read(8))[0]
            out |= {v["dtype"] for k, v in json.loads(fh.read(n)).items() if k != "__metadata__"}
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--secateur", required=True)
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--tmp", required=True)
    a = ap.parse_args()
    shutil.rmtree(a.tmp, ignore_errors=True)
    os.makedirs(a.tmp)
    failures = []

    def check(ok, what):
        print(("ok   " if ok else "FAIL ") + what, flush=True)
        if not ok:
            failures.append(what)

    def config(name, c):
        p = os.path.join(a.tmp, name + ".json")
        json.dump(c, open(p, "w"))
        return p

    def init(shape, out, *extra):
        return run([a.secateur, "init", "--shape", shape, "--out", out, "--tokenizer", a.tokenizer] + list(extra))

    llama = os.path.join(a.tmp, "llama")
    rc, log = init(config("llama", LLAMA), llama, "--shards", "3", "--dtype", "bfloat16", "--seed", "7")
    check(rc == 0, "init a small LLaMA: " + log.strip().splitlines()[-1])
    shards = glob.glob(os.path.join(llama, "*.safetensors"))
    check(1 < len(shards) <= 3 and os.path.exists(os.path.join(llama, "model.safetensors.index.json")),
          f"sharded into {len(shards)} files (at most 3) with an index")
    m = transformers.AutoModelForCausalLM.from_pretrained(llama, torch_dtype=torch.float32)
    check(type(m).__name__ == "LlamaForCausalLM", f"transformers loads it as {type(m).__name__}")
    bad = []
    for name, p in m.named_parameters():
        if "norm" in name:
            ok = bool((p == 1).all())
        else:
            ok = abs(p.std().item() - 0.02) < 0.002 and abs(p.mean().item()) < 0.002
        if not ok:
            bad.append(name)
    check(not bad, f"norms 1, matrices N(0, 0.02) ({len(list(m.parameters()))} tensors; off: {bad[:3]})")
    again, other = os.path.join(a.tmp, "again"), os.path.join(a.tmp, "other")
    init(config("llama", LLAMA), again, "--shards", "3", "--dtype", "bfloat16", "--seed", "7")
    init(config("llama", LLAMA), other, "--shards", "3", "--dtype", "bfloat16", "--seed", "8")
    check(digest(again) == digest(llama) and digest(other) != digest(llama), "same seed, same bytes; another seed, others")

    qwen = os.path.join(a.tmp, "qwen2")
    rc, log = init(config("qwen2", QWEN2), qwen)
    q = transformers.AutoModelForCausalLM.from_pretrained(qwen, torch_dtype=torch.float32) if rc == 0 else None
    check(q is not None and type(q).__name__ == "Qwen2ForCausalLM" and
          bool((q.model.layers[0].self_attn.q_proj.bias == 0).all()), "a Qwen2 shape loads as Qwen2ForCausalLM, zero q/k/v biases")

    decisions = {}
    for recompute in ("false", "true"):
        run_dir = os.path.join(a.tmp, "prune-" + recompute)
        rc, log = run([a.secateur, "prune", f"model.path={llama}", f"run.dir={run_dir}", "run.threads=1",
                       "calibration.samples=4", "prune.keep_first=0", "prune.keep_last=0", "prune.ratio=0.03",
                       f"calibration.recompute={recompute}"])
        decisions[recompute] = json.load(open(os.path.join(run_dir, "decision.json")))["hash"] if rc == 0 else log
    check(decisions["true"] == decisions["false"], f"calibration.recompute keeps the decision: {decisions}")
    bf16 = os.path.join(a.tmp, "prune-bf16")
    rc, log = run([a.secateur, "prune", f"model.path={llama}", f"run.dir={bf16}", "run.threads=1", "model.dtype=bfloat16",
                   "calibration.samples=4", "prune.keep_first=0", "prune.keep_last=0", "prune.ratio=0.03"])
    check(rc == 0 and header_dtypes(os.path.join(bf16, "pruned")) == {"BF16"}, "a bfloat16 prune exports BF16 (convert.dtype auto)")

    # secateur memory reads the same shape: its weights at TP 1 are the checkpoint's tensor bytes exactly;
    # at TP 2 each rank holds half of them and what it keeps whole (the norms); full fine-tuning needs more than LoRA.
    tensor_bytes = 0
    for f in shards:
        with open(f, "rb") as fh:
            n = struct.unpack("<Q", fh.read(8))[0]
            tensor_bytes += sum(v["data_offsets"][1] - v["data_offsets"][0]
                                for k, v in json.loads(fh.read(n)).items() if k != "__metadata__")
    mem = os.path.join(a.tmp, "memory.json")
    rc, log = run([a.secateur, "memory", "--shape", llama, "--tp", "1", "2", "--dtype", "bfloat16",
                   "--recover", "lora", "full", "--out", mem])
    j = json.load(open(mem)) if rc == 0 else {"rows": [], "recover_rows": []}
    w = {r["tp"]: r["weights_bytes"] for r in j["rows"]}
    peaks = {(r["tp"], r["method"]): r["peak_bytes"] for r in j["recover_rows"]}
    check(w.get(1) == tensor_bytes and tensor_bytes / 2 <= w.get(2, 0) < 0.55 * tensor_bytes,
          f"secateur memory: weights per rank {w} of a {tensor_bytes}-byte checkpoint")
    check(len(peaks) == 4 and all(peaks[(tp, "full")] > peaks[(tp, "lora")] for tp in (1, 2)),
          f"secateur memory --recover: full above LoRA at TP 1 and 2 {peaks}")
    rc, log = run([a.secateur, "memory", "--shape", llama, "--recover", "lorax"])
    lines = [l for l in log.splitlines() if "error" in l]
    check(rc != 0 and len(lines) == 1 and "lorax" in lines[0], f"secateur memory --recover lorax: {lines}")

    for label, shape, needle in [
            ("7 heads of a hidden size of 128", config("bad_heads", dict(LLAMA, num_attention_heads=7)), "num_attention_heads"),
            ("3 kv-heads for 4 heads", config("bad_kv", dict(LLAMA, num_key_value_heads=3)), "num_key_value_heads"),
            ("an unknown shape", "llama-9-99b", "llama-2-7b")]:
        out = os.path.join(a.tmp, "bad")
        rc, log = init(shape, out)
        lines = [l for l in log.splitlines() if "error" in l]
        check(rc != 0 and len(lines) == 1 and needle in lines[0] and not os.path.exists(out) and
              not os.path.exists(out + ".partial"), f"{label}: {lines}")
    if failures:
        sys.exit(f"{len(failures)} check(s) failed")


if __name__ == "__main__":
    main()
