"""Secateur's token ids vs PyPI `tokenizers` / transformers, which must be identical.

SmolLM2 (--gguf), on the whole Austen text (six novels), against three references:
  * the tokenizer.json that `secateur convert` wrote, loaded by `tokenizers` and by transformers' AutoTokenizer;
  * a tokenizer built here from the GGUF's own arrays with `tokenizers` primitives (BPE + Digits + ByteLevel),
    independent of anything Secateur wrote.
Qwen2.5 (--qwen-gguf, when the file exists; a SKIPPED line otherwise), on a whole novel and a text of tricky
strings, against:
  * transformers' own GGUF tokenizer loader (AutoTokenizer.from_pretrained(dir, gguf_file=...));
  * a tokenizer built here from the GGUF's arrays plus transformers' Qwen2 pattern (PRETOKENIZE_REGEX);
  * the tokenizer.json that `secateur convert` writes for it (read by `tokenizers` and by Secateur);
  and, with NFC (GGUF loaders apply none; Qwen's own tokenizer.json and transformers' Qwen2Tokenizer do), Secateur
  reading Qwen's tokenizer.json shape against `tokenizers` with it and against AutoTokenizer on the exported
  directory (where transformers builds its Qwen2Tokenizer, which always adds NFC).
Every code point (always): a synthetic byte-level tokenizer whose merges join a few ASCII markers with any byte,
so that its ids show every pre-token boundary and every byte after normalisation, run over each code point in
contexts that exercise each part of the patterns, for gpt2, smollm, qwen2 and qwen2 + NFC.
"""
import argparse, os, subprocess, sys, time

import numpy as np
import gguf
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

NOVELS = ["emma", "mansfieldpark", "northangerabbey", "persuasion", "prideprejudice", "sensesensibility"]

# Qwen2's pattern from the model family's own tokenizer code (transformers' Qwen2Tokenizer).
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX as QWEN2_PATTERN

TRICKY = [
    "HE'S here, I'M sure DON'T they'RE We'VE she'LL he'D it'S x'ſa O'Neil rock'n'roll ''quoted'' '",
    "1234567890 x12y 3.14159 1,000,000 $9.99 2nd 3rd 10th ١٢٣٤ ½ ¾ Ⅻ ²³ ①②",
    "a\n\n\nb  \n  c\r\n\r\nd \t\n\n\n\n\t\t  \n", "trailing spaces   ", "   leading", "tabs\t\tand\t", " \n \n ",
    " " * 40 + "indent\n" + "\n" * 20 + "end",
    "Привет, мир! Ωμέγα naïve façade 你好世界 こんにちは 안녕하세요 مرحبا שלום हिन्दी ไทย ქართული",
    "Hello!!! ... ?! -- ---> <=> ::= (( )) [[ ]] {{ }} \"quoted\" «guillemets» ¿qué? ¡sí! …",
    "😀😀 🎉🎉!! 👨\u200d👩\u200d👧\u200d👦 🏳\ufe0f\u200d🌈 👍🏽 ❤️ ☃ ✓✗ ™®©",
    "\u00a0nbsp\u2003em\u3000ideo\u180emongol\u200bzw\u0085nel\u2028ls\u2029ps\u000bvt\u000cff",
    "def f(x):\n    return x**2  # square\n\nclass A:\n\tpass\r\n\nif a != b && c >= d: print(f\"{a!r}\")\n",
    "for (int i = 0; i < n; ++i) { sum += a[i] * b[i]; }  // dot\n#include <vector>\n",
    "https://example.com/path?q=1&r=2#frag user@example.com C:\\Users\\x\\file.txt",
    "<|im_start|>user\nhi<|im_end|>\n<tool_call>{\"name\": \"f\"}</tool_call><|endoftext|>",
    "cafe\u0301 \u212b A\u030a \u0958 \u1100\u1161\u11a8 e\u0301\u0323 >\u0338 a\u1df6\u0323 \ufb01 \u2126",
    "\U00010d4a\U00010d4b \U00010d40\U00010d41 \U0001e5d0 \U0002ebf0",
]


def run(cmd):
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def secateur_ids(secateur, tokenizer, text_spec, out, text_out=None):
    cmd = [secateur, "tokenize", "--tokenizer", tokenizer, "--text", text_spec, "--out", out]
    if text_out:
        cmd += ["--text-out", text_out]
    seconds = run(cmd)
    return np.fromfile(out, dtype="<i4"), seconds


def compare(label, ours, results):
    """Prints one line per reference that differs; returns True when all are identical to ours."""
    ok = True
    for name, ids in results.items():
        ids = np.asarray(ids)
        if ids.shape == ours.shape and np.array_equal(ids, ours):
            continue
        n = min(len(ids), len(ours))
        first = int(np.argmax(ids[:n] != ours[:n])) if np.any(ids[:n] != ours[:n]) else n
        print(f"{label}: MISMATCH vs {name}: {len(ours)} vs {len(ids)} tokens, first difference at {first}: "
              f"ours {ours[first:first + 8].tolist()} vs {ids[first:first + 8].tolist()}")
        ok = False
    return ok


def read_text(path):
    with open(path, encoding="utf-8", newline="") as f:   # exactly the text Secateur tokenized
        return f.read()


def gguf_arrays(path):
    r = gguf.GGUFReader(path)
    tokens = r.fields["tokenizer.ggml.tokens"].contents()
    merges = [tuple(m.split(" ", 1)) for m in r.fields["tokenizer.ggml.merges"].contents()]
    types = r.fields["tokenizer.ggml.token_type"].contents()
    return r, tokens, merges, types


# ---- SmolLM2 ----

def reference_from_gguf(path):
    r, tokens, merges, types = gguf_arrays(path)
    assert r.fields["tokenizer.ggml.pre"].contents() == "smollm"
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([t for t, ty in zip(tokens, types) if ty == 3])
    return tok


def smollm2_checks(a):
    from transformers import AutoTokenizer
    refs = {"gguf-arrays": reference_from_gguf(a.gguf), "tokenizer.json": Tokenizer.from_file(os.path.join(a.hf, "tokenizer.json"))}
    auto = AutoTokenizer.from_pretrained(a.hf)
    ok, total = True, 0
    for novel in NOVELS:
        out = os.path.join(a.tmp, novel + ".i32")
        txt = os.path.join(a.tmp, novel + ".txt")
        ours, _ = secateur_ids(a.secateur, a.gguf, "austen:" + novel, out, txt)
        ours_hf, _ = secateur_ids(a.secateur, a.hf, "austen:" + novel, out + ".hf")
        text = read_text(txt)
        results = {name: np.array(t.encode(text, add_special_tokens=False).ids) for name, t in refs.items()}
        results["AutoTokenizer"] = np.array(auto(text, add_special_tokens=False)["input_ids"])
        results["secateur(tokenizer.json)"] = ours_hf
        ok = compare(novel, ours, results) and ok
        total += len(ours)
        print(f"{novel:>16}: {len(ours):7d} tokens, equal to {', '.join(results)}: {ok}")
    print(f"compared {total} tokens: {'OK' if ok else 'FAIL'}")
    return ok


# ---- Qwen2.5 ----

def qwen2_reference_from_gguf(path):
    """Built from the GGUF's arrays and transformers' Qwen2 pattern only (llama.cpp's token types: 3 control, 4 user-defined)."""
    r, tokens, merges, types = gguf_arrays(path)
    assert r.fields["tokenizer.ggml.pre"].contents() == "qwen2"
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t, ty in zip(tokens, types) if ty == 3])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t, ty in zip(tokens, types) if ty == 4])
    return tok


def encode_plain(tok, text):
    """HF ids of text with control tokens left as text (Secateur's `tokenize` passes parse_special=false)."""
    tok.encode_special_tokens = True
    return np.array(tok.encode(text, add_special_tokens=False).ids)


def qwen2_checks(a):
    if not os.path.exists(a.qwen_gguf):
        print(f"SKIPPED: Qwen2 tokenizer checks: {a.qwen_gguf} missing (tools/setup.sh --model qwen2.5-coder-0.5b fetches it)")
        return True
    from transformers import AutoTokenizer
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tmp = os.path.join(a.tmp, "qwen2")
    os.makedirs(tmp, exist_ok=True)

    t0 = time.perf_counter()
    hf_gguf = AutoTokenizer.from_pretrained(os.path.dirname(os.path.abspath(a.qwen_gguf)),
                                            gguf_file=os.path.basename(a.qwen_gguf)).backend_tokenizer
    print(f"qwen2: transformers' GGUF tokenizer loaded in {time.perf_counter() - t0:.1f} s "
          f"(normalizer {hf_gguf.normalizer}, {hf_gguf.get_vocab_size()} tokens)")
    refs = {"transformers(gguf)": hf_gguf, "gguf-arrays+qwen2 pattern": qwen2_reference_from_gguf(a.qwen_gguf)}

    # The tokenizer.json Secateur exports for it.
    hf_dir = os.path.join(tmp, "hf")
    seconds = run([a.secateur, "convert", "--in", a.qwen_gguf, "--out", hf_dir, "convert.dtype=bfloat16",
                   "run.dir=" + os.path.join(tmp, "convert-run")])
    print(f"qwen2: secateur convert wrote {hf_dir} in {seconds:.1f} s")
    os.remove(os.path.join(hf_dir, "model.safetensors"))   # only its tokenizer files are read here (1 GB)
    refs["tokenizer.json"] = Tokenizer.from_file(os.path.join(hf_dir, "tokenizer.json"))
    auto = AutoTokenizer.from_pretrained(hf_dir).backend_tokenizer

    # Qwen's own tokenizer.json shape: the same tokenizer with transformers' Qwen2Tokenizer's NFC normalizer.
    nfc_dir = os.path.join(tmp, "nfc")
    os.makedirs(nfc_dir, exist_ok=True)
    nfc = Tokenizer.from_str(hf_gguf.to_str())
    nfc.normalizer = normalizers.NFC()
    nfc.save(os.path.join(nfc_dir, "tokenizer.json"))

    tricky_file = os.path.join(tmp, "tricky.txt")
    with open(tricky_file, "w", encoding="utf-8", newline="") as f:
        f.write("\n\n".join(TRICKY))
    ok = True
    for label, spec in [(a.qwen_novel, "austen:" + a.qwen_novel), ("tricky strings", tricky_file)]:
        out = os.path.join(tmp, label.replace(" ", "_") + ".i32")
        txt = out + ".txt"
        ours, seconds = secateur_ids(a.secateur, a.qwen_gguf, spec, out, txt)
        text = read_text(txt)
        results = {}
        for name, t in refs.items():
            t0 = time.perf_counter()
            results[name] = encode_plain(t, text)
            if name == "transformers(gguf)":
                hf_seconds = time.perf_counter() - t0
        results["secateur(tokenizer.json)"], _ = secateur_ids(a.secateur, hf_dir, spec, out + ".hf")
        same = compare(label, ours, results)
        print(f"qwen2 {label:>14}: {len(ours):7d} tokens ({len(text)} characters), identical to {', '.join(results)}: {same}")
        # With NFC: Secateur reading Qwen's tokenizer.json shape, against tokenizers with it and against
        # AutoTokenizer on the exported directory (transformers builds its Qwen2Tokenizer there, which always
        # adds NFC). These differ from the GGUF route only where the text is not in NFC.
        ours_nfc, _ = secateur_ids(a.secateur, nfc_dir, spec, out + ".nfc")
        nfc_results = {"tokenizers(NFC tokenizer.json)": encode_plain(nfc, text),
                       "AutoTokenizer(exported dir, Qwen2Tokenizer)": encode_plain(auto, text)}
        same_nfc = compare(label + " (NFC)", ours_nfc, nfc_results)
        print(f"qwen2 {label:>14}: {len(ours_nfc):7d} tokens with NFC, identical to {', '.join(nfc_results)}: {same_nfc}")
        ok = ok and same and same_nfc
        if spec.startswith("austen:"):
            empty = os.path.join(tmp, "empty.txt")
            open(empty, "w").close()
            _, load = secateur_ids(a.secateur, a.qwen_gguf, empty, os.path.join(tmp, "empty.i32"))
            print(f"qwen2 speed on {label}: secateur tokenize {seconds:.2f} s (of which {load:.2f} s loading the "
                  f"GGUF tokenizer, so about {max(seconds - load, 0):.2f} s reading and encoding the novel); tokenizers encode {hf_seconds:.2f} s")
    print(f"qwen2: {'OK' if ok else 'FAIL'}")
    return ok


# ---- every code point, through a boundary-revealing tokenizer ----

def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


MARKERS = "a1! \n'x"


def boundary_tokenizer(pre, nfc):
    """256 byte tokens, then a merge of each marker with every byte on either side: a marker joins its neighbour
    exactly when the two are in one pre-token, so the ids show every boundary (and every byte of the text)."""
    b2u = bytes_to_unicode()
    vocab = {b2u[b]: b for b in range(256)}
    merges = []
    for left_side in (True, False):
        for m in MARKERS.encode():
            for b in range(256):
                pair = (b2u[m], b2u[b]) if left_side else (b2u[b], b2u[m])
                if pair[0] + pair[1] not in vocab:
                    vocab[pair[0] + pair[1]] = len(vocab)
                    merges.append(pair)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    if pre == "gpt2":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    elif pre == "smollm":
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                     pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    if nfc:
        tok.normalizer = normalizers.NFC()
    tok.decoder = decoders.ByteLevel()
    return tok


def sweep_chunks():
    """Each code point in contexts for letters, numbers, spaces, punctuation, contractions, newline runs and
    combining marks; items start with "a" after a "\n", where no pattern joins across, so chunks encode apart."""
    cps = [cp for cp in list(range(0x40000)) + list(range(0xE0000, 0xE1000)) if not 0xD800 <= cp < 0xE000]
    chunk, chunks = [], []
    for cp in cps:
        c = chr(cp)
        chunk.append(f"a{c}a {c}1!{c}! x'{c}a {c}{c}\n{c} x e{c}\u0301 \u1100{c}\n")
        if len(chunk) == 4096:
            chunks.append("".join(chunk))
            chunk = []
    chunks.append("".join(chunk))
    return chunks


def sweep_checks(a):
    tmp = os.path.join(a.tmp, "sweep")
    os.makedirs(tmp, exist_ok=True)
    chunks = sweep_chunks()
    text_file = os.path.join(tmp, "every_code_point.txt")
    with open(text_file, "w", encoding="utf-8", newline="") as f:
        f.write("".join(chunks))
    ok = True
    for pre, nfc in [("gpt2", False), ("smollm", False), ("qwen2", False), ("qwen2", True)]:
        label = pre + (" + NFC" if nfc else "")
        d = os.path.join(tmp, label.replace(" + ", "_"))
        os.makedirs(d, exist_ok=True)
        tok = boundary_tokenizer(pre, nfc)
        tok.save(os.path.join(d, "tokenizer.json"))
        ours, _ = secateur_ids(a.secateur, d, text_file, os.path.join(d, "ids.i32"))
        ref = np.concatenate([np.array(e.ids, dtype=np.int32) for i in range(0, len(chunks), 8)
                              for e in tok.encode_batch(chunks[i:i + 8], add_special_tokens=False)])
        same = compare("every code point, " + label, ours, {"tokenizers": ref})
        print(f"every code point, {label:>12}: {len(ours):8d} tokens, identical to tokenizers: {same}")
        ok = ok and same
    return ok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--secateur", required=True)
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--hf", required=True, help="directory written by `secateur convert`")
    ap.add_argument("--qwen-gguf", default="", help="Qwen2.5 GGUF, checked when the file exists")
    ap.add_argument("--qwen-novel", default="persuasion")
    ap.add_argument("--tmp", required=True)
    a = ap.parse_args()
    os.makedirs(a.tmp, exist_ok=True)
    ok = smollm2_checks(a)
    ok = qwen2_checks(a) and ok
    ok = sweep_checks(a) and ok
    print("tokenizer fidelity: " + ("OK" if ok else "FAIL"))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
