"""Prefill and decode speed and peak RSS: Secateur vs transformers, same model, threads, shapes, run.

    .venv/bin/python tools/bench/bench_forward.py --secateur build/secateur \
        --model runs/demo/checkpoint --batch 1 4 --dtype float32 bfloat16 --decode 32 \
        --out tools/bench/results/forward_cpu.json

For every (dtype, batch) each implementation runs in its own process (so peak RSS is its own),
the two alternating over --rounds; the JSON keeps every run and, per point, the medians and the
ratios secateur / transformers of prefill tokens/s, decode steps/s and peak RSS. Prefill is one
forward over batch × seq tokens with full logits; decode is --decode greedy steps of one token per
sequence after a prefill of seq tokens, with a KV cache. Secateur's child also measures the two
limits of this machine: its memory read bandwidth, and from it the decode limit (steps/s if every
step only had to read each weight once); and the rate of the model's own MLP product in its dtype,
and from it the prefill limit (tokens/s if every product of the forward ran at that rate), with
each implementation's prefill as a share of it.
"""
import argparse, json, os, statistics, subprocess, sys, time

from results_file import write_json

HF_CHILD = r"""
import json, resource, sys, time, torch, transformers
model_dir, batch, seq, iters, threads, dtype, decode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6], int(sys.argv[7])
torch.set_num_threads(threads)
m = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype)).eval()
g = torch.Generator().manual_seed(0)
ids = torch.randint(0, m.config.vocab_size, (batch, seq), generator=g)
out = {"bench": "forward", "impl": "transformers", "version": transformers.__version__, "dtype": dtype,
       "threads": torch.get_num_threads(), "batch": batch, "seq": seq, "iters": iters}
with torch.no_grad():
    m(ids)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter(); m(ids); times.append(time.perf_counter() - t0)
    p = sorted(times)[len(times) // 2]
    out.update(prefill_seconds=p, tokens_per_second=batch * seq / p)
    if decode > 0:
        times = []
        for _ in range(iters + 1):
            r = m(ids, use_cache=True)
            past, nxt = r.past_key_values, r.logits[:, -1:].argmax(-1)
            t0 = time.perf_counter()
            for _ in range(decode):
                r = m(nxt, past_key_values=past, use_cache=True)
                past, nxt = r.past_key_values, r.logits[:, -1:].argmax(-1)
            times.append(time.perf_counter() - t0)
        d = sorted(times[1:])[len(times[1:]) // 2]
        out.update(decode_steps=decode, decode_seconds=d, decode_steps_per_second=decode / d)
out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""


def run_child(cmd):
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])


def median_of(runs, key):
    return statistics.median(r[key] for r in runs) if runs and key in runs[0] else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--secateur", required=True)
    ap.add_argument("--model", required=True, help="an HF directory (e.g. the demo's runs/demo/checkpoint)")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--iters", type=int, default=3, help="timed passes per process (the median is kept)")
    ap.add_argument("--decode", type=int, default=32, help="greedy decode steps (0: prefill only)")
    ap.add_argument("--rounds", type=int, default=2, help="processes per implementation and point, alternating")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--dtype", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"])
    ap.add_argument("--out")
    a = ap.parse_args()
    points = []
    for dtype in a.dtype:
        for batch in a.batch:
            shape = [str(batch), str(a.seq), str(a.iters), str(a.threads)]
            ours, ref = [], []
            for _ in range(a.rounds):
                ours.append(run_child([a.secateur, "bench", "forward", "--model", a.model, "--batch", shape[0],
                                       "--seq", shape[1], "--iters", shape[2], "--threads", shape[3],
                                       "--dtype", dtype, "--decode", str(a.decode)]))
                ref.append(run_child([sys.executable, "-c", HF_CHILD, a.model] + shape + [dtype, str(a.decode)]))
            point = {"dtype": dtype, "batch": batch, "seq": a.seq, "decode_steps": a.decode, "secateur": ours,
                     "transformers": ref}
            for key in ("tokens_per_second", "decode_steps_per_second", "peak_rss_mib"):
                s, t = median_of(ours, key), median_of(ref, key)
                if s is not None and t is not None:
                    point[key] = {"secateur": s, "transformers": t, "ratio": s / t}
            # The compute bound: every product at the rate of the model's own MLP product on this
            # machine; each implementation's prefill as a share of it.
            limit = median_of(ours, "prefill_limit_tokens_per_second")
            if limit is not None:
                point["linear_gflops"] = median_of(ours, "linear_gflops")
                point["prefill_limit_tokens_per_second"] = limit
                point["prefill_share_of_limit"] = {
                    name: median_of(runs, "tokens_per_second") / limit for name, runs in
                    (("secateur", ours), ("transformers", ref))}
            limit = median_of(ours, "decode_limit_steps_per_second")
            if limit is not None:
                point["decode_limit_steps_per_second"] = limit
                point["memory_read_gbps"] = median_of(ours, "memory_read_gbps")
            points.append(point)
            print(json.dumps({k: v for k, v in point.items() if k not in ("secateur", "transformers")}), flush=True)
    result = {"bench": "forward", "model": a.model, "threads": a.threads, "points": points,
              "machine": {"cpus": os.cpu_count(), "when": time.strftime("%Y-%m-%d")}}
    if a.out:
        write_json(a.out, result)


if __name__ == "__main__":
    main()
