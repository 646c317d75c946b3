#!/usr/bin/env bash
# Perplexity at a long context, bantam beside llama.cpp's llama-perplexity (-fa on), on the
# texts of /usr/share/common-licenses (every file once, sorted by name, about 50K tokens),
# written twice so that llama-perplexity's need for 2 × CTX tokens holds at CTX = 32768 while
# the first chunks read only text they have not seen. Prints one JSON line per engine: the
# perplexity, the seconds and the peak RSS. Not part of CI.
# Usage: scripts/perplexity-long.sh MODEL CTX CHUNKS [LLAMA_BUILD_DIR] [CACHE_TYPE] [THREADS]
set -euo pipefail
cd "$(dirname "$0")/.."
model="$1"; ctx="$2"; chunks="$3"; build="${4:-/tmp/llamacpp-levels/build-avx2}"
cache="${5:-f16}"; threads="${6:-$(nproc)}"
bin=./target/release/bantam
file=$($bin show "$model" | awk '$1 == "file" {print $2; exit}')
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for i in 1 2; do find /usr/share/common-licenses -type f | sort | xargs cat; done > "$work/text.txt"
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')
report() { # ENGINE LOG
    python3 - "$1" "$2" "$model" "$ctx" "$chunks" "$cache" "$cpu" <<'PY'
import json, re, sys
engine, log, model, ctx, chunks, cache, cpu = sys.argv[1:]
text = open(log, errors="replace").read()
ppl = re.findall(r"PPL = ([0-9.]+)", text)
secs = re.search(r"elapsed_s ([0-9.]+)", text)
rss = re.search(r"peak_rss_kib (\d+)", text)
print(json.dumps({"engine": engine, "model": model, "ctx": int(ctx), "chunks": int(chunks), "cache": cache,
                  "ppl": float(ppl[-1]) if ppl else None, "seconds": float(secs.group(1)),
                  "peak_rss_mib": round(int(rss.group(1)) / 1024, 1), "cpu": cpu}))
PY
}
/usr/bin/time -f 'elapsed_s %e peak_rss_kib %M' $bin perplexity "$model" "$work/text.txt" -c "$ctx" --chunks "$chunks" \
    --kv-cache-type "$cache" -t "$threads" > "$work/bantam.log" 2>&1
report bantam "$work/bantam.log"
LD_LIBRARY_PATH="$build/bin" /usr/bin/time -f 'elapsed_s %e peak_rss_kib %M' "$build/bin/llama-perplexity" -m "$file" \
    -f "$work/text.txt" -c "$ctx" --chunks "$chunks" -b "$ctx" -fa on -ctk "$cache" -ctv "$cache" -t "$threads" \
    > "$work/llama.log" 2>&1
report llama.cpp "$work/llama.log"
