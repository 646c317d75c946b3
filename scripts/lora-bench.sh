#!/usr/bin/env bash
# Speed with and without a LoRA adapter (rank 8 on all seven projections of every layer, as
# crates/model/tests/lora.rs writes them), bantam beside llama.cpp's llama-completion with
# --lora, alternating, ROUNDS rounds. llama-bench takes no adapters, so llama.cpp's figures
# are llama-completion's own prompt and generation timings (128 prompt tokens, 64
# generated, greedy). Not part of CI.
# Usage: scripts/lora-bench.sh [LLAMA_BUILD_DIR] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
build="${1:-/tmp/build-avx512-vnni}"; rounds="${2:-3}"
cargo test --release -p model --test lora -- --exact writes_the_reference_adapters >/dev/null 2>&1
prompt=$(python3 -c "print(' '.join(['The quick brown fox jumps over the lazy dog.'] * 12))")
for name in smollm2-135m qwen2.5-coder-0.5b; do
    model=$(python3 -c "import json;print(json.load(open('target/tmp/lora/spec.json'))['$name']['model_file'])")
    adapter=target/tmp/lora/$name.gguf
    for r in $(seq "$rounds"); do
        for with in no yes; do
            extra=(); lextra=()
            if [ $with = yes ]; then extra=(--adapter "$adapter"); lextra=(--lora "$adapter"); fi
            ./target/release/bantam bench "$model" -p 128 -n 64 -r 2 -t 2 --json "${extra[@]}" \
                | python3 -c "import json,sys; [print('bantam', '$name', 'adapter=$with', r['test'], round(r['avg_ts'],1)) for r in json.load(sys.stdin)]"
            LD_LIBRARY_PATH="$build/bin" "$build/bin/llama-completion" -m "$model" -p "$prompt" -n 64 --temp 0 -t 2 -c 512 \
                --ignore-eos -no-cnv "${lextra[@]}" 2>&1 >/dev/null </dev/null \
                | awk -v n="$name" -v w="$with" '/prompt eval time/ {print "llama.cpp", n, "adapter=" w, "pp", $(NF-3)} / eval time/ && !/prompt/ {print "llama.cpp", n, "adapter=" w, "tg", $(NF-3)}'
        done
    done
done
