"""The whole `secateur prune` process per criterion against its floor, in one run: the floor process
loads the same model and runs one forward+backward over the same number of tokens (10 x 64, the
demo's calibration). Wall time and peak RSS of whole processes (`/usr/bin/time`), the median of
--rounds alternating rounds, ratios against the floor of the same round.

The floor is `secateur bench forward --backward --batch 10 --seq 64 --iters 1`, which runs a warm-up
step and one timed step: its process minus the timed step is load + one forward+backward.

    .venv/bin/python tools/bench/prune_floor.py --secateur build/secateur \
        --out tools/bench/results/prune_floor_smollm2.json
"""
import argparse, json, os, shutil, statistics, subprocess, tempfile

from results_file import write_json

CRITERIA = ["taylor_element1", "taylor_vector", "taylor_element2", "taylor_mixed", "activation", "l2"]


def timed(cmd):
    """(wall seconds, peak RSS MiB, stdout) of one process."""
    r = subprocess.run(["/usr/bin/time", "-f", "TIME %e %M"] + cmd, capture_output=True, text=True, check=True)
    wall, rss = next(l for l in r.stderr.splitlines() if l.startswith("TIME ")).split()[1:]
    return float(wall), int(rss) / 1024.0, r.stdout


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--secateur", required=True)
    ap.add_argument("--model", default="data/models/SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="secateur-prune-floor-")
    runs = {c: {"wall": [], "rss": []} for c in CRITERIA + ["floor"]}
    for _ in range(a.rounds):
        wall, rss, out = timed([a.secateur, "bench", "forward", "--backward", "--model", a.model, "--batch", "10",
                                "--seq", "64", "--iters", "1", "--threads", str(a.threads)])
        step = json.loads(out.strip().splitlines()[-1])["seconds"]
        runs["floor"]["wall"].append(wall - step)         # load + one forward+backward
        runs["floor"]["rss"].append(rss)
        for c in CRITERIA:
            d = os.path.join(tmp, c)
            shutil.rmtree(d, ignore_errors=True)
            wall, rss, _ = timed([a.secateur, "prune", f"model.path={a.model}", f"run.dir={d}",
                                  f"prune.criterion={c}", f"run.threads={a.threads}"])
            runs[c]["wall"].append(wall)
            runs[c]["rss"].append(rss)
    shutil.rmtree(tmp, ignore_errors=True)
    med = {c: {k: statistics.median(v) for k, v in r.items()} for c, r in runs.items()}
    floor = med["floor"]
    result = {
        "what": "whole `secateur prune` processes (calibration 10 x 64 tokens, per_layer 20%) against the floor "
                "process (load + one forward+backward over 10 x 64 tokens), medians of alternating rounds",
        "model": a.model, "threads": a.threads, "rounds": a.rounds,
        "floor": floor,
        "criteria": {c: {"wall_seconds": med[c]["wall"], "peak_rss_mib": med[c]["rss"],
                         "wall_vs_floor": med[c]["wall"] / floor["wall"], "rss_vs_floor": med[c]["rss"] / floor["rss"]}
                     for c in CRITERIA},
        "runs": runs,
    }
    write_json(a.out, result)
    print(f"floor (load + one forward+backward): {floor['wall']:.2f} s, {floor['rss']:.0f} MiB")
    for c in CRITERIA:
        r = result["criteria"][c]
        print(f"{c:16s} {r['wall_seconds']:6.2f} s  x{r['wall_vs_floor']:.2f}   {r['peak_rss_mib']:6.0f} MiB  "
              f"x{r['rss_vs_floor']:.2f}")


if __name__ == "__main__":
    main()
