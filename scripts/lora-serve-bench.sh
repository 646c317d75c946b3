#!/usr/bin/env bash
# What serving LoRA adapters costs: eight streams over four different adapters of one base
# (four models created with ADAPTER over it) against eight streams on the base alone, with
# `bantam serve --max-parallel 8`, alternating, ROUNDS rounds (scripts/loadtest.py, 64
# tokens per stream, or $TOKENS). The adapters are random, rank 8, on TARGETS (q,v: PEFT's default
# for llama models; or all seven projections). Not part of CI.
# Usage: scripts/lora-serve-bench.sh [MODEL] [TARGETS: qv|all] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
model="${1:-smollm2:135m}"; targets="${2:-qv}"; rounds="${3:-3}"
work=$(mktemp -d)
port=$((20000 + RANDOM % 10000))
bin=./target/release/bantam
cleanup() { kill "${pid:-0}" 2>/dev/null || true; for k in 1 2 3 4; do $bin rm "bench-lora-$k" >/dev/null 2>&1 || true; done; rm -rf "$work"; }
trap cleanup EXIT
python3 - "$work" "$targets" "$($bin show "$model" | awk '$1 == "file" {print $2; exit}')" <<'PY'
import sys, numpy as np, gguf
work, targets, path = sys.argv[1], sys.argv[2], sys.argv[3]
r = gguf.GGUFReader(path)
arch = r.fields["general.architecture"].contents()
shapes = {t.name: (int(t.shape[0]), int(t.shape[1])) for t in r.tensors if t.name.startswith("blk.") and len(t.shape) == 2}
names = ["attn_q", "attn_v"] if targets == "qv" else ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"]
for k in range(1, 5):
    rng = np.random.default_rng(k)
    w = gguf.GGUFWriter(f"{work}/lora{k}.gguf", arch)
    w.add_string("general.type", "adapter"); w.add_string("adapter.type", "lora"); w.add_float32("adapter.lora.alpha", 16.0)
    for name, (cols, rows) in sorted(shapes.items()):
        if name.split(".")[2] not in names:
            continue
        w.add_tensor(name + ".lora_a", (rng.uniform(-1, 1, (8, cols)) / np.sqrt(cols)).astype(np.float32))
        w.add_tensor(name + ".lora_b", (rng.uniform(-1, 1, (rows, 8)) * 0.05).astype(np.float32))
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
PY
for k in 1 2 3 4; do
    printf 'FROM %s\nADAPTER %s/lora%d.gguf\n' "$model" "$work" "$k" > "$work/Modelfile$k"
    $bin create "bench-lora-$k" -f "$work/Modelfile$k" >/dev/null
done
$bin serve --port "$port" --max-parallel 8 --ctx-size 1024 > "$work/serve.log" 2>&1 &
pid=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/" >/dev/null && break; sleep 0.2; done
adapters=bench-lora-1,bench-lora-2,bench-lora-3,bench-lora-4
for r in $(seq "$rounds"); do
    for m in "$model" "$adapters"; do
        python3 scripts/loadtest.py --url "http://127.0.0.1:$port" --model "$m" --streams 8 --tokens "${TOKENS:-64}" --rounds 1 \
            | python3 -c "import json,sys; d=json.loads(sys.stdin.read()); print('$targets', 'adapters' if ',' in d['model'] else 'base', d['aggregate_tps'])"
    done
done
