"""A random LLaMA (transformers' init, seed 0) with SmolLM2's tokenizer files, written as an HF directory:
the small models of the CLI tests that run Secateur end to end."""
import os, shutil

import torch
import transformers


def make_random_llama(tokenizer_dir, out, **config):
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(transformers.LlamaConfig(vocab_size=49152, **config)).save_pretrained(out)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(tokenizer_dir, f), out)
