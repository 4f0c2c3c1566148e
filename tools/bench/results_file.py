"""Benchmark results are written atomically (temp name, then rename), so a killed run never leaves
a complete-looking but partial JSON file behind."""
import json, os


def write_json(path, obj):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
    os.replace(path + ".tmp", path)
