"""`secateur bench forward --decode`: the JSON's numbers are made of what they say (no timing is
asserted): throughputs from their medians, the weight bytes of a bfloat16 model with a tied head,
the decode limit from the measured bandwidth, the prefill flops from an independent count over
config.json; and --decode with --backward is one error line, a non-zero exit and no output file."""
import argparse, json, os, shutil, subprocess, sys


def close(a, b):
    return abs(a - b) <= 1e-9 * max(abs(a), abs(b))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--secateur", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--tmp", required=True)
    a = ap.parse_args()
    shutil.rmtree(a.tmp, ignore_errors=True)
    os.makedirs(a.tmp)
    batch, seq, decode = 2, 16, 4
    bench = [a.secateur, "bench", "forward", "--model", a.model, "--batch", str(batch), "--seq", str(seq),
             "--iters", "1", "--threads", "1", "--dtype", "bfloat16"]
    out = os.path.join(a.tmp, "forward.json")
    r = subprocess.run(bench + ["--decode", str(decode), "--out", out], capture_output=True, text=True)
    print(r.stdout, r.stderr)
    ok = r.returncode == 0
    j = json.load(open(out)) if ok else {}
    if ok:
        c = json.load(open(os.path.join(a.model, "config.json")))
        d, L, V, D = c["hidden_size"], c["num_hidden_layers"], c["vocab_size"], c["hidden_size"] // c["num_attention_heads"]
        H, KV, F = c["num_attention_heads"], c["num_key_value_heads"], c["intermediate_size"]
        macs = V * d + L * (2 * d * H * D + 2 * d * KV * D + 3 * d * F + 2 * H * D * (seq + 1) / 2)
        ok &= c["tie_word_embeddings"] and close(j["prefill_flops_per_token"], 2 * macs)
        ok &= close(j["tokens_per_second"], batch * seq / j["seconds"])
        ok &= j["decode_steps"] == decode and close(j["decode_steps_per_second"], decode / j["decode_seconds"])
        ok &= j["weight_bytes"] == 2 * j["params"]                 # bfloat16, the tied head counted once
        ok &= close(j["decode_limit_steps_per_second"], j["memory_read_gbps"] * 1e9 / j["weight_bytes"])
        ok &= close(j["prefill_limit_tokens_per_second"], j["linear_gflops"] * 1e9 / j["prefill_flops_per_token"])
        ok &= j["peak_rss_mib"] > 0 and j["memory_read_gbps"] > 0 and j["linear_gflops"] > 0
    bad = os.path.join(a.tmp, "bad.json")
    r = subprocess.run(bench + ["--decode", "2", "--backward", "--out", bad], capture_output=True, text=True)
    print(r.returncode, r.stderr.strip().splitlines()[:1])
    ok &= r.returncode != 0 and r.stderr.startswith("secateur: error: ") and "--decode" in r.stderr
    ok &= len(r.stderr.strip().splitlines()) == 1 and not os.path.exists(bad)
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
