#!/usr/bin/env bash
# bantam convert against llama.cpp's own converter, on the same Hugging Face directories:
# each model (the six synthetic families and the catalog's three) is exported with
# `bantam export` (safetensors F32, config.json, tokenizer files), converted by
# convert_hf_to_gguf.py (llama.cpp 0c1e570, the tree in the llama-cpp-python 0.3.36 sdist)
# and by `bantam convert`, and the two GGUF files are compared key by key and tensor by
# tensor (scripts/gguf-diff.py --metadata). Not part of CI: it installs PyTorch and
# transformers into a virtual environment (several GB).
#
#   bash scripts/convert-reference.sh [OUTTYPE ...]     # default: f16 q8_0
#
# Env: LLAMA_CPP (the llama.cpp tree, default /tmp/llama_cpp_python-0.3.36/vendor/llama.cpp,
# unpacked from `pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36`),
# VENV (default /tmp/convvenv), WORK (default /tmp/convert-reference).
set -euo pipefail
cd "$(dirname "$0")/.."
LLAMA_CPP=${LLAMA_CPP:-/tmp/llama_cpp_python-0.3.36/vendor/llama.cpp}
VENV=${VENV:-/tmp/convvenv}
WORK=${WORK:-/tmp/convert-reference}
types=("$@")
[ ${#types[@]} -gt 0 ] || types=(f16 q8_0)
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q torch==2.15.0 transformers==4.57.6 sentencepiece protobuf numpy
fi
cargo build --release -p bantam
B=target/release/bantam
mkdir -p "$WORK"
models=(synthetic/llama synthetic/qwen2 synthetic/qwen3 synthetic/gemma3 synthetic/phi3 synthetic/granite smollm2:135m gemma3:270m qwen2.5-coder:0.5b)
root=${BANTAM_MODELS:-$HOME/.bantam/models}
status=0
for m in "${models[@]}"; do
    tag=${m//[:\/]/_}
    src=$m
    [[ $m == synthetic/* ]] && src=$root/$m.gguf
    rm -rf "${WORK:?}/$tag"
    $B export "$src" -o "$WORK/$tag" >/dev/null 2>&1
    for t in "${types[@]}"; do
        "$VENV/bin/python" "$LLAMA_CPP/convert_hf_to_gguf.py" "$WORK/$tag" --outfile "$WORK/$tag.llama.$t.gguf" --outtype "$t" >"$WORK/$tag.llama.$t.log" 2>&1
        $B convert "$WORK/$tag" -o "$WORK/$tag.bantam.$t.gguf" --outtype "$t" >/dev/null 2>&1
        if out=$(GGUF_PY=$LLAMA_CPP/gguf-py python3 scripts/gguf-diff.py --metadata "$WORK/$tag.llama.$t.gguf" "$WORK/$tag.bantam.$t.gguf"); then
            echo "$m $t: identical ($(echo "$out" | tr '\n' ' '))"
        else
            echo "$m $t: DIFFERENT"
            echo "$out" | sed 's/^/    /'
            status=1
        fi
        rm -f "$WORK/$tag".*."$t".gguf
    done
    rm -rf "${WORK:?}/$tag"
done
exit $status
