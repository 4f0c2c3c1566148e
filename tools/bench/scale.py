"""Scale benchmark: score, decide, prune and export a model at several TP sizes, then reload the export and
run one perplexity window — wall time per phase, peak RSS per rank and summed, decisions across TP layouts.

    .venv/bin/python tools/bench/scale.py --secateur build/secateur --model llama-2-7b --tp 4 \
        --work runs/scale --out tools/bench/results/scale_llama-2-7b.json
    .venv/bin/python tools/bench/scale.py --table tools/bench/results/scale_*.json    # the README's table

--model: an HF directory, a .gguf file, or a shape of `secateur init --shape` (written under --work with
random weights and SmolLM2's tokenizer, then removed unless --keep). For each TP size and criterion:
`secateur prune` on TP ranks under mpirun (model.dtype --dtype, the export in the same dtype, the
default calibration: 10 x 64 tokens of Emma), each rank under /usr/bin/time; then `secateur eval` of the
pruned export (a fresh process: the checkpoint is read back from disk) at the same TP, one window of 128
tokens. Each row: the prune's phases (metrics.jsonl), peak RSS of every rank (prune and reload), the
summed peak, its ratio to the weights' bytes (parameters x the dtype's bytes), the memory model's
prediction (`secateur memory`, runtime/model/memory.h), the process baseline of
a rank (the peak of `secateur --help`: the libraries' resident pages, in every rank), the decision hash,
and the perplexity of the reloaded export. Rows with the same criterion are compared: removed groups in
common across TP layouts (byte-identical decisions give 100%), and with the float32 row of the same TP size
when --dtype lists both.

--recover lora full lora_kd full_kd: also `secateur recover` of the model for --recover-steps steps of
--micro-batch x --train-seq tokens (KD: the model is its own teacher), peak RSS per rank against the memory
model's recovery prediction.
"""
import argparse, glob, json, os, shutil, subprocess, sys, time

from results_file import write_json

ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMP_NUM_THREADS="1")


def timed_ranks(cmd, tp, rss_dir, log):
    """Runs cmd on tp ranks (mpirun when tp > 1), each under /usr/bin/time; peak RSS (MiB) per rank, wall s."""
    os.makedirs(rss_dir, exist_ok=True)
    wrapped = ["sh", "-c", '/usr/bin/time -f %M -o "$0/rss.${OMPI_COMM_WORLD_RANK:-0}" "$@"', rss_dir] + cmd
    if tp > 1:
        wrapped = ["mpirun", "--oversubscribe", "--bind-to", "none", "-np", str(tp)] + wrapped
    t0 = time.time()
    with open(log, "w") as f:
        rc = subprocess.run(wrapped, stdout=f, stderr=subprocess.STDOUT, env=ENV).returncode
    wall = time.time() - t0
    if rc != 0:
        sys.exit(f"scale: {' '.join(cmd[:2])} failed (exit {rc}); see {log}")
    rss = [int(open(os.path.join(rss_dir, f"rss.{r}")).read().split()[-1]) / 1024 for r in range(tp)]
    return rss, wall


def file_bytes(path):
    files = glob.glob(os.path.join(path, "*.safetensors")) if os.path.isdir(path) else [path]
    return sum(os.path.getsize(f) for f in files)


def predicted(secateur, model, tp, dtype, recompute, ratio, criterion, base_mib, tmp):
    """`secateur memory` for this row: the memory model's peak per rank and summed, MiB."""
    out = os.path.join(tmp, "memory.json")
    subprocess.run([secateur, "memory", "--shape", model, "--tp", str(tp), "--dtype", dtype, "--recompute",
                    recompute, "--ratio", str(ratio), "--criterion", criterion, "--base-mib", str(base_mib), "--out", out],
                   check=True, stdout=subprocess.DEVNULL)
    r = json.load(open(out))["rows"][0]
    return r["peak_bytes"] / 2**20, r["peak_bytes_summed"] / 2**20


def recovery(a, model, tp, dtype, method, base_mib):
    """`secateur recover` of the model (LoRA or full, with KD its own teacher) for a few steps on TP ranks: its
    peak RSS per rank against the memory model's prediction for the method."""
    run_dir = os.path.join(a.work, f"{os.path.basename(a.model)}-{dtype}-tp{tp}-recover-{method}")
    shutil.rmtree(run_dir, ignore_errors=True)
    threads = a.threads or max(1, os.cpu_count() // tp)
    cmd = [a.secateur, "recover", f"model.path={model}", f"run.dir={run_dir}", f"model.dtype={dtype}",
           f"model.device={a.device}", f"parallel.tp={tp}", f"run.threads={threads}", "convert.dtype=auto",
           f"recover.method={method.split('_')[0]}", f"recover.distill={str(method.endswith('_kd')).lower()}",
           f"recover.steps={a.recover_steps}", f"recover.micro_batch={a.micro_batch}", f"recover.batch={a.micro_batch}",
           f"recover.seq_len={a.train_seq}", "recover.save_every=0", "recover.warmup_steps=0"]
    rss, wall = timed_ranks(cmd, tp, os.path.join(run_dir, "rss"), os.path.join(run_dir, "recover.log"))
    out = os.path.join(run_dir, "memory.json")
    subprocess.run([a.secateur, "memory", "--shape", model, "--tp", str(tp), "--dtype", dtype, "--recover", method,
                    "--micro-batch", str(a.micro_batch), "--train-seq", str(a.train_seq), "--base-mib", str(base_mib),
                    "--out", out], check=True, stdout=subprocess.DEVNULL)
    pred = json.load(open(out))["recover_rows"][0]
    row = {"model": os.path.basename(a.model), "tp": tp, "dtype": dtype, "device": a.device, "method": method,
           "micro_batch": a.micro_batch, "seq": a.train_seq, "steps": a.recover_steps, "wall_seconds": wall,
           "peak_rss_mib_per_rank": rss, "peak_rss_mib_sum": sum(rss),
           "predicted_peak_mib_sum": pred["peak_bytes_summed"] / 2**20,
           "predicted_over_measured": pred["peak_bytes_summed"] / 2**20 / sum(rss)}
    print(f"{row['model']} {dtype} tp {tp} recover {method}: {wall:.0f} s, peak {sum(rss):.0f} MiB summed "
          f"(predicted {row['predicted_peak_mib_sum']:.0f})", flush=True)
    if not a.keep:
        shutil.rmtree(run_dir, ignore_errors=True)
    return row


def removed_groups(run_dir):
    """The decision's removed units as (layer, kind, index), and its hash."""
    d = json.load(open(os.path.join(run_dir, "decision.json")))
    units = {("hidden", -1, i) for i in d.get("removed_hidden_channels") or []}
    for layer in d["layers"]:
        for key, value in layer.items():
            if key.startswith("removed_"):
                units |= {(key, layer["layer"], i) for i in (value if isinstance(value, list) else [value])}
    return units, d["hash"]


def table(paths):
    """The README's tables from results files: the prune rows, then the recovery rows."""
    results = [json.load(open(p)) for p in paths]
    short = {"bfloat16": "bf16", "float32": "fp32"}
    rows = [r for res in results for r in res["rows"]]
    if rows:
        print("| model | dtype | TP | criterion | params | prune s (calibrate) | peak MiB per rank | summed | x weights "
              "(without baseline) | predicted | reload s | ppl@128 | removed in common with TP 1 | with fp32 |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        common = next((v for k, v in r.items() if k.startswith("removed_in_common_with_tp")), 1.0)
        fp32 = r.get("removed_in_common_with_float32")
        fp32 = f"{100 * fp32:.2f}%" if fp32 is not None else ""
        print(f"| {r['model']} | {short.get(r['dtype'], r['dtype'])} | {r['tp']} | {r['criterion']} | "
              f"{r['params_before'] / 1e9:.2f}B | "
              f"{r['prune_wall_seconds']:.0f} ({r['phases_seconds'].get('calibrate', 0):.0f}) | "
              f"{', '.join(f'{x:.0f}' for x in r['prune_peak_rss_mib_per_rank'])} | {r['prune_peak_rss_mib_sum']:.0f} | "
              f"{r['prune_peak_over_weights']:.2f} ({r['prune_peak_over_weights_without_baseline']:.2f}) | "
              f"{r['predicted_peak_mib_sum']:.0f} ({100 * (r['predicted_over_measured'] - 1):+.1f}%) | "
              f"{r['reload_wall_seconds']:.0f} | {r['reload_ppl_128']:.1f} | {100 * common:.2f}% | {fp32} |")
    recover = [r for res in results for r in res.get("recover_rows", [])]
    if recover:
        print(("\n" if rows else "") + "| model | dtype | TP | recovery | micro-batch x seq | s (steps) | "
              "peak MiB per rank | summed | predicted |")
        print("|---|---|---|---|---|---|---|---|---|")
    for r in recover:
        print(f"| {r['model']} | {short.get(r['dtype'], r['dtype'])} | {r['tp']} | {r['method']} | "
              f"{r['micro_batch']} x {r['seq']} | {r['wall_seconds']:.0f} ({r['steps']}) | "
              f"{', '.join(f'{x:.0f}' for x in r['peak_rss_mib_per_rank'])} | {r['peak_rss_mib_sum']:.0f} | "
              f"{r['predicted_peak_mib_sum']:.0f} ({100 * (r['predicted_over_measured'] - 1):+.1f}%) |")


def main():
    if len(sys.argv) > 2 and sys.argv[1] == "--table":
        return table(sys.argv[2:])
    ap = argparse.ArgumentParser()
    ap.add_argument("--secateur", required=True)
    ap.add_argument("--model", required=True, help="HF directory, .gguf, or a shape name of secateur init")
    ap.add_argument("--tp", type=int, nargs="+", default=[1])
    ap.add_argument("--dtype", nargs="+", default=["bfloat16"], help="several: each row's decision is also "
                    "compared with the float32 row of its TP size and criterion")
    ap.add_argument("--device", default="cpu", help="model.device (cpu | cuda); peak RSS is the host's either way")
    ap.add_argument("--ratio", type=float, default=0.2)
    ap.add_argument("--recompute", choices=["true", "false"], default="true", help="calibration.recompute")
    ap.add_argument("--threads", type=int, default=0, help="intra-op threads per rank (0: cores / tp, at least 1)")
    ap.add_argument("--tokenizer", default="build/test-data/smollm2-hf", help="for a shape: whose tokenizer goes in")
    ap.add_argument("--work", default="runs/scale")
    ap.add_argument("--keep", action="store_true", help="keep the initialised model and the exports")
    ap.add_argument("--recover", nargs="*", default=[], choices=["lora", "full", "lora_kd", "full_kd"],
                    help="also time recovery of the model with these methods (at each TP, the first dtype)")
    ap.add_argument("--recover-steps", type=int, default=2)
    ap.add_argument("--micro-batch", type=int, default=4, help="recover.micro_batch (= recover.batch)")
    ap.add_argument("--train-seq", type=int, default=128, help="recover.seq_len")
    ap.add_argument("--criteria", nargs="*", default=["taylor_element1", "activation"])
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    os.makedirs(a.work, exist_ok=True)
    model, made = a.model, False
    if not os.path.exists(model):
        model, made = os.path.join(a.work, a.model), True
        t0 = time.time()
        subprocess.run([a.secateur, "init", "--shape", a.model, "--out", model, "--dtype", a.dtype[0], "--tokenizer",
                        a.tokenizer, "--shards", "4"], check=True, stdout=subprocess.DEVNULL)
        print(f"{a.model}: random weights written in {time.time() - t0:.0f} s", flush=True)
    base, _ = timed_ranks([a.secateur, "--help"], 1, os.path.join(a.work, "rss-help"), os.devnull)
    rows = []
    for dtype, tp, crit in ((d, t, c) for d in a.dtype for t in a.tp for c in a.criteria):
        threads = a.threads or max(1, os.cpu_count() // tp)
        run_dir = os.path.join(a.work, f"{os.path.basename(a.model)}-{dtype}-tp{tp}-{crit}")
        shutil.rmtree(run_dir, ignore_errors=True)
        common = [f"model.dtype={dtype}", f"model.device={a.device}", f"parallel.tp={tp}", f"run.threads={threads}", "convert.dtype=auto",
                  f"calibration.recompute={a.recompute}"]
        rss, wall = timed_ranks([a.secateur, "prune", f"model.path={model}", f"run.dir={run_dir}",
                                 f"prune.criterion={crit}", f"prune.ratio={a.ratio}"] + common, tp,
                                os.path.join(run_dir, "rss-prune"), os.path.join(run_dir, "prune.log"))
        metrics = [json.loads(l) for l in open(os.path.join(run_dir, "metrics.jsonl"))]
        prune = next(m for m in metrics if m["stage"] == "prune")
        timing = next(m for m in metrics if m["stage"] == "timing" and m["of"] == "prune")
        pruned = prune["out"]
        eval_dir = run_dir + "-reload"
        shutil.rmtree(eval_dir, ignore_errors=True)
        rss_eval, wall_eval = timed_ranks([a.secateur, "eval", f"model.path={pruned}", f"run.dir={eval_dir}",
                                           "eval.windows=[128]", "eval.max_tokens=129", "eval.batch=1",
                                           "eval.speed=false"] + common, tp,
                                          os.path.join(eval_dir, "rss"), os.path.join(eval_dir, "eval.log"))
        ev = next(m for m in (json.loads(l) for l in open(os.path.join(eval_dir, "metrics.jsonl")))
                  if m["stage"] == "eval")
        groups, h = removed_groups(run_dir)
        wbytes = prune["params_before"] * {"float32": 4, "bfloat16": 2, "float16": 2}[dtype]   # in the compute dtype (a GGUF file is smaller)
        pred_rank, pred_sum = predicted(a.secateur, model, tp, dtype, a.recompute, a.ratio, crit, base[0], run_dir)
        row = {"model": os.path.basename(a.model), "tp": tp, "criterion": crit, "dtype": dtype, "device": a.device,
               "recompute": a.recompute == "true",
               "threads_per_rank": threads, "params_before": prune["params_before"],
               "params_after": prune["params_after"], "weights_bytes": wbytes,
               "prune_wall_seconds": wall, "phases_seconds": timing["phases"],
               "prune_peak_rss_mib_per_rank": rss, "prune_peak_rss_mib_sum": sum(rss),
               "prune_peak_over_weights": sum(rss) * 2**20 / wbytes,
               "baseline_rss_mib_per_rank": base[0],
               "prune_peak_over_weights_without_baseline": (sum(rss) - tp * base[0]) * 2**20 / wbytes,
               "predicted_peak_mib_per_rank": pred_rank, "predicted_peak_mib_sum": pred_sum,
               "predicted_over_measured": pred_sum / sum(rss),
               "export_bytes": file_bytes(pruned), "reload_wall_seconds": wall_eval,
               "reload_peak_rss_mib_per_rank": rss_eval, "reload_ppl_128": ev["ppl"],
               "decision_hash": h, "removed_groups": len(groups)}
        rows.append((row, groups))
        print(f"{row['model']} {dtype} tp {tp} {crit}: prune {wall:.0f} s (calibrate {timing['phases'].get('calibrate', 0):.0f} s), "
              f"peak {sum(rss):.0f} MiB summed ({row['prune_peak_over_weights']:.2f}x the weights, "
              f"{row['prune_peak_over_weights_without_baseline']:.2f}x without the {base[0]:.0f} MiB baseline "
              f"per rank; predicted {pred_sum:.0f}), reload {wall_eval:.0f} s, ppl@128 {ev['ppl']:.1f}, decision {h}",
              flush=True)
        if not a.keep:
            shutil.rmtree(pruned, ignore_errors=True)
    def overlap(groups, other):
        return len(groups & other) / max(1, len(other))
    for row, groups in rows:   # overlap with the first TP layout's decision of the same criterion and dtype
        first_row, first = next((r, g) for r, g in rows if (r["criterion"], r["dtype"]) == (row["criterion"], row["dtype"]))
        row["removed_in_common_with_tp%d" % first_row["tp"]] = overlap(groups, first)
        fp32 = next((g for r, g in rows if (r["criterion"], r["tp"], r["dtype"]) ==
                     (row["criterion"], row["tp"], "float32")), None)
        if fp32 is not None and row["dtype"] != "float32":
            row["removed_in_common_with_float32"] = overlap(groups, fp32)
    recover_rows = [recovery(a, model, tp, a.dtype[0], m, base[0]) for tp in a.tp for m in a.recover]
    write_json(a.out, {"bench": "scale", "model": os.path.basename(a.model), "rows": [r for r, _ in rows],
                       "recover_rows": recover_rows})
    if made and not a.keep:
        shutil.rmtree(model, ignore_errors=True)


if __name__ == "__main__":
    main()
