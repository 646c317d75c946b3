#!/usr/bin/env bash
# The test command: fetch the real test models (cached in $BANTAM_MODELS, default
# ~/.bantam/models, outside the work tree), then run every test of the workspace in release
# mode. Reference tests run one at a time: each already uses both cores.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/fetch-models.sh
cargo test --workspace --release --no-fail-fast -- --test-threads=1
