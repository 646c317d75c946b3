#!/usr/bin/env bash
# A needle in a long filler text (Debian's GPL-3, repeated), placed at fractions of prompts of
# a few lengths, asked back with greedy decoding: bantam beside llama.cpp's llama-completion
# (-fa on), for each KV cache type. A chat model is asked through its template (one turn,
# llama.cpp's Jinja template); a base model (no template) continues "The secret number
# mentioned in the text above is". Both decode greedily without a repeat penalty (bantam
# --repeat-penalty 1, llama.cpp's default), and only the generated text is searched for the
# number. bantam reads the prompt from stdin (a 32K-token prompt is over the 128 KiB a single
# command-line argument may hold). Prints one line per prompt, cache and engine, with
# bantam's peak RSS and the memory plan `bantam show -c CTX` gives for that cache. Not part
# of CI.
# Usage: scripts/needle-compare.sh [MODEL] [LLAMA_BUILD_DIR] [CTX] [TOKENS,...] [FRACS,...] [CACHES,...]
#   defaults: smollm2:135m, /tmp/llamacpp-levels/build-avx512-vnni, 8192, 2000,7000,
#   0.1,0.5,0.9, f16,q8_0. TOKENS are the filler's approximate length in the model's tokens.
#   NEEDLE_KEEP=DIR keeps the prompts there.
set -euo pipefail
cd "$(dirname "$0")/.."
model="${1:-smollm2:135m}"; build="${2:-/tmp/llamacpp-levels/build-avx512-vnni}"; ctx="${3:-8192}"
lengths="${4:-2000,7000}"; fracs="${5:-0.1,0.5,0.9}"; caches="${6:-f16,q8_0}"
bin=./target/release/bantam
shown=$($bin show "$model")
file=$(awk '$1 == "file" {print $2; exit}' <<< "$shown")
chat=yes
grep -q 'chat template *no' <<< "$shown" && chat=no
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 - "$work" "$bin" "$model" "$lengths" "$fracs" "$chat" <<'PY'
import json, subprocess, sys
work, bin, model = sys.argv[1:4]
lengths = [int(x) for x in sys.argv[4].split(",")]
fracs = [float(x) for x in sys.argv[5].split(",")]
chat = sys.argv[6] == "yes"
paras = [p.strip().replace("\n", " ") for p in open("/usr/share/common-licenses/GPL-3").read().split("\n\n") if p.strip()]
needle = "The secret number is 48213."
q = "What is the secret number mentioned in the text above? Answer with the number only."
if not chat:
    q = "The secret number mentioned in the text above is"

def filler(chars):
    body, n, i = [], 0, 0
    while n < chars:
        body.append(paras[i % len(paras)]); n += len(body[-1]) + 2; i += 1
    return body

def tokens(text):
    out = subprocess.run([bin, "tokenize", model, "-"], input=text.encode(), capture_output=True, check=True)
    return len(json.loads(out.stdout))

for want in lengths:
    chars = int(want * 4.4)
    # One correction from the measured length, so the filler lands near WANT tokens.
    chars = int(chars * want / tokens("\n\n".join(filler(chars))))
    for frac in fracs:
        body = filler(chars)
        body.insert(int(len(body) * frac), needle)
        open(f"{work}/needle-{want}-{frac}.txt", "w").write("\n\n".join(body) + "\n\n" + q)
PY
[ -n "${NEEDLE_KEEP:-}" ] && mkdir -p "$NEEDLE_KEEP" && cp "$work"/needle-*.txt "$NEEDLE_KEEP"/
IFS=, read -ra cache_list <<< "$caches"
for f in "$work"/needle-*.txt; do
    n=$(basename "$f" .txt)
    len=$($bin tokenize "$model" - < "$f" | python3 -c "import json,sys; print(len(json.load(sys.stdin)))")
    for t in "${cache_list[@]}"; do
        plan=$($bin show "$model" -c "$ctx" --kv-cache-type "$t" | awk '/one sequence of/ {print $5, $6; exit}')
        /usr/bin/time -f 'peak_rss_kib %M' -o "$work/time" $bin run "$model" --temperature 0 --repeat-penalty 1 -n 24 -c "$ctx" \
            --kv-cache-type "$t" < "$f" > "$work/out" 2>/dev/null
        b=$(tr '\n' ' ' < "$work/out"); rss=$(awk '/peak_rss_kib/ {printf "%.1f MiB", $2 / 1024}' "$work/time")
        mode=(-no-cnv)
        [ "$chat" = yes ] && mode=(-cnv -st --jinja)
        l=$(LD_LIBRARY_PATH="$build/bin" "$build/bin/llama-completion" -m "$file" -f "$f" "${mode[@]}" --no-display-prompt --temp 0 -n 24 \
            -c "$ctx" -fa on -ctk "$t" -ctv "$t" -t "$(nproc)" 2>/dev/null </dev/null | tr '\n' ' ')
        echo "$n ($len tokens) $t bantam: ${b:0:80} | found=$([[ $b == *48213* ]] && echo yes || echo no) | peak RSS $rss, plan $plan"
        l=$(echo "$l" | sed "s/^ *//")
        echo "$n ($len tokens) $t llama.cpp: ${l:0:80} | found=$([[ $l == *48213* ]] && echo yes || echo no)"
    done
done
