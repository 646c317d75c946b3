#!/usr/bin/env python3
"""Compare two imatrix GGUF files (bantam imatrix against llama-imatrix): the same entries
and counts, and the relative difference of each column's mean squared activation.

    python3 scripts/imatrix-compare.py A.gguf B.gguf

Prints the median and worst relative difference over all columns, and the worst entries.
Needs llama.cpp's gguf-py (GGUF_PY) and numpy.
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.environ.get("GGUF_PY", "/tmp/llama_cpp_python-0.3.36/vendor/llama.cpp/gguf-py"))
from gguf import GGUFReader  # noqa: E402


def load(path):
    r = GGUFReader(path)
    t = {x.name: np.array(x.data, dtype=np.float64) for x in r.tensors}
    out = {}
    for name in t:
        if name.endswith(".in_sum2"):
            base = name[: -len(".in_sum2")]
            c = t[base + ".counts"].reshape(-1)
            out[base] = (t[name].reshape(len(c), -1) / c[:, None], c)
    return out


a, b = load(sys.argv[1]), load(sys.argv[2])
if set(a) != set(b):
    print("entries only in A:", sorted(set(a) - set(b))[:10], "only in B:", sorted(set(b) - set(a))[:10])
rels, worst = [], []
for k in sorted(set(a) & set(b)):
    (va, ca), (vb, cb) = a[k], b[k]
    if list(ca) != list(cb):
        print(f"{k}: counts {list(ca)} vs {list(cb)}")
    rel = np.abs(va - vb) / np.maximum(np.abs(vb), 1e-30)
    rels.append(rel.reshape(-1))
    worst.append((float(rel.max()), float(np.median(rel)), k))
allr = np.concatenate(rels)
print(f"{len(worst)} entries, {allr.size} columns: median relative difference {np.median(allr):.2e}, "
      f"p99 {np.percentile(allr, 99):.2e}, max {allr.max():.2e}; share within 1e-4: {np.mean(allr <= 1e-4):.4f}")
for m, med, k in sorted(worst, reverse=True)[:5]:
    print(f"  {k}: max {m:.2e}, median {med:.2e}")
