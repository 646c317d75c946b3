#!/usr/bin/env bash
# Prompt speed against prompt length, bantam beside llama.cpp at one x86 level: `bantam
# bench -p L` and `llama-bench -p L` (flash attention on) for each length, both reading 512
# tokens per pass, alternating A-B per model and round, JSON lines to stdout. llama-bench
# comes from scripts/bench-levels.sh's build. Not part of CI.
# Usage: scripts/bench-lengths.sh avx2|avx-vnni|avx512-vnni [THREADS] [LENGTHS] [ROUNDS] [MODELS...]
set -euo pipefail
cd "$(dirname "$0")/.."
level="$1"; threads="${2:-2}"; lengths="${3:-128,512,1024,2048,4096,8192}"; rounds="${4:-1}"
shift $(( $# < 4 ? $# : 4 ))
models=("$@"); [ ${#models[@]} -gt 0 ] || models=(smollm2:135m gemma3:270m qwen2.5-coder:0.5b)
build="${LLAMACPP_WORK:-/tmp/llamacpp-levels}/build-$level"
[ -x "$build/bin/llama-bench" ] || { echo "build llama-bench first: scripts/bench-levels.sh $level 0" >&2; exit 1; }
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')
for m in "${models[@]}"; do
    file=$(./target/release/bantam show "$m" | awk '$1 == "file" {print $2; exit}')
    for r in $(seq "$rounds"); do
        BANTAM_ISA="$level" ./target/release/bantam bench "$file" -p "$lengths" -n 0 -t "$threads" -r 2 --json \
            | python3 -c "import json,sys; [print(json.dumps({'engine':'bantam','level':'$level','model':'$m','round':$r,'test':x['test'],'avg_ts':x['avg_ts'],'cpu':'$cpu'})) for x in json.load(sys.stdin)]"
        LD_LIBRARY_PATH="$build/bin" "$build/bin/llama-bench" -m "$file" -p "$lengths" -n 0 -ub 512 -fa 1 -t "$threads" -r 2 -o jsonl 2>/dev/null \
            | python3 -c "import json,sys; [print(json.dumps({'engine':'llama.cpp','level':'$level','model':'$m','round':$r,'test':'pp%d'%x['n_prompt'],'avg_ts':x['avg_ts'],'cpu':'$cpu'})) for x in map(json.loads, sys.stdin)]"
    done
done
