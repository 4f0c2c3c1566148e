"""`secateur eval --compare A B [C]`: the last result of each kind in each run, side by side with
each run's ratio to A; a run with an unreadable metrics.jsonl gives one error naming the file and line."""
import json, os, subprocess, sys


def write_run(d, lines):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "metrics.jsonl"), "w") as f:
        for m in lines:
            f.write((m if isinstance(m, str) else json.dumps(m)) + "\n")


def main():
    secateur, tmp = sys.argv[1], sys.argv[2]
    speed = lambda params, tps: {"stage": "eval", "metric": "speed", "params": params, "macs_per_token": params,
                                 "prefill_tokens_per_second": tps, "decode_tokens_per_second": tps / 10}
    a, b, bad = (os.path.join(tmp, n) for n in ("a", "b", "bad"))
    write_run(a, [{"stage": "eval", "metric": "perplexity", "window": 128, "ppl": 50.0}, speed(100e6, 400.0)])
    write_run(b, [{"stage": "eval", "metric": "perplexity", "window": 128, "ppl": 90.0},   # the dense eval of run B
                  {"stage": "prune", "params_after": 80e6},
                  {"stage": "eval", "metric": "perplexity", "window": 128, "ppl": 60.0},
                  {"stage": "eval", "metric": "zero_shot", "task": "piqa", "reported": "acc", "value": 0.6},
                  speed(80e6, 500.0)])
    write_run(bad, [{"stage": "eval", "metric": "perplexity", "window": 128, "ppl": 1.0}, "{not json"])
    out = os.path.join(tmp, "compare.md")
    r = subprocess.run([secateur, "eval", "--compare", a, b, "--out", out], capture_output=True, text=True)
    print(r.stdout)
    rows = {l.split("|")[1].strip(): [c.strip() for c in l.split("|")[2:5]] for l in r.stdout.splitlines()[2:]}
    ok = r.returncode == 0 and open(out).read() == r.stdout
    ok &= rows["perplexity @128"] == ["50", "60", "1.200"]          # the last perplexity of B, not its first
    ok &= rows["prefill tok/s"] == ["400", "500", "1.250"]
    ok &= rows["parameters (M)"] == ["100", "80", "0.800"]
    ok &= rows["piqa (acc)"] == ["–", "60", "–"]
    c = os.path.join(tmp, "c")                                     # a third run: columns C and C / A
    write_run(c, [{"stage": "eval", "metric": "perplexity", "window": 128, "ppl": 75.0}])
    r = subprocess.run([secateur, "eval", "--compare", a, b, c], capture_output=True, text=True)
    print(r.stdout)
    rows = {l.split("|")[1].strip(): [c.strip() for c in l.split("|")[2:7]] for l in r.stdout.splitlines()[2:]}
    ok &= r.returncode == 0 and rows["perplexity @128"] == ["50", "60", "75", "1.200", "1.500"]
    ok &= rows["prefill tok/s"] == ["400", "500", "–", "1.250", "–"]
    r = subprocess.run([secateur, "eval", "--compare", a], capture_output=True, text=True)
    ok &= r.returncode != 0                                        # one run is no comparison
    r = subprocess.run([secateur, "eval", "--compare", a, bad], capture_output=True, text=True)
    print(r.stderr.strip())
    ok &= r.returncode == 1 and "metrics.jsonl:2: invalid JSON" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
