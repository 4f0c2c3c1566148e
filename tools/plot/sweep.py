"""Plots of a collected sweep (sweep.json of `secateur sweep`): perplexity against parameters and the
zero-shot average against parameters, one line per method, the Pareto front marked.

    .venv/bin/python tools/plot/sweep.py runs/sweep-x      # writes sweep_ppl.png (and sweep_zero_shot.png)
"""
import json, os, sys

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt


def plot(points, value, label, path, log_y, front):
    by_method = {}
    for p in points:
        v = value(p)
        if p["status"] == "done" and "params" in p and v is not None:
            by_method.setdefault(p["method"], []).append((p["params"] / 1e6, v, p.get("pareto", False)))
    if not by_method:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method, xs in sorted(by_method.items()):
        xs.sort()
        ax.plot([x for x, _, _ in xs], [y for _, y, _ in xs], marker="o", label=method)
    if front:
        pts = sorted((x, y) for xs in by_method.values() for x, y, on in xs if on)
        ax.scatter([x for x, _ in pts], [y for _, y in pts], s=160, facecolors="none", edgecolors="black",
                   label="Pareto front", zorder=3)
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel("parameters (M)")
    ax.set_ylabel(label)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def main():
    d = sys.argv[1]
    sweep = json.load(open(os.path.join(d, "sweep.json")))
    points, window = sweep["points"], sweep["pareto_window"]
    written = []
    if window and plot(points, lambda p: p["ppl"].get(window), f"perplexity @{window}",
                       os.path.join(d, "sweep_ppl.png"), True, True):
        written.append("sweep_ppl.png")
    if plot(points, lambda p: 100 * p["zero_shot_avg"] if "zero_shot_avg" in p else None, "zero-shot average (%)",
            os.path.join(d, "sweep_zero_shot.png"), False, False):
        written.append("sweep_zero_shot.png")
    print(f"plots: {', '.join(written) or 'none (no finished point has a perplexity or a zero-shot average)'} in {d}")


if __name__ == "__main__":
    main()
