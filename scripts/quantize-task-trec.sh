#!/usr/bin/env bash
# `quantize --auto` held to a task: the TREC question classifier of scripts/finetune-trec.sh
# (smollm2:135m with its LoRA adapter merged into F16 weights) quantized to the smallest
# file whose KL divergence on held-out text meets --max-kld, once on that bar alone and once
# also keeping TREC accuracy within --max-accuracy-drop of the F16 model's. Prints both
# results and each file's accuracy measured again by `bantam eval`; then the accuracy of
# each uniform type, the task column of the quantization table. Not part of CI.
# Usage: scripts/quantize-task-trec.sh [MAX_KLD] [MAX_DROP] [DIR]   (run finetune-trec.sh first)
set -euo pipefail
cd "$(dirname "$0")/.."
kld="${1:-0.3}"; drop="${2:-1%}"; dir="${3:-/tmp/finetune-trec}"
B=./target/release/bantam
labels=abbreviation,description,entity,human,location,number
args="--kind classify --labels $labels"
text=/usr/share/common-licenses/GPL-3
[ -f "$dir/adapter.gguf" ] || { echo "run scripts/finetune-trec.sh first" >&2; exit 1; }
$B quantize --allow-requantize smollm2:135m "$dir/base-f16.gguf" F16 >/dev/null
$B merge "$dir/base-f16.gguf" "$dir/adapter.gguf" -o "$dir/merged-f16.gguf"
start=$(date +%s)
$B quantize "$dir/merged-f16.gguf" "$dir/auto-kld.gguf" --auto --max-kld "$kld" --calibration "$text" 2>"$dir/auto-kld.log"
echo "KLD bar alone: $(( $(date +%s) - start )) s"
start=$(date +%s)
$B quantize "$dir/merged-f16.gguf" "$dir/auto-task.gguf" --auto --max-kld "$kld" --calibration "$text" \
    --task "$dir/test.jsonl" --task-args "$args" --max-accuracy-drop "$drop" 2>"$dir/auto-task.log"
echo "KLD bar and task: $(( $(date +%s) - start )) s"
grep -E '^  [A-Z]' "$dir/auto-task.log" || true
# shellcheck disable=SC2086
$B eval "$dir/test.jsonl" $args --models "$dir/merged-f16.gguf,$dir/auto-kld.gguf,$dir/auto-task.gguf" --json "$dir/auto-eval.json" >/dev/null
python3 - "$dir" <<'PY'
import json, os, sys
d = sys.argv[1]
for m in json.load(open(f"{d}/auto-eval.json"))["models"]:
    print(f"{os.path.basename(m['model']):<18} {os.path.getsize(m['model']) / 2**20:8.2f} MiB  accuracy {100 * m['accuracy']:.1f}%")
PY
# The task column: each type's accuracy on the same questions.
models="$dir/merged-f16.gguf"
for t in Q2_K Q3_K_M Q4_0 Q4_K_M Q5_K_M Q6_K Q8_0; do
    $B quantize "$dir/merged-f16.gguf" "$dir/merged-$t.gguf" "$t" >/dev/null
    models="$models,$dir/merged-$t.gguf"
done
# shellcheck disable=SC2086
$B eval "$dir/test.jsonl" $args --models "$models" --json "$dir/types-eval.json" >/dev/null
python3 - "$dir" <<'PY'
import json, os, sys
d = sys.argv[1]
for m in json.load(open(f"{d}/types-eval.json"))["models"]:
    print(json.dumps({"file": os.path.basename(m["model"]), "mib": round(os.path.getsize(m["model"]) / 2**20, 2), "accuracy": m["accuracy"], "accuracy_ci": m["accuracy_ci"]}))
PY
