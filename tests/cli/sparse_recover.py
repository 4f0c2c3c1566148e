"""The unstructured path end to end on SmolLM2: `secateur run` with stages [sparse, recover] (RPP,
50% of the block matrices, a few steps each) exports dense weights with zeros and masks.safetensors;
the recover stage, reading the masks, trains every weight yet keeps each masked weight exactly 0."""
import argparse, json, os, shutil, subprocess, sys

from safetensors.numpy import load_file


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--secateur", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--tmp", required=True)
    a = ap.parse_args()
    shutil.rmtree(a.tmp, ignore_errors=True)
    common = [f"model.path={a.model}", f"run.dir={a.tmp}", "recover.method=full", "recover.steps=4", "recover.batch=2",
              "recover.micro_batch=2", "recover.seq_len=32", "recover.lr=0.0001", "recover.warmup_steps=0"]
    subprocess.run([a.secateur, "run", "run.stages=[sparse,recover]", "sparse.sparsity=0.5", "sparse.prune_at=0.5",
                    "sparse.reweight_every=1"] + common, check=True, stdout=subprocess.DEVNULL)
    sparse_dir, recovered_dir = os.path.join(a.tmp, "sparse"), os.path.join(a.tmp, "recovered")
    masks = load_file(os.path.join(sparse_dir, "masks.safetensors"))
    sparse = load_file(os.path.join(sparse_dir, "model.safetensors"))
    recovered = load_file(os.path.join(recovered_dir, "model.safetensors"))
    zeros = total = moved = 0
    ok = len(masks) == 30 * 7
    for name, mask in masks.items():
        pruned = mask == 0
        zeros += int(pruned.sum())
        total += mask.size
        ok &= bool((sparse[name][pruned] == 0).all()) and bool((recovered[name][pruned] == 0).all())
        moved += int((recovered[name] != sparse[name]).sum())
    report = json.load(open(os.path.join(a.tmp, "sparsity.json")))
    ok &= abs(zeros / total - 0.5) < 1e-6 and abs(report["sparsity"] - zeros / total) < 1e-9 and moved > 0
    print(f"{len(masks)} masks, {100 * zeros / total:.4f}% zeros (sparsity.json {100 * report['sparsity']:.4f}%), "
          f"every masked weight 0 after recovery, {moved} weights moved in recovery: {'OK' if ok else 'FAIL'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
