#!/usr/bin/env bash
# The quantization table of docs/QUANTIZE.md: for each catalog model, made F16 (from its
# published quantization, so "F16" is the reference every quant is measured against), each
# type's size, perplexity and KL divergence on held-out code, without an importance matrix,
# with one computed on general English text and with one computed on code. Not part of CI.
#   code calibration: Python's standard library, json/ email/ http/ (this machine's Python)
#   code held out:    Python's standard library, asyncio/
#   general text:     the GPL-3 text (/usr/share/common-licenses/GPL-3)
# Usage: scripts/quant-table.sh [OUT.jsonl] [MODELS...]   (needs target/release/bantam)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-docs/quant-table.jsonl}"
shift || true
models=("${@:-smollm2:135m gemma3:270m qwen2.5-coder:0.5b}")
read -r -a models <<<"${models[*]}"
b=./target/release/bantam
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
py=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')
cat "$py"/json/*.py "$py"/email/*.py "$py"/http/*.py >"$work/code-calib.txt"
cat "$py"/asyncio/*.py >"$work/code-heldout.txt"
cp /usr/share/common-licenses/GPL-3 "$work/general.txt"
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')
: >"$out"
for m in "${models[@]}"; do
    f16="$work/f16.gguf"
    "$b" quantize --allow-requantize "$m" "$f16" F16 >/dev/null 2>&1
    "$b" imatrix "$f16" -f "$work/general.txt" -o "$work/im-general.gguf" --chunks 8 >/dev/null 2>&1
    "$b" imatrix "$f16" -f "$work/code-calib.txt" -o "$work/im-code.gguf" --chunks 8 >/dev/null 2>&1
    measure() { # type imatrix-label [imatrix file]
        local t=$1 label=$2 im=${3:-}
        local q="$work/q.gguf"
        if [ "$t" = F16 ]; then cp "$f16" "$q"; else "$b" quantize ${im:+--imatrix "$im"} "$f16" "$q" "$t" >/dev/null 2>&1; fi
        local size; size=$(stat -c %s "$q")
        "$b" perplexity "$q" "$work/code-heldout.txt" -c 512 --chunks 6 --kl-divergence "$f16" 2>/dev/null >"$work/kld.txt"
        python3 - "$m" "$t" "$label" "$size" "$cpu" "$work/kld.txt" >>"$out" <<'PY'
import json, re, sys
m, t, label, size, cpu, path = sys.argv[1:]
txt = open(path).read()
num = lambda k: float(re.search(re.escape(k) + r"\s*:\s*(-?[0-9.]+)", txt).group(1))
print(json.dumps({"model": m, "type": t, "imatrix": label, "bytes": int(size), "ppl": num("Mean PPL(Q)"),
                  "ppl_f16": num("Mean PPL(base)"), "kld_mean": num("Mean    KLD"), "kld_p99": num("99.0%   KLD"),
                  "same_top": num("Same top p"), "cpu": cpu, "heldout": "python stdlib asyncio/"}))
PY
        tail -1 "$out" >&2
    }
    for t in Q2_K Q3_K_M Q4_K_M; do
        measure "$t" none
        measure "$t" general "$work/im-general.gguf"
        measure "$t" code "$work/im-code.gguf"
    done
    for t in Q4_0 Q5_K_M Q6_K Q8_0; do
        measure "$t" none
    done
done
