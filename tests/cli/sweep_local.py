"""`secateur sweep` run here (SmolLM2-135M, 4 points: 2 criteria x 2 ratios, ppl@128 on 1024 tokens):
  * one shared score run for the criterion that calibrates (Taylor), none for l1; every point DONE,
    sweep.csv / sweep.json / sweep.md with a row per point, a Pareto front, the plot written;
  * killed (SIGKILL to the whole process group) after the first points finished, the sweep run again
    finishes only the missing points and skips the finished ones;
  * a point that fails (a ratio that would empty a layer) is recorded FAILED with its error line, the
    others still run, and the sweep exits non-zero;
  * bad input — a key not in the schema, an empty grid axis, an unknown sweep key — one line naming
    it, before any work (no sweep directory).
"""
import argparse, json, os, shutil, signal, subprocess, sys, time


def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--secateur", required=True)
    ap.add_argument("--model", required=True, help="the converted SmolLM2 HF directory")
    ap.add_argument("--tmp", required=True)
    a = ap.parse_args()
    shutil.rmtree(a.tmp, ignore_errors=True)
    os.makedirs(a.tmp)
    ok = True

    def check(cond, what):
        nonlocal ok
        print(("ok   " if cond else "FAIL ") + what)
        ok &= bool(cond)

    base = f"""set:
  model.path: {a.model}
  run.stages: [prune, eval]
  eval.windows: [128]
  eval.max_tokens: 1024
  eval.speed: false
"""
    sweep_dir = os.path.join(a.tmp, "sweep")
    sweep = write(os.path.join(a.tmp, "sweep.yaml"), f"dir: {sweep_dir}\n" + base + """grid:
  prune.criterion: [taylor_element1, l1]
  prune.ratio: [0.1, 0.2]
""")
    # 1. Killed once two points are done, then run again.
    p = subprocess.Popen([a.secateur, "sweep", sweep], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         start_new_session=True)
    deadline = time.time() + 300
    done = lambda: [d for d in os.listdir(sweep_dir) if os.path.exists(os.path.join(sweep_dir, d, "DONE"))] \
        if os.path.isdir(sweep_dir) else []
    while len(done()) < 2 and p.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    first = sorted(done())
    check(len(first) >= 1 and len(first) < 4, f"killed after {len(first)} of 4 points")
    r = subprocess.run([a.secateur, "sweep", sweep], capture_output=True, text=True)
    log = r.stdout + r.stderr
    ran = [l for l in log.splitlines() if "[sweep] point" in l and "done in" in l]
    check(r.returncode == 0, f"the second run exits 0 ({r.returncode})")
    check(len(ran) == 4 - len(first), f"it ran only the missing points ({len(ran)} ran, {len(first)} were done)")
    check(f"{len(first)} of 4 points done already" in log, "and says how many it skipped")
    check(os.listdir(os.path.join(sweep_dir, "_scores")) and "1 shared score runs" in log,
          "one shared score run (Taylor; l1 needs none)")
    rows = json.load(open(os.path.join(sweep_dir, "sweep.json")))["points"]
    check(len(rows) == 4 and all(x["status"] == "done" and "128" in x["ppl"] for x in rows), "4 rows, all done, ppl@128")
    check(sum(x.get("scores_reused", False) for x in rows) == 2, "the Taylor points reused the shared statistics")
    check(any(x.get("pareto") for x in rows), "a Pareto front is marked")
    check(len(open(os.path.join(sweep_dir, "sweep.csv")).read().splitlines()) == 5, "sweep.csv: a header and 4 rows")
    check(os.path.exists(os.path.join(sweep_dir, "sweep_ppl.png")), "the plot is written")
    # 2. A point that fails.
    bad_dir = os.path.join(a.tmp, "failing")
    failing = write(os.path.join(a.tmp, "failing.yaml"), f"dir: {bad_dir}\n" + base + """points:
  - {name: fine, prune.criterion: l1, prune.ratio: 0.1}
  - {name: impossible, prune.criterion: l1, prune.ratio: 0.95}
""")
    r = subprocess.run([a.secateur, "sweep", failing], capture_output=True, text=True)
    failed = json.load(open(os.path.join(bad_dir, "impossible", "FAILED"))) \
        if os.path.exists(os.path.join(bad_dir, "impossible", "FAILED")) else {}
    check(r.returncode != 0 and "would empty a layer" in failed.get("error", "")
          and os.path.exists(os.path.join(bad_dir, "fine", "DONE")),
          f"a failing point is recorded ({failed.get('error', '')[-80:]}), the other done, exit {r.returncode}")
    # 3. Bad input, refused before any work.
    cases = (("unknown key", "grid:\n  prune.ratios: [0.1]\n", "point ratios=0.1: [config] override prune.ratios: unknown key"),
             ("empty axis", "grid:\n  prune.ratio: []\n", "grid.prune.ratio is empty"),
             ("unknown sweep key", "grdi:\n  prune.ratio: [0.1]\n", "unknown key 'grdi'"))
    for what, text, want in cases:
        d = os.path.join(a.tmp, "bad-" + what.replace(" ", "-"))
        f = write(d + ".yaml", f"dir: {d}\n" + base + text)
        r = subprocess.run([a.secateur, "sweep", f], capture_output=True, text=True)
        errors = [l for l in r.stderr.splitlines() if "error" in l.lower()]
        check(r.returncode != 0 and len(errors) == 1 and want in errors[0] and not os.path.exists(d),
              f"{what}: {errors[0] if errors else r.stderr[-200:]}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
