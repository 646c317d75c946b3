#!/usr/bin/env python3
"""Compare the tensors of two GGUF files: same names, types, shapes and data bytes; with
--metadata, also every metadata key (value, type and order) and the tensor order.

    python3 scripts/gguf-diff.py A.gguf B.gguf              # exit 0 when every tensor is identical
    python3 scripts/gguf-diff.py --metadata A.gguf B.gguf   # ... and every key too

Needs llama.cpp's gguf-py (GGUF_PY=path/to/gguf-py, e.g. the llama-cpp-python sdist's
vendor/llama.cpp/gguf-py) and numpy. Prints one line per difference and a summary.
"""
import os
import sys

sys.path.insert(0, os.environ.get("GGUF_PY", "/tmp/llama_cpp_python-0.3.36/vendor/llama.cpp/gguf-py"))
from gguf import GGUFReader  # noqa: E402


def show(v):
    types, value = v
    if isinstance(value, list):
        return f"{[t.name for t in types]} of {len(value)}"
    return f"{[t.name for t in types]} {str(value)[:80]!r}"


def metadata_diff(ra, rb):
    def kv(r):
        return {k: (f.types, f.contents()) for k, f in r.fields.items() if not k.startswith("GGUF.")}

    a, b = kv(ra), kv(rb)
    bad = 0
    for k in list(a) + [k for k in b if k not in a]:
        va, vb = a.get(k), b.get(k)
        if va == vb:
            continue
        bad += 1
        if va is not None and vb is not None and isinstance(va[1], list) and isinstance(vb[1], list) and len(va[1]) == len(vb[1]):
            idx = [i for i in range(len(va[1])) if va[1][i] != vb[1][i]]
            print(f"{k}: {len(idx)} of {len(va[1])} entries differ, first {[(i, va[1][i], vb[1][i]) for i in idx[:3]]}")
        else:
            print(f"{k}: {show(va) if va else 'absent'} vs {show(vb) if vb else 'absent'}")
    order_a = [k for k in a if k in b]
    order_b = [k for k in b if k in a]
    if order_a != order_b:
        print("the keys both files have are in a different order")
        bad += 1
    return len(set(a) | set(b)), bad


def main():
    args = [x for x in sys.argv[1:] if x != "--metadata"]
    ra, rb = GGUFReader(args[0]), GGUFReader(args[1])
    a, b = {t.name: t for t in ra.tensors}, {t.name: t for t in rb.tensors}
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
    if "--metadata" in sys.argv:
        if [t.name for t in ra.tensors] != [t.name for t in rb.tensors]:
            print("the tensors are in a different order")
            bad += 1
        n, kbad = metadata_diff(ra, rb)
        print(f"{n} metadata keys, {kbad} differ")
        bad += kbad
    sys.exit(1 if bad else 0)


main()
