"""Secateur's token ids vs PyPI `tokenizers` on the whole Austen text (six novels).

Two references, so the check is not circular:
  * the tokenizer.json that `secateur convert` wrote, loaded by `tokenizers` and by transformers' AutoTokenizer;
  * a tokenizer built here from the GGUF's own arrays with `tokenizers` primitives (BPE + Digits + ByteLevel),
    independent of anything Secateur wrote.
"""
import argparse, os, subprocess, sys

import numpy as np
import gguf
from tokenizers import Tokenizer, models, pre_tokenizers, decoders

NOVELS = ["emma", "mansfieldpark", "northangerabbey", "persuasion", "prideprejudice", "sensesensibility"]


def reference_from_gguf(path):
    r = gguf.GGUFReader(path)
    tokens = r.fields["tokenizer.ggml.tokens"].contents()
    merges = [tuple(m.split(" ", 1)) for m in r.fields["tokenizer.ggml.merges"].contents()]
    types = r.fields["tokenizer.ggml.token_type"].contents()
    assert r.fields["tokenizer.ggml.pre"].contents() == "smollm"
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([t for t, ty in zip(tokens, types) if ty == 3])
    return tok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--secateur", required=True)
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--hf", required=True, help="directory written by `secateur convert`")
    ap.add_argument("--tmp", required=True)
    a = ap.parse_args()
    os.makedirs(a.tmp, exist_ok=True)
    from transformers import AutoTokenizer
    refs = {"gguf-arrays": reference_from_gguf(a.gguf), "tokenizer.json": Tokenizer.from_file(os.path.join(a.hf, "tokenizer.json"))}
    auto = AutoTokenizer.from_pretrained(a.hf)
    ok, total = True, 0
    for novel in NOVELS:
        out = os.path.join(a.tmp, novel + ".i32")
        txt = os.path.join(a.tmp, novel + ".txt")
        subprocess.run([a.secateur, "tokenize", "--tokenizer", a.gguf, "--text", "austen:" + novel, "--out", out,
                        "--text-out", txt], check=True, stdout=subprocess.DEVNULL)
        subprocess.run([a.secateur, "tokenize", "--tokenizer", a.hf, "--text", "austen:" + novel, "--out", out + ".hf"],
                       check=True, stdout=subprocess.DEVNULL)
        ours = np.fromfile(out, dtype="<i4")
        ours_hf = np.fromfile(out + ".hf", dtype="<i4")
        with open(txt, encoding="utf-8", newline="") as f:   # exactly the text Secateur tokenized
            text = f.read()
        results = {name: np.array(t.encode(text, add_special_tokens=False).ids) for name, t in refs.items()}
        results["AutoTokenizer"] = np.array(auto(text, add_special_tokens=False)["input_ids"])
        results["secateur(tokenizer.json)"] = ours_hf
        for name, ids in results.items():
            same = ids.shape == ours.shape and np.array_equal(ids, ours)
            if not same:
                n = min(len(ids), len(ours))
                first = int(np.argmax(ids[:n] != ours[:n])) if np.any(ids[:n] != ours[:n]) else n
                print(f"{novel}: MISMATCH vs {name}: {len(ours)} vs {len(ids)} tokens, first difference at {first}")
                ok = False
        total += len(ours)
        print(f"{novel:>16}: {len(ours):7d} tokens, equal to {', '.join(results)}: {ok}")
    print(f"compared {total} tokens: {'OK' if ok else 'FAIL'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
