"""Prefill throughput and peak RSS: Secateur vs transformers, same model, threads, shapes and run.

    .venv/bin/python tools/bench/bench_forward.py --secateur build/secateur \
        --model runs/demo/checkpoint --out tools/bench/results/forward_cpu.json

Each implementation runs in its own process (so peak RSS is its own); the JSON holds both and
the ratio secateur / transformers for tokens/s and peak RSS.
"""
import argparse, json, os, resource, subprocess, sys, time

from results_file import write_json

HF_CHILD = r"""
import json, resource, sys, time, torch, transformers
model_dir, batch, seq, iters, threads, dtype = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
torch.set_num_threads(threads)
m = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype)).eval()
ids = torch.randint(0, m.config.vocab_size, (batch, seq))
with torch.no_grad():
    m(ids)
    t0 = time.perf_counter()
    for _ in range(iters):
        m(ids)
    s = time.perf_counter() - t0
print(json.dumps({"bench": "forward", "impl": "transformers", "version": transformers.__version__,
                  "threads": torch.get_num_threads(), "batch": batch, "seq": seq, "iters": iters, "seconds": s,
                  "tokens_per_second": batch * seq * iters / s,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--secateur", required=True)
    ap.add_argument("--model", required=True, help="an HF directory (e.g. the demo's runs/demo/checkpoint)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--out")
    a = ap.parse_args()
    shape = [str(a.batch), str(a.seq), str(a.iters), str(a.threads)]
    ours = json.loads(subprocess.run(
        [a.secateur, "bench", "forward", "--model", a.model, "--batch", shape[0], "--seq", shape[1],
         "--iters", shape[2], "--threads", shape[3], "--dtype", a.dtype],
        check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
    ref = json.loads(subprocess.run([sys.executable, "-c", HF_CHILD, a.model] + shape + [a.dtype],
                                    check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
    result = {"bench": "forward", "model": a.model, "dtype": a.dtype, "secateur": ours, "transformers": ref,
              "ratio_tokens_per_second": ours["tokens_per_second"] / ref["tokens_per_second"],
              "ratio_peak_rss": ours["peak_rss_mib"] / ref["peak_rss_mib"],
              "machine": {"cpus": os.cpu_count(), "when": time.strftime("%Y-%m-%d")}}
    print(json.dumps(result, indent=2))
    if a.out:
        write_json(a.out, result)


if __name__ == "__main__":
    main()
