"""Loads the model a Secateur run exported in stock transformers, as a user would, and checks it
against the run: the greedy continuation of the run's generate prompt must be the one Secateur
generated. Prints one line; exits 1 when the model does not load or the continuation differs.

usage: .venv/bin/python tools/hf_check.py RUN_DIR   (tools/demo.sh runs it after the demo)
"""
import json, os, sys

import torch
import transformers

EXPORTS = ("prune", "gum", "sparse", "recover")   # the stages whose "out" is the model that runs next


def load_export(model_dir, dtype=torch.float32):
    """An export as a user loads it: with trust_remote_code only when it names its own classes in
    auto_map (widths that differ per layer). Returns (model, tokenizer, custom)."""
    custom = "auto_map" in json.load(open(os.path.join(model_dir, "config.json")))
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, trust_remote_code=custom).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir, trust_remote_code=custom)
    return model, tokenizer, custom


def main():
    transformers.utils.logging.disable_progress_bar()
    run_dir = sys.argv[1]
    report = os.path.join(run_dir, "report.json")
    if not os.path.exists(report):
        print(f"transformers check: SKIPPED: no {report}")
        return 0
    out, generated = None, None
    for m in json.load(open(report))["metrics"]:
        if m.get("stage") in EXPORTS and "out" in m:
            out, generated = m["out"], None
        elif m.get("stage") == "generate" and out is not None:
            generated = m
    if generated is None:
        print(f"transformers check: SKIPPED: {report} has no exported model that generated text after")
        return 0
    model, tokenizer, custom = load_export(out)
    ids = tokenizer(generated["prompt"], return_tensors="pt")
    with torch.no_grad():
        new = model.generate(**ids, max_new_tokens=generated["new_tokens"], do_sample=False)[0, ids["input_ids"].shape[1]:]
    text = tokenizer.decode(new, skip_special_tokens=True)
    same = text == generated["completion"]
    flag = ", trust_remote_code=True" if custom else ""
    print(f"transformers check: from_pretrained({out}{flag}) -> {type(model).__name__}; its greedy continuation "
          f"of the prompt ({len(new)} tokens) {'equals' if same else 'DIFFERS from'} Secateur's")
    if not same:
        print(f"  transformers: {text!r}\n  secateur:     {generated['completion']!r}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
