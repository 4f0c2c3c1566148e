"""Per-layer redundancy of MLP neurons (the JSON of `secateur report`), one line per model:
neurons kept, sensitivity, uniqueness (no partner at cos >= 0.8) and reconstructability (R2 > 0.9).

    .venv/bin/python tools/plot/redundancy.py --out redundancy.png dense=runs/x/redundancy.json gum=runs/y/...
"""
import argparse, json, os

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

PANELS = [("neurons", "MLP neurons"), ("sensitivity_sum", "sensitivity (sum |w·dL/dw|)"),
          ("unique", "uniqueness (no partner at cos ≥ 0.8)"), ("r2_above_0.9", "reconstructable (R² > 0.9)")]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--title", default="")
    ap.add_argument("reports", nargs="+", help="label=path/to/redundancy.json")
    a = ap.parse_args()
    fig, axes = plt.subplots(2, 2, figsize=(12, 7), sharex=True)
    for spec in a.reports:
        label, path = spec.split("=", 1) if "=" in spec else (os.path.basename(os.path.dirname(spec)), spec)
        layers = json.load(open(path))["layers"]
        x = [l["layer"] for l in layers]
        for ax, (key, _) in zip(axes.flat, PANELS):
            ax.plot(x, [l.get(key, float("nan")) for l in layers], marker=".", label=label)
    for ax, (_, title) in zip(axes.flat, PANELS):
        ax.set_title(title)
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("layer")
    axes[0][0].legend(fontsize=8)
    if a.title:
        fig.suptitle(a.title)
    fig.tight_layout()
    tmp = a.out + ".tmp.png"
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, a.out)


if __name__ == "__main__":
    main()
