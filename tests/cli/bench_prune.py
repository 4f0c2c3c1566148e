"""`secateur bench prune`: one round of a cheap criterion against its floor gives the JSON the
README's table is built from (no timing is asserted, only what the numbers are made of), leaves no
temporary directory behind, and a criterion it does not know, or a prune that fails, is one error
line and a non-zero exit with no output file."""
import argparse, json, os, shutil, subprocess, sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--secateur", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--tmp", required=True)
    a = ap.parse_args()
    shutil.rmtree(a.tmp, ignore_errors=True)
    scratch = os.path.join(a.tmp, "scratch")
    os.makedirs(scratch)
    env = dict(os.environ, TMPDIR=scratch)
    bench = [a.secateur, "bench", "prune", "--model", a.model, "--rounds", "1", "--threads", "1"]
    out = os.path.join(a.tmp, "bench.json")
    r = subprocess.run(bench + ["--criteria", "l2", "--out", out], capture_output=True, text=True, env=env)
    print(r.stdout, r.stderr)
    ok = r.returncode == 0
    j = json.load(open(out)) if ok else {}
    ok = ok and json.loads(r.stdout.strip().splitlines()[-1]) == j
    if ok:
        floor, l2 = j["floor"], j["criteria"]["l2"]
        ok &= "10 x 64 tokens" in j["what"]                       # the default calibration's size
        ok &= floor["wall"] > 0 and floor["rss"] > 0 and l2["wall_seconds"] > 0 and l2["peak_rss_mib"] > 0
        ok &= abs(l2["wall_vs_floor"] - l2["wall_seconds"] / floor["wall"]) < 1e-12
        ok &= abs(l2["rss_vs_floor"] - l2["peak_rss_mib"] / floor["rss"]) < 1e-12
        ok &= j["runs"]["l2"]["wall"] == [l2["wall_seconds"]] and len(j["runs"]["floor"]["wall"]) == 1
    # Its run directories are gone (the children's MPI keeps its own session directory there).
    leftover = lambda: [f for f in os.listdir(scratch) if f.startswith("secateur-bench-prune")]
    ok &= leftover() == []
    print("left in TMPDIR:", os.listdir(scratch))
    for extra, needle in ((["--criteria", "nope"], "'nope' is not allowed"),
                          (["--criteria", "l2", "--set", "prune.ratio=1.5"], "failed (exit code 1)")):
        bad = os.path.join(a.tmp, "bad.json")
        r = subprocess.run(bench + extra + ["--out", bad], capture_output=True, text=True, env=env)
        print(extra, r.returncode, r.stderr.strip().splitlines()[:1])
        ok &= r.returncode != 0 and r.stderr.startswith("secateur: error: ") and needle in r.stderr
        ok &= not os.path.exists(bad) and leftover() == []
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
