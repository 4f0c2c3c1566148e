"""Random models (transformers' init, seed 0) with SmolLM2's tokenizer files, written as HF directories:
the small models of the CLI tests that run Secateur end to end."""
import os, shutil

import torch
import transformers


def save_with_tokenizer(model, tokenizer_dir, out):
    model.save_pretrained(out)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(tokenizer_dir, f), out)


def make_random_llama(tokenizer_dir, out, **config):
    torch.manual_seed(0)
    save_with_tokenizer(transformers.LlamaForCausalLM(transformers.LlamaConfig(vocab_size=49152, **config)),
                        tokenizer_dir, out)


def make_random_gpt2(tokenizer_dir, out, **config):
    torch.manual_seed(0)
    save_with_tokenizer(transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=49152, **config)),
                        tokenizer_dir, out)
