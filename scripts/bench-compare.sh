#!/usr/bin/env bash
# Side-by-side speed: bantam bench and llama.cpp (through llama-cpp-python, see
# scripts/bench_llamacpp.py) alternating, ROUNDS times per model, JSON lines to stdout.
# Not part of CI. Usage: scripts/bench-compare.sh [ROUNDS] [THREADS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-3}"; threads="${2:-2}"
py="${LLAMACPP_PYTHON:-/tmp/lcpp-venv/bin/python}"
models="${BANTAM_MODELS:-$HOME/.bantam/models}"
for m in smollm2-135m gemma3-270m qwen2.5-coder-0.5b; do
  for r in $(seq "$rounds"); do
    ./target/release/bantam bench "$models/$m.gguf" -p 128 -n 64 -t "$threads" -r 3 --json \
      | python3 -c "import json,sys; [print(json.dumps({'engine':'bantam','model':'$m','round':$r,'test':x['test'],'avg_ts':x['avg_ts']})) for x in json.load(sys.stdin)]"
    "$py" scripts/bench_llamacpp.py "$models/$m.gguf" -p 128 -n 64 -t "$threads" -r 3 \
      | python3 -c "import json,sys; [print(json.dumps({'engine':'llama.cpp','model':'$m','round':$r,'test':x['test'],'avg_ts':x['avg_ts']})) for x in map(json.loads, sys.stdin)]"
  done
done
