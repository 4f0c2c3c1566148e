#!/usr/bin/env python3
"""Bit-for-bit check of Secateur's GGUF dequantisation against gguf-py (PyPI `gguf`).

Runs `gguf_dump` (tests/fidelity/gguf_dump.cpp) on the given GGUFs and on a synthetic GGUF built
here with gguf.GGUFWriter (covering F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K,
Q8_K, with quantised real-looking data where gguf-py can quantise the type, raw random blocks with
finite scales and special scale values), then compares every tensor with
gguf.quants.dequantize(t.data, t.tensor_type): same shape and identical float32 bit patterns.
gguf-py has no Q8_K decoder; Q8_K is compared with ggml's formula (x = d * q) in numpy instead.
Prints one summary line per (file, type) and exits non-zero on any mismatch, on a required type the
synthetic file did not check, or on a missing --gguf file; a missing --gguf-if-present file is
reported with a SKIPPED line.

usage: dequant_fidelity.py --dump BIN [--gguf PATH ...] [--gguf-if-present PATH ...] --tmp DIR
"""
import argparse
import collections
import os
import subprocess
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q
from safetensors import safe_open

# Byte offsets of each type's f16 scale fields in a block; the first is `d`, which the special-value
# tensors set to inf/NaN/subnormal/-0 (the others stay finite: never two NaNs in one formula, as
# their payload order is unspecified). Q8_K's d is a float32 at offset 0 instead.
F16_SCALES = {Q.Q4_0: [0], Q.Q4_1: [0, 2], Q.Q5_0: [0], Q.Q5_1: [0, 2], Q.Q8_0: [0],
              Q.Q4_K: [0, 2], Q.Q5_K: [0, 2], Q.Q6_K: [208], Q.Q8_K: []}
F32_SCALES = {Q.Q8_K: [0]}
QUANTIZABLE = {Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0}   # gguf.quants.quantize has no K-quant encoders
# Types the synthetic file must hold for a PASS (each also bit-exact, as every tensor must be).
REQUIRED = ["F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q4_K", "Q5_K", "Q6_K", "Q8_K"]


def finite_halves(bits: np.ndarray) -> np.ndarray:
    """Replace inf/NaN half bit patterns (exponent 31) with finite ones, keeping sign and mantissa."""
    bits = bits.copy()
    special = (bits & 0x7C00) == 0x7C00
    bits[special] &= np.uint16(0xBBFF)  # clear the top exponent bit -> finite
    return bits


def finite_floats(bits: np.ndarray) -> np.ndarray:
    """Replace inf/NaN float32 bit patterns (exponent 255) with finite ones."""
    bits = bits.copy()
    special = (bits & 0x7F800000) == 0x7F800000
    bits[special] &= np.uint32(0xBFFFFFFF)
    return bits


def random_blocks(rng, qtype, shape, specials):
    """Raw blocks of random bytes with finite scales (special values of d in blocks 0..5 when
    `specials`), as the byte array of a tensor of `shape` (elements)."""
    block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
    n_blocks = int(np.prod(shape)) // block_size
    blocks = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
    for k, off in enumerate(F16_SCALES[qtype]):
        field = finite_halves(blocks[:, off:off + 2].copy().view(np.uint16))
        if specials and k == 0:   # d in {+inf, -inf, NaN, subnormal, -0, largest subnormal}
            field[:6, 0] = [0x7C00, 0xFC00, 0x7E01, 0x0001, 0x8000, 0x03FF]
        blocks[:, off:off + 2] = field.view(np.uint8)
    for off in F32_SCALES.get(qtype, []):
        field = finite_floats(blocks[:, off:off + 4].copy().view(np.uint32))
        if specials:              # d in {+inf, -inf, NaN, smallest subnormal, -0, largest finite}
            field[:6, 0] = [0x7F800000, 0xFF800000, 0x7FC00123, 0x00000001, 0x80000000, 0x7F7FFFFF]
        blocks[:, off:off + 4] = field.view(np.uint8)
    return blocks.reshape(*shape[:-1], shape[-1] // block_size * type_size)


def build_synthetic(path: str) -> None:
    rng = np.random.default_rng(1234)
    w = gguf.GGUFWriter(path, arch="llama")
    w.add_uint32("test.marker", 7)
    for qtype in (Q.Q4_0, Q.Q4_1, Q.Q8_0, Q.Q5_0, Q.Q5_1, Q.Q4_K, Q.Q5_K, Q.Q6_K, Q.Q8_K):
        name = qtype.name.lower()
        bs = gguf.GGML_QUANT_SIZES[qtype][0]
        if qtype in QUANTIZABLE:
            for shape in [(64, 96), (3, 5, 128), (32,)]:
                data = rng.standard_normal(shape).astype(np.float32) * np.float32(0.05)
                w.add_tensor(f"{name}.quantized.{'x'.join(map(str, shape))}", gguf.quants.quantize(data, qtype),
                             raw_dtype=qtype)
        w.add_tensor(f"{name}.raw", random_blocks(rng, qtype, (48, 5 * bs), specials=False), raw_dtype=qtype)
        w.add_tensor(f"{name}.raw3d", random_blocks(rng, qtype, (3, 2, 2 * bs), specials=False), raw_dtype=qtype)
        w.add_tensor(f"{name}.special", random_blocks(rng, qtype, (4, 2 * bs), specials=True), raw_dtype=qtype)
    for shape in [(40, 24), (2, 3, 16), (7,)]:
        tag = "x".join(map(str, shape))
        data = rng.standard_normal(shape).astype(np.float32)
        w.add_tensor(f"f32.{tag}", data)
        w.add_tensor(f"f16.{tag}", data.astype(np.float16))
        w.add_tensor(f"bf16.{tag}", gguf.quants.quantize(data, Q.BF16), raw_dtype=Q.BF16)
    # Every 16-bit pattern: subnormals, +-0, +-inf, quiet and signalling NaNs with payloads.
    all_bits = np.arange(65536, dtype=np.uint32).astype(np.uint16).reshape(256, 256)
    w.add_tensor("f16.all_bit_patterns", all_bits.view(np.float16))
    w.add_tensor("bf16.all_bit_patterns", all_bits.view(np.uint8), raw_dtype=Q.BF16)
    w.add_tensor("f32.specials", np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, -3.4e38, 1.0],
                                          dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def q8_k_reference(data: np.ndarray) -> np.ndarray:
    """ggml's dequantize_row_q8_K (block: f32 d, int8 qs[256], int16 bsums[16]; x = d * q), which
    gguf-py does not implement."""
    block_size, type_size = gguf.GGML_QUANT_SIZES[Q.Q8_K]
    blocks = data.reshape(-1, type_size)
    d = blocks[:, :4].copy().view(np.float32)                          # [n_blocks, 1]
    q = blocks[:, 4:4 + block_size].view(np.int8).astype(np.float32)   # [n_blocks, 256]
    return (d * q).reshape(*data.shape[:-1], data.shape[-1] // type_size * block_size)


def reference(t) -> np.ndarray:
    with np.errstate(invalid="ignore", over="ignore"):   # the special-value tensors make NaNs on purpose
        try:
            ref = gguf.quants.dequantize(t.data, t.tensor_type)
        except NotImplementedError:
            if t.tensor_type != Q.Q8_K:
                raise
            ref = q8_k_reference(t.data)
    return np.ascontiguousarray(ref, dtype=np.float32)


def check(dump: str, gguf_path: str, out_path: str, label: str, stats: dict) -> bool:
    """Fills stats (type name -> [tensors, mismatches, elements]) and prints its summary lines."""
    proc = subprocess.run([dump, gguf_path, out_path], capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"[{label}] gguf_dump failed (rc {proc.returncode}): {proc.stderr.strip()}")
        return False
    print(f"[{label}] {proc.stderr.strip()}")
    with safe_open(out_path, framework="numpy") as ours:   # one tensor at a time: the file can be many GB
        ok = compare(ours, gguf.GGUFReader(gguf_path), label, stats)
    if ok:
        os.remove(out_path)   # many GB for a large model; kept for a look when something differs
    return ok


def compare(ours, reader, label: str, stats: dict) -> bool:
    ok = True
    names = set(ours.keys())
    if len(names) != len(reader.tensors):
        print(f"[{label}] tensor count differs: ours {len(names)}, gguf-py {len(reader.tensors)}")
        ok = False
    for t in reader.tensors:
        tname = Q(t.tensor_type).name
        s = stats.setdefault(tname, [0, 0, 0])
        s[0] += 1
        ref = reference(t)
        got = ours.get_tensor(t.name) if t.name in names else None
        s[2] += ref.size
        if got is None:
            print(f"[{label}]   MISSING {t.name}")
            s[1] += 1
            continue
        same = (got.dtype == np.float32 and got.shape == ref.shape
                and np.array_equal(got.view(np.uint32), ref.view(np.uint32)))
        if not same:
            s[1] += 1
            if got.shape != ref.shape:
                print(f"[{label}]   MISMATCH {t.name} ({tname}): shape {got.shape} vs gguf-py {ref.shape}")
            else:
                diff = np.flatnonzero(got.view(np.uint32) != ref.view(np.uint32))
                i = diff[0]
                print(f"[{label}]   MISMATCH {t.name} ({tname}): {diff.size} of {ref.size} elements differ; "
                      f"first at flat index {i}: ours {got.ravel()[i]!r} vs gguf-py {ref.ravel()[i]!r}")
    for tname, (n, bad, elems) in stats.items():
        vs = " vs ggml's formula (gguf-py has no Q8_K)" if tname == "Q8_K" else ""
        print(f"[{label}] {tname:5s}: {n:4d} tensors, {elems:11d} elements, {bad} mismatched"
              f" -> {'OK (bit-exact' + vs + ')' if bad == 0 else 'FAIL'}")
        ok = ok and bad == 0
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dump", required=True, help="path of the gguf_dump executable")
    ap.add_argument("--gguf", action="append", default=[], help="a real GGUF file to check (repeatable)")
    ap.add_argument("--gguf-if-present", action="append", default=[], metavar="PATH",
                    help="a real GGUF file to check when it exists, else SKIPPED (repeatable)")
    ap.add_argument("--tmp", required=True, help="scratch directory")
    args = ap.parse_args()
    os.makedirs(args.tmp, exist_ok=True)

    synthetic = os.path.join(args.tmp, "synthetic.gguf")
    build_synthetic(synthetic)
    synthetic_stats = collections.OrderedDict()
    ok = check(args.dump, synthetic, os.path.join(args.tmp, "synthetic.dequant.safetensors"), "synthetic",
               synthetic_stats)
    unchecked = [t for t in REQUIRED if synthetic_stats.get(t, [0])[0] == 0]
    if unchecked:
        print(f"[synthetic] required types not in the synthetic file: {', '.join(unchecked)}")
        ok = False
    skipped = []
    for path, required in [(p, True) for p in args.gguf] + [(p, False) for p in args.gguf_if_present]:
        label = os.path.basename(path)
        if not os.path.isfile(path):
            if required:
                print(f"[{label}] FAIL: {path} missing")
                ok = False
            else:
                print(f"[{label}] SKIPPED: {path} missing (tools/fetch_model.py fetches it); not checked")
                skipped.append(label)
            continue
        ok = check(args.dump, path, os.path.join(args.tmp, "real.dequant.safetensors"), label,
                   collections.OrderedDict()) and ok
    print("dequant fidelity:", "PASS" if ok else "FAIL", f"(types required: {', '.join(sorted(REQUIRED))})"
          + (f"; SKIPPED, missing: {', '.join(skipped)}" if skipped else ""))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
