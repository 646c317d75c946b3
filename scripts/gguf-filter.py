#!/usr/bin/env python3
"""Copy an imatrix GGUF keeping only the entries whose name matches a regular expression.

    python3 scripts/gguf-filter.py IN.gguf OUT.gguf 'blk\\.[01]\\.'

Needs llama.cpp's gguf-py (GGUF_PY) and numpy; used by scripts/quantize-reference.sh.
"""
import os
import re
import sys

sys.path.insert(0, os.environ.get("GGUF_PY", "/tmp/llama_cpp_python-0.3.36/vendor/llama.cpp/gguf-py"))
import gguf  # noqa: E402

src, dst, pattern = sys.argv[1:]
r = gguf.GGUFReader(src)
w = gguf.GGUFWriter(dst, arch=None)
for name, field in r.fields.items():
    if name.startswith("GGUF.") or name == "general.architecture":
        continue
    v = field.contents()
    if isinstance(v, list):
        w.add_array(name, v)
    elif isinstance(v, str):
        w.add_string(name, v)
    else:
        w.add_uint32(name, int(v))
for t in r.tensors:
    if re.search(pattern, t.name):
        w.add_tensor(t.name, t.data, raw_shape=list(reversed([int(d) for d in t.shape])))
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
