#!/usr/bin/env bash
# Writes crates/model/tests/data/lora-reference.json: llama.cpp's greedy continuations,
# with each step's top two logits, for the catalog models under the deterministic random
# adapters that crates/model/tests/lora.rs writes (its `writes_the_reference_adapters`
# test). The prompts are the first cases of ../shared/reference/*/greedy.json. Builds a
# small C program against the llama.cpp of the llama-cpp-python sdist; not part of CI.
# Usage: scripts/lora-reference.sh [LLAMA_BUILD_DIR] (a build of that tree with libllama)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/llamacpp-sdist.sh
work=${WORK:-/tmp}
src=$(llamacpp_src "$work")
build="${1:-$work/build-avx2}"
if [ ! -f "$build/bin/libllama.so" ]; then
    cmake -S "$src" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
        -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF >&2
    cmake --build "$build" --target llama >&2
fi
gcc -O2 -o "$work/lora_greedy" scripts/lora_greedy.c -I"$src/include" -I"$src/ggml/include" -L"$build/bin" -lllama -Wl,-rpath,"$build/bin"
cargo test --release -p model --test lora -- --exact writes_the_reference_adapters >&2
python3 - "$work/lora_greedy" <<'PY'
import hashlib, json, subprocess, sys
harness = sys.argv[1]
adapters = "target/tmp/lora"
spec = json.load(open(f"{adapters}/spec.json"))
out = {}
for name, s in spec.items():
    ref = json.load(open(f"../shared/reference/{name}/greedy.json"))
    cases = []
    for case in ref[:3]:
        ids = ",".join(map(str, case["prompt_ids"]))
        steps = []
        lines = subprocess.run([harness, s["model_file"], "24", ids, s["file"], str(s["scale"])], check=True, capture_output=True, text=True).stdout
        steps = [json.loads(l) for l in lines.splitlines() if l.startswith("{")]
        cases.append({"prompt": case["prompt"], "prompt_ids": case["prompt_ids"], "ids": [st["id"] for st in steps], "steps": steps})
    digest = hashlib.sha256(open(s["file"], "rb").read()).hexdigest()
    out[name] = {"adapter_sha256": digest, **{k: v for k, v in s.items() if k not in ("file", "model_file")}, "cases": cases}
json.dump(out, open("crates/model/tests/data/lora-reference.json", "w"), indent=1)
print("wrote crates/model/tests/data/lora-reference.json")
PY
