#!/usr/bin/env python3
"""Compare the tensors of two GGUF files: same names, types, shapes and data bytes.

    python3 scripts/gguf-diff.py A.gguf B.gguf     # exit 0 when every tensor is identical

Needs llama.cpp's gguf-py (GGUF_PY=path/to/gguf-py, e.g. the llama-cpp-python sdist's
vendor/llama.cpp/gguf-py) and numpy. Prints one line per differing tensor and a summary.
"""
import os
import sys

sys.path.insert(0, os.environ.get("GGUF_PY", "/tmp/llama_cpp_python-0.3.36/vendor/llama.cpp/gguf-py"))
from gguf import GGUFReader  # noqa: E402


def tensors(path):
    r = GGUFReader(path)
    return {t.name: t for t in r.tensors}


def main():
    a, b = tensors(sys.argv[1]), tensors(sys.argv[2])
    bad = 0
    for name in sorted(set(a) | set(b)):
        ta, tb = a.get(name), b.get(name)
        if ta is None or tb is None:
            print(f"{name}: only in {'B' if ta is None else 'A'}")
            bad += 1
            continue
        if ta.tensor_type != tb.tensor_type or list(ta.shape) != list(tb.shape):
            print(f"{name}: {ta.tensor_type.name}{list(ta.shape)} vs {tb.tensor_type.name}{list(tb.shape)}")
            bad += 1
            continue
        da, db = ta.data.tobytes(), tb.data.tobytes()
        if da != db:
            n = sum(1 for x, y in zip(da, db) if x != y)
            print(f"{name} ({ta.tensor_type.name}): {n} of {len(da)} bytes differ")
            bad += 1
    print(f"{len(a)} tensors, {bad} differ")
    sys.exit(1 if bad else 0)


main()
