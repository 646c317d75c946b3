#!/usr/bin/env bash
# A needle in a long filler text (Debian's GPL-3, repeated), at the start, middle and end of
# prompts of about 2000 and 7000 tokens, asked back through the chat template with greedy
# decoding: bantam beside llama.cpp's llama-completion (one turn, its Jinja chat template),
# with the f16 and q8_0 caches. Prints one line per prompt, cache and engine. Not part of CI.
# Usage: scripts/needle-compare.sh [MODEL] [LLAMA_BUILD_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
model="${1:-smollm2:135m}"; build="${2:-/tmp/llamacpp-levels/build-avx512-vnni}"
file=$(./target/release/bantam show "$model" | awk '$1 == "file" {print $2; exit}')
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 - "$work" <<'PY'
import sys
paras = [p.strip().replace("\n", " ") for p in open("/usr/share/common-licenses/GPL-3").read().split("\n\n") if p.strip()]
for chars in (8800, 30800):  # about 2000 and 7000 tokens
    for frac in (0.1, 0.5, 0.9):
        body, n, i = [], 0, 0
        while n < chars:
            body.append(paras[i % len(paras)]); n += len(body[-1]) + 2; i += 1
        body.insert(int(len(body) * frac), "The secret number is 48213.")
        q = "What is the secret number mentioned in the text above? Answer with the number only."
        open(f"{sys.argv[1]}/needle-{chars}-{frac}.txt", "w").write("\n\n".join(body) + "\n\n" + q)
PY
for f in "$work"/needle-*.txt; do
    for t in f16 q8_0; do
        b=$(./target/release/bantam run "$model" "$(cat "$f")" --temperature 0 -n 24 -c 8192 --kv-cache-type "$t" 2>/dev/null | tr '\n' ' ')
        l=$(LD_LIBRARY_PATH="$build/bin" "$build/bin/llama-completion" -m "$file" -f "$f" -cnv -st --jinja --temp 0 -n 24 -c 8192 \
            -fa on -ctk "$t" -ctv "$t" -t "$(nproc)" 2>/dev/null </dev/null | tr '\n' ' ')
        n=$(basename "$f" .txt)
        echo "$n $t bantam: ${b:0:80} | found=$([[ $b == *48213* ]] && echo yes || echo no)"
        echo "$n $t llama.cpp: ${l: -80} | found=$([[ $l == *48213* ]] && echo yes || echo no)"
    done
done
