#!/usr/bin/env bash
# The test command, in tiers; every tier always runs and any failure fails the command.
#  1. Guards on the code: rustfmt, clippy (warnings are errors), rustdoc (warnings are errors).
#  2. The hermetic tier: tests that write their own tiny models and download nothing, run
#     with the default test threads while the real models are fetched beside them.
#  3. The reference tier: every test of the workspace in release mode against the real
#     models (one test at a time: each already uses both cores), and the greedy references
#     again at each lower instruction-set level; the aarch64 cross build under qemu-user
#     (scripts/test-aarch64.sh).
#  4. A real `bantam serve` on 127.0.0.1 driven by the official `openai` and `ollama`
#     Python clients, and `bantam eval` end to end (its HTML report in a headless
#     Chromium, from the distribution's packages).
#  5. A short run of every fuzz target (FUZZ_SECONDS each, default 20).
# Models go to the store ($BANTAM_MODELS, default ~/.bantam/models, outside the work tree).
set -uo pipefail
cd "$(dirname "$0")/.."
failed=()
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
# Each tier's output is shown as it runs and kept, so that the failures can be shown again
# at the very end, where a CI log's tail will have them.
step() {
    local name=$1
    shift
    echo "=== $name"
    local log
    log="$logs/${#failed[@]}-$(date +%s%N).log"
    if ! "$@" 2>&1 | tee "$log"; then
        failed+=("$name")
        cp "$log" "$logs/failed-${#failed[@]}.log"
        echo "=== $name FAILED" >&2
    fi
}
summarise_failures() {
    local i=1
    for name in "${failed[@]}"; do
        echo "=== what failed in: $name" >&2
        grep -E -- '^(test .* FAILED|---- |thread .* panicked|failures:|error(\[|:)|    [a-z_:]+$|FAILED|E   |[A-Za-z_/.]+\.py:[0-9]+:)' "$logs/failed-$i.log" | tail -n 80 >&2
        echo "--- last lines:" >&2
        tail -n 40 "$logs/failed-$i.log" >&2
        i=$((i + 1))
    done
}

step "rustfmt" cargo fmt --all --check
step "clippy" cargo clippy --workspace --all-targets -- -D warnings
step "rustdoc" env RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --workspace --quiet

cargo build --release -p bantam || { echo "TESTS FAILED: build" >&2; exit 1; }

# The real models download while the hermetic tier runs.
fetch_log=$(mktemp)
bash scripts/fetch-models.sh >"$fetch_log" 2>&1 &
fetch_pid=$!
step "hermetic: crates without models" cargo test --release --no-fail-fast -p gguf -p kernels -p protocol -p store -p registry
step "hermetic: unit tests" cargo test --release --no-fail-fast -p tokenizer -p model -p server --lib
step "hermetic: tiny model" cargo test --release -p model --test tiny
step "hermetic: engine" cargo test --release -p engine --test thinking --test no_alloc --test no_alloc_engine
step "hermetic: tokenizer metadata" cargo test --release -p tokenizer --test metadata
step "hermetic: convert" cargo test --release -p convert --lib --test hermetic
step "hermetic: quantize" cargo test --release -p quant --lib --test errors
step "hermetic: quantize against llama-quantize (tiny model)" cargo test --release -p quant --test llama_quantize tiny
if wait "$fetch_pid"; then
    cat "$fetch_log"
else
    cat "$fetch_log"
    echo "TESTS FAILED: fetching the models" >&2
    exit 1
fi

step "reference tier" cargo test --workspace --release --no-fail-fast -- --test-threads=1
# The greedy references again with the kernels capped to each lower instruction-set level
# (BANTAM_ISA; a level the CPU lacks falls back to the next one down). The kernels' own
# tests already compare every level the CPU has.
for level in avx-vnni avx2 scalar; do
    step "reference greedy at $level" env BANTAM_ISA=$level cargo test --release -p model --test greedy
done
# And at AVX2 with prompts through the other two prompt paths instead of the int8 one: the
# dense path (f32 rows), then the integer tiles.
step "reference greedy at avx2, dense prompts" env BANTAM_ISA=avx2 BANTAM_GEMM_PROMPTS=0 cargo test --release -p model --test greedy
step "reference greedy at avx2, integer tiles" env BANTAM_ISA=avx2 BANTAM_GEMM_PROMPTS=0 BANTAM_DENSE_PROMPTS=0 cargo test --release -p model --test greedy
step "aarch64 under qemu-user" bash scripts/test-aarch64.sh

export PIP_BREAK_SYSTEM_PACKAGES=1 PIP_DISABLE_PIP_VERSION_CHECK=1
python3 -m pip install -q -r tests/python/requirements.txt || python3 -m pip install -q --user -r tests/python/requirements.txt
if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium; } >/dev/null \
        || echo "cannot install chromium with apt-get: the HTML report test will fail" >&2
fi
step "python clients" python3 -m pytest -q tests/python

step "fuzz" env FUZZ_SECONDS="${FUZZ_SECONDS:-20}" bash scripts/fuzz.sh

if [ ${#failed[@]} -ne 0 ]; then
    summarise_failures
    echo "TESTS FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "all tests passed"
