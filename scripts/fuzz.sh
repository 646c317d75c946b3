#!/usr/bin/env bash
# Run the cargo-fuzz targets of fuzz/ for a while each; fail on any crash.
#
#   scripts/fuzz.sh                  # every target, FUZZ_SECONDS (default 30) each
#   scripts/fuzz.sh gguf_parse       # just these targets
#
# Each target starts from its committed seeds (fuzz/seeds/<target>, read only) plus what
# earlier runs found (fuzz/corpus/<target>, git-ignored; libFuzzer writes new inputs to the
# first directory it is given). A crash, timeout (FUZZ_TIMEOUT seconds for one input,
# default 25) or out-of-memory input is saved under fuzz/artifacts/<target>/ and printed;
# the script then exits non-zero. Reproduce one with
# `cargo +nightly fuzz run <target> <artifact>`, and make it a test.
#
# cargo-fuzz needs a nightly compiler. Without a nightly toolchain (or with
# FUZZ_TOOLCHAIN=stable) the stable one is used with RUSTC_BOOTSTRAP=1, which cargo-fuzz
# supports. cargo-fuzz itself is installed if missing.
set -uo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-30}
timeout=${FUZZ_TIMEOUT:-25}

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked || { echo "fuzz.sh: cannot install cargo-fuzz" >&2; exit 1; }
fi

# RUSTUP_AUTO_INSTALL=0: asking about nightly must not download it.
if [ "${FUZZ_TOOLCHAIN:-}" != stable ] && RUSTUP_AUTO_INSTALL=0 cargo +nightly --version >/dev/null 2>&1; then
    fuzz=(cargo +nightly fuzz)
    echo "== toolchain: $(cargo +nightly --version)"
else
    export RUSTC_BOOTSTRAP=1
    fuzz=(cargo fuzz)
    echo "== toolchain: $(cargo --version) with RUSTC_BOOTSTRAP=1 (no nightly toolchain)"
fi

if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <("${fuzz[@]}" list)
fi
[ ${#targets[@]} -gt 0 ] || { echo "fuzz.sh: no fuzz targets found" >&2; exit 1; }

start=$(date +%s)
echo "== building ${targets[*]}"
for t in "${targets[@]}"; do
    "${fuzz[@]}" build "$t" || { echo "fuzz.sh: building $t failed" >&2; exit 1; }
done
echo "== built in $(($(date +%s) - start))s"

marker=$(mktemp)
trap 'rm -f "$marker"' EXIT
failed=()
for t in "${targets[@]}"; do
    corpus=fuzz/corpus/$t
    seeds=fuzz/seeds/$t
    mkdir -p "$corpus" "fuzz/artifacts/$t"
    [ -d "$seeds" ] || { echo "fuzz.sh: warning: no seeds in $seeds" >&2; seeds=; }
    echo "== $t: ${seconds}s"
    t0=$(date +%s)
    touch "$marker"
    # libFuzzer's progress lines go to a log; its final statistics (and a failure's log) are printed.
    log=fuzz/artifacts/$t/last-run.log
    "${fuzz[@]}" run "$t" "$corpus" ${seeds:+"$seeds"} -- -max_total_time="$seconds" -timeout="$timeout" -print_final_stats=1 >"$log" 2>&1
    rc=$?
    grep -E '^(stat::|Done )' "$log"
    echo "== $t: exit $rc after $(($(date +%s) - t0))s"
    if [ $rc -ne 0 ]; then
        failed+=("$t")
        grep -vE '^#[0-9]+' "$log" | tail -n 60 >&2
        found=$(find "fuzz/artifacts/$t" -type f -newer "$marker")
        if [ -n "$found" ]; then
            echo "fuzz.sh: $t failed; input(s) saved:" >&2
            sed 's/^/  /' <<<"$found" >&2
        else
            echo "fuzz.sh: $t failed (exit $rc) without saving an input" >&2
        fi
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "FUZZING FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "== all targets ran clean"
