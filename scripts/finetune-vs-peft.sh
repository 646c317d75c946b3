#!/usr/bin/env bash
# LoRA training speed and memory, `bantam finetune` beside PyTorch + PEFT on the same CPU:
# the same chat lines (the TREC set of scripts/finetune-trec.sh), packed into sequences of
# 256 tokens, 4 per optimizer step, rank 8 / alpha 16 on all seven projections, 2 threads,
# alternating ROUNDS rounds. bantam trains on the quantized GGUF (dequantizing rows as it
# goes); PyTorch on the same weights exported to a Hugging Face directory in f32
# (`bantam export`). PyTorch, transformers and PEFT go into a virtual environment under
# WORK (PyPI's torch wheel). JSON lines to stdout. Not part of CI.
# Usage: scripts/finetune-vs-peft.sh [MODEL] [LINES] [ROUNDS] [WORK]
set -euo pipefail
cd "$(dirname "$0")/.."
model="${1:-smollm2:135m}"; lines="${2:-160}"; rounds="${3:-2}"; work="${4:-/tmp/finetune-vs-peft}"
bin=./target/release/bantam
mkdir -p "$work"
[ -f /tmp/finetune-trec/train.jsonl ] || DATA_ONLY=1 scripts/finetune-trec.sh "$model" 800 1 /tmp/finetune-trec >&2
head -n "$lines" /tmp/finetune-trec/train.jsonl > "$work/data.jsonl"
[ -f "$work/hf/config.json" ] || $bin export "$model" -o "$work/hf" --dtype f32 >&2
if [ ! -x "$work/venv/bin/python" ]; then
    python3 -m venv "$work/venv"
    "$work/venv/bin/pip" install -q torch transformers peft >&2
fi
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')
# PEFT's steps: the packed sequences bantam reports, in batches of 4.
for r in $(seq "$rounds"); do
    /usr/bin/time -f 'peak_rss_kib %M' $bin finetune "$model" "$work/data.jsonl" -o "$work/adapter.gguf" --ctx 256 --batch 4 \
        --rank 8 --alpha 16 --val-split 0 -t 2 > "$work/bantam.log" 2>&1
    python3 - "$work/bantam.log" "$model" "$cpu" <<'PY'
import json, re, sys
log = open(sys.argv[1]).read()
steps = re.findall(r"step (\d+)/\d+ .* (\d+) tok/s", log)
wrote = re.search(r"\((\d+) steps, (\d+) tokens in", log)
rss = int(re.search(r"peak_rss_kib (\d+)", log).group(1)) / 1024
print(json.dumps({"engine": "bantam", "model": sys.argv[2], "threads": 2, "steps": int(wrote.group(1)), "tokens": int(wrote.group(2)), "tok_per_s": float(steps[-1][1]), "peak_rss_mib": round(rss, 1), "cpu": sys.argv[3]}))
PY
    steps=$(grep -o '([0-9]* steps' "$work/bantam.log" | tr -dc 0-9)
    "$work/venv/bin/python" scripts/finetune_peft.py "$work/hf" "$work/data.jsonl" --threads 2 --ctx 256 --batch 4 --rank 8 --alpha 16 \
        --steps "$steps" 2>/dev/null | python3 -c "import json,sys; d=json.loads(sys.stdin.read()); d.update(model='$model', cpu='$cpu'); print(json.dumps(d))"
done
