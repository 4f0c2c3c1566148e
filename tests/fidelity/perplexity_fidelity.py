"""Perplexity of the dense model: Secateur's `eval` vs transformers on the very same windows.

Protocol (README "Perplexity"): the first 16,384 tokens of Persuasion (janeaustenr), cut into
non-overlapping windows of 128 and of 2048 tokens; within a window, every token after the first
is predicted; ppl = exp(sum NLL / predictions). Pass: both agree to 4 significant digits.
"""
import argparse, json, math, os, subprocess, sys

import numpy as np
import torch
import transformers

TEXT, MAX_TOKENS, WINDOWS = "austen:persuasion", 16384, (128, 2048)


def reference_ppl(model, ids, window, batch=8):
    n = len(ids) // window
    x = torch.tensor(ids[: n * window]).view(n, window)
    nll, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, n, batch):
            xb = x[i : i + batch]
            logits = model(xb).logits.float()
            loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)),
                                                     xb[:, 1:].reshape(-1), reduction="sum")
            nll += loss.item()
            count += xb[:, 1:].numel()
    return math.exp(nll / count), n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--secateur", required=True)
    ap.add_argument("--model", required=True, help="HF directory (converted SmolLM2)")
    ap.add_argument("--tmp", required=True)
    ap.add_argument("--results", help="also write the comparison here (JSON)")
    a = ap.parse_args()
    os.makedirs(a.tmp, exist_ok=True)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    windows = "[" + ",".join(map(str, WINDOWS)) + "]"
    subprocess.run([a.secateur, "eval", f"model.path={a.model}", f"run.dir={a.tmp}", f"eval.text={TEXT}",
                    f"eval.max_tokens={MAX_TOKENS}", f"eval.windows={windows}", "eval.speed=false"], check=True)
    ours = {}
    with open(os.path.join(a.tmp, "metrics.jsonl")) as f:
        for line in f:
            m = json.loads(line)
            if m.get("metric") == "perplexity":
                ours[m["window"]] = m["ppl"]
    ids_path = os.path.join(a.tmp, "eval.i32")
    subprocess.run([a.secateur, "tokenize", "--tokenizer", a.model, "--text", TEXT, "--out", ids_path],
                   check=True, stdout=subprocess.DEVNULL)
    ids = np.fromfile(ids_path, dtype="<i4")[:MAX_TOKENS].tolist()
    model = transformers.AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32).eval()
    ok, rows = True, []
    for w in WINDOWS:
        ref, n = reference_ppl(model, ids, w)
        same = f"{ours[w]:.4g}" == f"{ref:.4g}" or abs(ours[w] - ref) / ref < 1e-6
        ok &= same
        rows.append({"text": TEXT, "tokens": len(ids), "window": w, "windows": n, "secateur": ours[w],
                     "transformers": ref, "transformers_version": transformers.__version__})
        print(f"window {w:5d} ({n:3d} windows): secateur {ours[w]:.6f}  transformers {ref:.6f}  "
              f"{'equal to 4 significant digits' if same else 'DIFFERENT'}")
    if a.results:
        with open(a.results, "w") as f:
            json.dump(rows, f, indent=2)
            f.write("\n")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
