#!/usr/bin/env bash
# Where the time goes: `perf record` over `bantam bench` for one model at one instruction-set
# level, separately for a 128-token prompt and for 64 generated tokens; prints each test's
# functions above 1% of the samples. Needs perf (linux-perf); not part of CI.
# Usage: scripts/profile.sh MODEL [LEVEL] [THREADS]
set -euo pipefail
cd "$(dirname "$0")/.."
model="$1"; level="${2:-}"; threads="${3:-2}"
file=$(./target/release/bantam show "$model" | awk '$1 == "file" {print $2; exit}')
data=$(mktemp)
trap 'rm -f "$data"' EXIT
for test in "-p 128 -n 0" "-p 0 -n 64"; do
    echo "== $model ${level:-native} $test -t $threads"
    # shellcheck disable=SC2086
    BANTAM_ISA="$level" perf record -q -o "$data" ./target/release/bantam bench "$file" $test -t "$threads" -r 10 >/dev/null 2>&1
    perf report -i "$data" --no-children --sort sym --percent-limit 1 --stdio 2>/dev/null | grep -E '^ +[0-9]'
done
