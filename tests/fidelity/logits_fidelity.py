"""Secateur's fp32 logits vs PyPI transformers on the same weights and token ids.

Checks, each with max|delta| / max|ref| <= 1e-4:
  * the converted SmolLM2-135M-Instruct checkpoint (LLaMA, GQA, tied embeddings) on several texts;
  * Qwen2.5-Coder-0.5B-Instruct read from its GGUF file by Secateur and by transformers' own GGUF
    loader (qwen2: q/k/v biases, GQA 7:1, untied Q8_0 head, rope theta 1e6) on the same texts, and
    Secateur's HF export of it, which stock transformers must load as Qwen2ForCausalLM;
  * random tiny models that cover what SmolLM2 does not: GPT-2 (LayerNorm, tanh-GELU, learned
    positions, biases), LLaMA with untied embeddings, attention and MLP biases, GQA 4:2, and Qwen2;
  * decoding with the KV cache reproduces the full forward pass.
"""
import argparse, json, os, subprocess, sys

import torch
from safetensors.torch import load_file
import transformers

TOL = 1e-4
TEXTS = [
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in want of a wife.",
    "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n\nprint(fib(30))  # 832040",
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "Numbers 1234567890, prices $3.50 and 12%, dates 2026-11-23; unicode: café, naïve, Zürich, 東京.",
]


def compare(name, dump, model_dir, ids_lists, tmp, ref_model):
    os.makedirs(tmp, exist_ok=True)
    ids_path, out_path = os.path.join(tmp, f"{name}.ids.json"), os.path.join(tmp, f"{name}.logits.safetensors")
    with open(ids_path, "w") as f:
        json.dump(ids_lists, f)
    subprocess.run([dump, model_dir, "float32", ids_path, out_path], check=True)
    ours = load_file(out_path)
    worst = 0.0
    for i, ids in enumerate(ids_lists):
        with torch.no_grad():
            ref = ref_model(torch.tensor([ids])).logits[0].float()
        for key in (f"logits.{i}", f"cache.{i}"):
            got = ours[key]
            assert got.shape == ref.shape, f"{name} {key}: shape {tuple(got.shape)} vs {tuple(ref.shape)}"
            rel = ((got - ref).abs().max() / ref.abs().max()).item()
            worst = max(worst, rel)
            print(f"{name:>12} text {i} {key:>9}: T={len(ids):4d} max|d|/max|ref| = {rel:.2e}")
    ok = worst <= TOL
    print(f"{name:>12}: worst {worst:.2e} (tolerance {TOL:.0e}) {'OK' if ok else 'FAIL'}")
    return ok


def tiny_models(tmp):
    torch.manual_seed(0)
    gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=320, n_positions=64, n_embd=64, n_layer=3, n_head=4, n_inner=96))
    llama = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=300, hidden_size=64, intermediate_size=80, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, max_position_embeddings=128, rope_theta=50000.0, rms_norm_eps=1e-6,
        tie_word_embeddings=False, attention_bias=True, mlp_bias=True))
    qwen2 = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(
        vocab_size=310, hidden_size=64, intermediate_size=72, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128, rope_theta=1e6, rms_norm_eps=1e-6,
        tie_word_embeddings=False))
    out = {}
    for name, m in (("tiny-gpt2", gpt2), ("tiny-llama", llama), ("tiny-qwen2", qwen2)):
        with torch.no_grad():   # random init leaves small biases at zero: make them matter
            for n, p in m.named_parameters():
                if n.endswith("bias"):
                    p.normal_(0, 0.02)
        d = os.path.join(tmp, name)
        m.save_pretrained(d, safe_serialization=True)
        out[name] = (d, m.eval())
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dump", required=True)
    ap.add_argument("--model", required=True, help="the converted SmolLM2 HF directory")
    ap.add_argument("--qwen-gguf", help="Qwen2.5-Coder-0.5B-Instruct GGUF; checked when the file exists")
    ap.add_argument("--qwen-hf", help="secateur convert's HF directory of that GGUF")
    ap.add_argument("--tmp", required=True)
    a = ap.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    ok = True
    tok = transformers.AutoTokenizer.from_pretrained(a.model)
    ref = transformers.AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32).eval()
    ok &= compare("smollm2", a.dump, a.model, [tok(t)["input_ids"] for t in TEXTS], a.tmp, ref)
    if a.qwen_gguf and os.path.exists(a.qwen_gguf):
        d, f = os.path.split(a.qwen_gguf)
        qtok = transformers.AutoTokenizer.from_pretrained(d, gguf_file=f)
        qref = transformers.AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32).eval()
        qids = [qtok(t)["input_ids"] for t in TEXTS]
        ok &= compare("qwen2.5-0.5b", a.dump, a.qwen_gguf, qids, a.tmp, qref)
        del qref
        if a.qwen_hf:   # Secateur's HF export of it: stock transformers loads it as Qwen2ForCausalLM
            href = transformers.AutoModelForCausalLM.from_pretrained(a.qwen_hf, dtype=torch.float32).eval()
            kind = type(href).__name__
            print(f"qwen2.5-0.5b-hf: transformers loads the export as {kind}")
            ok &= kind == "Qwen2ForCausalLM"
            ok &= compare("qwen2.5-0.5b-hf", a.dump, a.qwen_hf, qids, a.tmp, href)
            del href
    else:
        print(f"qwen2.5-0.5b: SKIPPED: {a.qwen_gguf} missing (tools/setup.sh fetches it)")
    g = torch.Generator().manual_seed(1)
    for name, (d, m) in tiny_models(a.tmp).items():
        ids = [torch.randint(0, m.config.vocab_size, (n,), generator=g).tolist() for n in (1, 7, 40)]
        ok &= compare(name, a.dump, d, ids, a.tmp, m)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
