"""Bad input to the `secateur` executable: each case must give exactly one clear error line
on stderr that names what is wrong, a non-zero exit, no crash, and no complete-looking output."""
import argparse, gzip, json, os, shutil, struct, subprocess, sys


def run(secateur, args, cwd):
    return subprocess.run([secateur] + args, cwd=cwd, capture_output=True, text=True, timeout=120)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--secateur", required=True)
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--tmp", required=True)
    a = ap.parse_args()
    shutil.rmtree(a.tmp, ignore_errors=True)
    os.makedirs(a.tmp)
    t = lambda name: os.path.join(a.tmp, name)

    data = open(a.gguf, "rb").read()
    open(t("truncated.gguf"), "wb").write(data[: len(data) // 2])
    open(t("header-only.gguf"), "wb").write(data[:100])
    open(t("badmagic.gguf"), "wb").write(b"GGUX" + data[4:4096])
    open(t("version9.gguf"), "wb").write(data[:4] + struct.pack("<I", 9) + data[8:4096])
    header = b'{"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}'
    open(t("long-header.safetensors"), "wb").write(struct.pack("<Q", 10**12) + header)
    open(t("past-end.safetensors"), "wb").write(struct.pack("<Q", len(header)) + header + b"\0" * 8)
    bad_dtype = b'{"w": {"dtype": "F7", "shape": [2], "data_offsets": [0, 8]}}'
    open(t("bad-dtype.safetensors"), "wb").write(struct.pack("<Q", len(bad_dtype)) + bad_dtype + b"\0" * 8)
    for name in ("long-header", "past-end", "bad-dtype"):
        os.makedirs(t(name + "-dir"))
        shutil.copy(t(name + ".safetensors"), os.path.join(t(name + "-dir"), "model.safetensors"))
        open(os.path.join(t(name + "-dir"), "config.json"), "w").write(
            '{"model_type": "llama", "vocab_size": 8, "hidden_size": 4, "intermediate_size": 8,'
            ' "num_hidden_layers": 1, "num_attention_heads": 1}')
    # Sizes and depths a reader must refuse before it allocates or recurses: counts and lengths near
    # 2^40 and 2^60, JSON nested 10^5 deep, a YAML alias bomb (10 levels of 9: 9^10 strings if expanded).
    open(t("huge-count.gguf"), "wb").write(data[:8] + struct.pack("<Q", 2**40) + data[16:1 << 20])
    open(t("huge-kv.gguf"), "wb").write(data[:16] + struct.pack("<Q", 2**40) + data[24:1 << 20])
    open(t("huge-string.gguf"), "wb").write(data[:24] + struct.pack("<Q", 2**60) + data[32:1 << 20])
    os.makedirs(t("huge-header-dir"))
    open(t("huge-header-dir/model.safetensors"), "wb").write(struct.pack("<Q", 2**60) + header + b"\0" * 16)
    deep = "[" * 10**5 + "]" * 10**5
    os.makedirs(t("deep-config"))
    open(t("deep-config/config.json"), "w").write(deep)
    tiny_gguf = os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../tools/fuzz/corpus/gguf/seed-tiny-llama-Q8_0.gguf")
    r = run(a.secateur, ["convert", "--in", tiny_gguf, "--out", t("deep-tokenizer")], a.tmp)
    assert r.returncode == 0, r.stderr
    open(t("deep-tokenizer/tokenizer.json"), "w").write('{"model": ' + deep + "}")
    lol = "[" + ", ".join(['"lol"'] * 9) + "]"
    levels = [f"&a0 {lol}"] + [f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    open(t("alias-bomb.yaml"), "w").write("eval:\n  windows: [" + ", ".join(levels) + "]\n")
    open(t("alias-bomb-top.yaml"), "w").write("".join(f"l{i}: {x}\n" for i, x in enumerate(levels)))
    shutil.copy(t("long-header-dir/config.json"), t("huge-header-dir/config.json"))
    open(t("malformed.yaml"), "w").write("model:\n  path: [oops\n")
    open(t("unknown-key.yaml"), "w").write("eval:\n  windowz: [128]\n")
    open(t("bad-value.yaml"), "w").write("model:\n  dtype: fp8\n")
    # Zero-shot task files (eval.tasks_dir): a truncated gzip, a request without its continuation.
    request = lambda doc, idx, **r: json.dumps({"request": {"context": "Q?", **r}, "doc_id": doc, "idx": idx, "label": 0})
    for task in ("boolq", "piqa", "arc_easy"):
        os.makedirs(t(f"tasks/{task}/rc_0shot"))
    whole = gzip.compress("".join(request(d, i, continuation=f" {d * 7919}") + "\n"
                                  for d in range(300) for i in range(2)).encode())
    open(t("tasks/boolq/rc_0shot/requests.jsonl.gz"), "wb").write(whole[: len(whole) // 2])
    open(t("tasks/piqa/rc_0shot/requests.jsonl.gz"), "wb").write(
        gzip.compress((request(0, 0, continuation=" a") + "\n" + request(0, 1) + "\n").encode()))
    open(t("tasks/arc_easy/rc_0shot/requests.jsonl.gz"), "wb").write(gzip.compress((deep + "\n").encode()))
    tasks = lambda task: ["eval", "model.path=" + a.gguf, "run.dir=" + t("run"), "eval.windows=[]",
                          f"eval.tasks=[{task}]", "eval.tasks_dir=" + t("tasks")]

    # Instruction data (recover.text = *.jsonl): line 2 has no response.
    open(t("bad.jsonl"), "w").write('{"instruction": "a", "output": "b"}\n{"instruction": "c"}\n')
    recover = lambda *extra: ["recover", "model.path=" + a.gguf, "run.dir=" + t("run"), *extra]
    sparse = lambda *extra: ["sparse", "model.path=" + a.gguf, "run.dir=" + t("run"), "recover.method=full", *extra]

    out_dir = t("converted")
    cases = [
        (["convert", "--in", t("truncated.gguf"), "--out", out_dir], ["truncated.gguf", "past end of file"]),
        (["convert", "--in", t("header-only.gguf"), "--out", out_dir], ["header-only.gguf"]),
        (["convert", "--in", t("badmagic.gguf"), "--out", out_dir], ["badmagic.gguf", "magic"]),
        (["convert", "--in", t("version9.gguf"), "--out", out_dir], ["version9.gguf", "version 9"]),
        (["convert", "--in", t("long-header-dir"), "--out", out_dir], ["exceeds file size"]),
        (["convert", "--in", t("past-end-dir"), "--out", out_dir], ["past-end", "'w'"]),
        (["convert", "--in", t("bad-dtype-dir"), "--out", out_dir], ["F7"]),
        (["convert", "--in", t("huge-count.gguf"), "--out", out_dir], ["huge-count.gguf", "absurd tensor count 1099511627776"]),
        (["convert", "--in", t("huge-kv.gguf"), "--out", out_dir], ["huge-kv.gguf", "absurd metadata count 1099511627776"]),
        (["convert", "--in", t("huge-string.gguf"), "--out", out_dir], ["huge-string.gguf", "length 1152921504606846976"]),
        (["convert", "--in", t("huge-header-dir"), "--out", out_dir], ["header length 1152921504606846976 exceeds file size"]),
        (["convert", "--in", t("deep-config"), "--out", out_dir], ["deep-config/config.json", "must be a JSON object, not array"]),
        (["eval", "model.path=" + t("deep-tokenizer"), "run.dir=" + t("run"), "eval.windows=[16]", "eval.tasks=[]"],
         ["deep-tokenizer/tokenizer.json", 'no "model" object']),
        (tasks("arc_easy"), ["arc_easy/rc_0shot/requests.jsonl.gz:1: a request must be a JSON object"]),
        (["eval", t("alias-bomb.yaml")], ["alias-bomb.yaml", "'eval.windows' must be a single value"]),
        (["eval", t("alias-bomb-top.yaml")], ["alias-bomb-top.yaml", "unknown key 'l0'"]),
        (["eval", t("malformed.yaml")], ["malformed.yaml", "malformed YAML at line"]),
        (["eval", t("unknown-key.yaml")], ["unknown key 'eval.windowz'"]),
        (["eval", t("bad-value.yaml")], ["'model.dtype' = 'fp8' is not allowed"]),
        (["eval", "eval.max_tokens=many"], ["'eval.max_tokens' must be an integer"]),
        (["eval", "model.path=" + t("nothing-here.gguf")], ["nothing-here.gguf", "No such file"]),
        (["run", "prune.ratio=1.5", "model.path=" + a.gguf, "run.dir=" + t("run")], ["'prune.ratio' = 1.5 must be in [0, 1)"]),
        (["run", "prune.criterion=magic", "run.dir=" + t("run")], ["'prune.criterion' = 'magic' is not allowed"]),
        (["run", "prune.keep_layers=[40]", "model.path=" + a.gguf, "run.dir=" + t("run")], ["'prune.keep_layers' has layer 40"]),
        (["run", "prune.criterion=sleb", "model.path=" + a.gguf, "run.dir=" + t("run"), "run.stages=[prune]"],
         ["'prune.criterion' = sleb ranks whole layers: it needs 'prune.scope' = layer"]),
        (["run", "prune.criterion=angular", "prune.scope=layer", "prune.ratio=0.01", "model.path=" + a.gguf,
          "run.dir=" + t("run"), "run.stages=[prune]"], ["is below one layer"]),
        (["run", "prune.ratio=0.9", "model.path=" + a.gguf, "run.dir=" + t("run"), "run.stages=[prune]"], ["would empty a layer"]),
        (["eval", "eval.text=austen:hamlet", "model.path=" + a.gguf, "run.dir=" + t("run")], ["hamlet", "persuasion"]),
        (tasks("boolq"), ["boolq/rc_0shot/requests.jsonl.gz:", "truncated"]),
        (tasks("piqa"), ["piqa/rc_0shot/requests.jsonl.gz:2: missing field 'request.continuation'"]),
        (tasks("hellaswag"), ["hellaswag/rc_0shot/requests.jsonl.gz", "eval.tasks"]),
        (tasks("mmlu"), ["eval.tasks: unknown task 'mmlu'"]),
        (recover("recover.text=" + t("bad.jsonl")), ["bad.jsonl:2: no 'output' string"]),
        (recover("recover.heldout=1.5"), ["'recover.heldout' = 1.5 must be in [0, 1)"]),
        (recover("recover.text=" + t("missing.jsonl")), ["recover.text: no file", "missing.jsonl"]),
        (sparse("sparse.gamma=-1"), ["'sparse.gamma' = -1 must be >= 0"]),
        (sparse("sparse.epsilon=0"), ["'sparse.epsilon' = 0 must be > 0"]),
        (sparse("sparse.sparsity=1.0"), ["'sparse.sparsity' = 1 must be in [0, 1)"]),
        (sparse("sparse.sparsity=-0.2"), ["'sparse.sparsity' = -0.2 must be in [0, 1)"]),
        (sparse("recover.method=lora"), ["the sparse stage needs 'recover.method' = full"]),
        (["gum", "model.path=" + a.gguf, "run.dir=" + t("run"), "gum.keep=1.5"], ["'gum.keep' = 1.5 must be in (0, 1]"]),
    ]
    ok = True
    for args, words in cases:
        r = run(a.secateur, args, a.tmp)
        errors = [l for l in r.stderr.splitlines() if "error" in l.lower()]
        good = (r.returncode not in (0,) and r.returncode > 0 and len(errors) == 1
                and all(w in errors[0] for w in words) and not os.path.exists(out_dir))
        ok &= good
        print(f"{'OK  ' if good else 'FAIL'} exit {r.returncode:3d} secateur {' '.join(os.path.basename(x) for x in args)}\n"
              f"     {errors[0] if errors else r.stderr.strip()[-300:]}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
