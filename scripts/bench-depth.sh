#!/usr/bin/env bash
# Speed against cache depth, bantam beside llama.cpp at one x86 level: `bantam bench -d` and
# `llama-bench -d` (flash attention on, its faster CPU path at depth) for prompt (pp512) and
# generation (tg32) after 0, 1024 and 4096 tokens, alternating A-B per model, JSON lines to
# stdout. llama-bench comes from scripts/bench-levels.sh's build. Not part of CI.
# Usage: scripts/bench-depth.sh avx2|avx-vnni|avx512-vnni [THREADS] [DEPTHS] [MODELS...]
set -euo pipefail
cd "$(dirname "$0")/.."
level="$1"; threads="${2:-2}"; depths="${3:-0,1024,4096}"; shift $(( $# < 3 ? $# : 3 ))
models=("$@"); [ ${#models[@]} -gt 0 ] || models=(smollm2:135m gemma3:270m qwen2.5-coder:0.5b)
build="${LLAMACPP_WORK:-/tmp/llamacpp-levels}/build-$level"
[ -x "$build/bin/llama-bench" ] || { echo "build llama-bench first: scripts/bench-levels.sh $level 0" >&2; exit 1; }
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')
for m in "${models[@]}"; do
    file=$(./target/release/bantam show "$m" | awk '$1 == "file" {print $2; exit}')
    BANTAM_ISA="$level" ./target/release/bantam bench "$file" -p 512 -n 32 -d "$depths" -t "$threads" -r 2 --json \
        | python3 -c "import json,sys; [print(json.dumps({'engine':'bantam','level':'$level','model':'$m','test':x['test'],'n_depth':x['n_depth'],'avg_ts':x['avg_ts'],'cpu':'$cpu'})) for x in json.load(sys.stdin)]"
    LD_LIBRARY_PATH="$build/bin" "$build/bin/llama-bench" -m "$file" -p 512 -n 32 -d "$depths" -fa 1 -t "$threads" -r 2 -o jsonl 2>/dev/null \
        | python3 -c "import json,sys; [print(json.dumps({'engine':'llama.cpp','level':'$level','model':'$m','test':(('pp%d'%x['n_prompt']) if x['n_prompt'] else ('tg%d'%x['n_gen']))+(' @ d%d'%x['n_depth'] if x['n_depth'] else ''),'n_depth':x['n_depth'],'avg_ts':x['avg_ts'],'cpu':'$cpu'})) for x in map(json.loads, sys.stdin)]"
done
