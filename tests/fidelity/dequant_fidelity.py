#!/usr/bin/env python3
"""Bit-for-bit check of Secateur's GGUF dequantisation against gguf-py (PyPI `gguf`).

Runs `gguf_dump` (tests/fidelity/gguf_dump.cpp) on the given GGUF and on a synthetic GGUF built
here with gguf.GGUFWriter (covering F32, F16, BF16, Q4_0, Q4_1, Q8_0, with quantised real-looking
data, raw random blocks and special values), then compares every tensor with
gguf.quants.dequantize(t.data, t.tensor_type): same shape and identical float32 bit patterns.
Prints one summary line per (file, type) and exits non-zero on any mismatch.

usage: dequant_fidelity.py --dump BIN --gguf PATH --tmp DIR
"""
import argparse
import collections
import os
import subprocess
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q
from safetensors.numpy import load_file


def finite_halves(bits: np.ndarray) -> np.ndarray:
    """Replace inf/NaN half bit patterns (exponent 31) with finite ones, keeping sign and mantissa."""
    bits = bits.copy()
    special = (bits & 0x7C00) == 0x7C00
    bits[special] &= np.uint16(0xBBFF)  # clear the top exponent bit -> finite
    return bits


def random_blocks(rng, qtype, n_rows, row_len, specials):
    """Raw blocks of random bytes with finite f16 scales (a few special scales when `specials`)."""
    block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
    n_blocks = n_rows * row_len // block_size
    blocks = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
    n_scales = 2 if qtype == Q.Q4_1 else 1   # Q4_1: d and m
    scales = blocks[:, : 2 * n_scales].copy().view(np.uint16)
    scales = finite_halves(scales)
    if specials:
        # d in {+inf, -inf, NaN, subnormal, -0}; never two NaNs in one formula (their payload order
        # is unspecified), so Q4_1's m stays finite here.
        for i, s in enumerate([0x7C00, 0xFC00, 0x7E01, 0x0001, 0x8000, 0x03FF]):
            scales[i, 0] = s
    blocks[:, : 2 * n_scales] = scales.view(np.uint8)
    return blocks.reshape(n_rows, row_len // block_size * type_size)


def build_synthetic(path: str) -> None:
    rng = np.random.default_rng(1234)
    w = gguf.GGUFWriter(path, arch="llama")
    w.add_uint32("test.marker", 7)
    for qtype in (Q.Q4_0, Q.Q4_1, Q.Q8_0):
        name = qtype.name.lower()
        for shape in [(64, 96), (3, 5, 128), (32,)]:
            data = rng.standard_normal(shape).astype(np.float32) * np.float32(0.05)
            w.add_tensor(f"{name}.quantized.{'x'.join(map(str, shape))}", gguf.quants.quantize(data, qtype),
                         raw_dtype=qtype)
        w.add_tensor(f"{name}.raw", random_blocks(rng, qtype, 48, 160, specials=False), raw_dtype=qtype)
        w.add_tensor(f"{name}.special", random_blocks(rng, qtype, 4, 64, specials=True), raw_dtype=qtype)
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


def check(dump: str, gguf_path: str, out_path: str, label: str) -> bool:
    proc = subprocess.run([dump, gguf_path, out_path], capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"[{label}] gguf_dump failed (rc {proc.returncode}): {proc.stderr.strip()}")
        return False
    print(f"[{label}] {proc.stderr.strip()}")
    ours = load_file(out_path)
    reader = gguf.GGUFReader(gguf_path)
    stats = collections.OrderedDict()   # type name -> [tensors, mismatches, elements]
    ok = True
    if len(ours) != len(reader.tensors):
        print(f"[{label}] tensor count differs: ours {len(ours)}, gguf-py {len(reader.tensors)}")
        ok = False
    for t in reader.tensors:
        tname = Q(t.tensor_type).name
        s = stats.setdefault(tname, [0, 0, 0])
        s[0] += 1
        with np.errstate(invalid="ignore", over="ignore"):   # the special-value tensors make NaNs on purpose
            ref = np.ascontiguousarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32)
        got = ours.get(t.name)
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
        print(f"[{label}] {tname:5s}: {n:4d} tensors, {elems:11d} elements, {bad} mismatched"
              f" -> {'OK (bit-exact)' if bad == 0 else 'FAIL'}")
        ok = ok and bad == 0
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dump", required=True, help="path of the gguf_dump executable")
    ap.add_argument("--gguf", required=True, help="a real GGUF file to check")
    ap.add_argument("--tmp", required=True, help="scratch directory")
    args = ap.parse_args()
    os.makedirs(args.tmp, exist_ok=True)

    synthetic = os.path.join(args.tmp, "synthetic.gguf")
    build_synthetic(synthetic)
    ok = check(args.dump, synthetic, os.path.join(args.tmp, "synthetic.dequant.safetensors"), "synthetic")
    ok = check(args.dump, args.gguf, os.path.join(args.tmp, "real.dequant.safetensors"),
               os.path.basename(args.gguf)) and ok
    covered = {"F32", "F16", "BF16", "Q4_0", "Q4_1", "Q8_0"}
    print("dequant fidelity:", "PASS" if ok else "FAIL", f"(types required: {', '.join(sorted(covered))})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
