#!/usr/bin/env bash
# Regenerate crates/quant/tests/data/llama-quantize.json: llama-quantize's tensor types and
# data digests for each run the test replays. Builds llama-quantize from the llama-cpp-python
# 0.3.36 sdist (llama.cpp 0c1e570) as scripts/bench-levels.sh does; not part of CI.
# Also refreshes smollm2-imatrix-blk01.gguf (llama-imatrix on 4 chunks of 512 of the GPL-3 text,
# first two blocks kept) when REFRESH_IMATRIX=1.
# Usage: scripts/quantize-reference.sh
set -euo pipefail
cd "$(dirname "$0")/.."
work="${LLAMACPP_WORK:-/tmp/llamacpp-levels}"
source scripts/llamacpp-sdist.sh
src=$(llamacpp_src "$work")
build="$work/build-tools"
if [ ! -x "$build/bin/llama-quantize" ] || [ ! -x "$build/bin/llama-imatrix" ]; then
    cmake -S "$src" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF >&2
    cmake --build "$build" --target llama-quantize llama-imatrix llama-perplexity -j"$(nproc)" >&2
fi
export GGUF_PY="$src/gguf-py" LD_LIBRARY_PATH="$build/bin"
q="$build/bin/llama-quantize"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
QUANT_REF_DIR="$out" cargo test --release -p quant --test llama_quantize -- --ignored --exact write_reference_sources >&2
data=crates/quant/tests/data
if [ "${REFRESH_IMATRIX:-0}" = 1 ] || [ ! -f "$data/smollm2-imatrix-blk01.gguf" ]; then
    cp /usr/share/common-licenses/GPL-3 "$out/calib.txt"
    "$build/bin/llama-imatrix" -m "$out/smollm2-f16.gguf" -f "$out/calib.txt" -o "$out/imatrix.gguf" -c 512 --chunks 4 -t 2 >&2
    python3 scripts/gguf-filter.py "$out/imatrix.gguf" "$data/smollm2-imatrix-blk01.gguf" 'blk\.[01]\.'
fi
runs="$out/runs.jsonl"
: >"$runs"
record() { # model imatrix(0|1) file args...
    local model=$1 im=$2 file=$3
    shift 3
    python3 scripts/gguf-digests.py "$file" "$model" "$im" "$@" >>"$runs"
}
# the sources as llama-quantize makes them from the same inputs
"$q" --allow-requantize "$out/tiny-q8_0.gguf" "$out/l.gguf" F32 2 >/dev/null 2>&1
record tiny 0 "$out/l.gguf" SOURCE
"$q" --allow-requantize "$(./target/release/bantam show smollm2:135m | awk '$1 == "file" {print $2; exit}')" "$out/l.gguf" F16 2 >/dev/null 2>&1
record smollm2 0 "$out/l.gguf" SOURCE
types="F32 F16 BF16 Q8_0 Q4_0 Q4_1 Q5_0 Q5_1 Q2_K Q3_K_S Q3_K_M Q3_K_L Q4_K_S Q4_K_M Q5_K_S Q5_K_M Q6_K"
for t in $types; do
    "$q" "$out/tiny-f32.gguf" "$out/l.gguf" "$t" 2 >/dev/null 2>&1
    record tiny 0 "$out/l.gguf" "$t"
done
for t in Q4_0 Q4_1 Q5_0 Q5_1 Q2_K Q2_K_S Q3_K_S Q3_K_M Q4_K_S Q4_K_M Q5_K_M Q6_K; do
    "$q" --imatrix "$out/tiny-imatrix.gguf" "$out/tiny-f32.gguf" "$out/l.gguf" "$t" 2 >/dev/null 2>&1
    record tiny 1 "$out/l.gguf" "$t"
done
opts=("--pure Q3_K_M" "--leave-output-tensor Q4_K_M" "--output-tensor-type q5_0 --token-embedding-type q4_k Q4_K_S"
    "--tensor-type attn_q=q8_0 --tensor-type blk\.[2-4]\.ffn_down=q5_1 Q3_K_S")
for o in "${opts[@]}"; do
    read -r -a a <<<"$o"
    n=${#a[@]}
    "$q" "${a[@]:0:n-1}" "$out/tiny-f32.gguf" "$out/l.gguf" "${a[n-1]}" 2 >/dev/null 2>&1
    record tiny 0 "$out/l.gguf" "${a[@]}"
done
for t in Q8_0 Q4_0 Q4_1 Q5_0 Q5_1 Q2_K Q3_K_S Q3_K_M Q3_K_L Q4_K_S Q4_K_M Q5_K_S Q5_K_M Q6_K BF16; do
    "$q" "$out/smollm2-f16.gguf" "$out/l.gguf" "$t" 2 >/dev/null 2>&1
    record smollm2 0 "$out/l.gguf" "$t"
done
for t in Q4_0 Q5_1 Q2_K Q3_K_M Q4_K_M Q6_K; do
    "$q" --imatrix "$data/smollm2-imatrix-blk01.gguf" "$out/smollm2-f16.gguf" "$out/l.gguf" "$t" 2 >/dev/null 2>&1
    record smollm2 1 "$out/l.gguf" "$t"
done
python3 - "$runs" "$data/llama-quantize.json" <<'PY'
import json, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
with open(sys.argv[2], "w") as f:
    f.write('{"llama.cpp": "0c1e570 (llama-cpp-python 0.3.36 sdist)", "runs": [\n')
    f.write(",\n".join(json.dumps(r, sort_keys=True) for r in runs))
    f.write("\n]}\n")
PY
echo "wrote $data/llama-quantize.json ($(wc -l <"$runs") runs)" >&2
