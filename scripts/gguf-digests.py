#!/usr/bin/env python3
"""One JSON line describing a GGUF file's tensors for crates/quant/tests/llama_quantize.rs:
{"model", "imatrix", "args", "types": {type: count}, "sha256"}, where sha256 covers every
tensor in name order as name, NUL, type name, NUL, data bytes.

    python3 scripts/gguf-digests.py FILE MODEL IMATRIX(0|1) ARGS...

Needs llama.cpp's gguf-py (GGUF_PY) and numpy; used by scripts/quantize-reference.sh.
"""
import collections
import hashlib
import json
import os
import sys

sys.path.insert(0, os.environ.get("GGUF_PY", "/tmp/llama_cpp_python-0.3.36/vendor/llama.cpp/gguf-py"))
from gguf import GGUFReader  # noqa: E402

path, model, im, *args = sys.argv[1:]
r = GGUFReader(path)
h = hashlib.sha256()
types = collections.Counter()
for t in sorted(r.tensors, key=lambda t: t.name.encode()):
    h.update(t.name.encode() + b"\0" + t.tensor_type.name.encode() + b"\0")
    h.update(t.data.tobytes())
    types[t.tensor_type.name] += 1
print(json.dumps({"model": model, "imatrix": im == "1", "args": args, "types": dict(types), "sha256": h.hexdigest()}, sort_keys=True))
