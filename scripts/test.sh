#!/usr/bin/env bash
# The test command: build bantam, pull the real test models with it (into the store,
# $BANTAM_MODELS, default ~/.bantam/models, outside the work tree), run every test of the workspace in release mode
# (reference tests one at a time: each already uses both cores), then drive a real
# `bantam serve` on 127.0.0.1 with the official `openai` and `ollama` Python clients.
# Both suites always run; any failure fails the command.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p bantam
bash scripts/fetch-models.sh
status=0
cargo test --workspace --release --no-fail-fast -- --test-threads=1 || status=1
export PIP_BREAK_SYSTEM_PACKAGES=1 PIP_DISABLE_PIP_VERSION_CHECK=1
python3 -m pip install -q -r tests/python/requirements.txt || python3 -m pip install -q --user -r tests/python/requirements.txt
python3 -m pytest -q tests/python || status=1
if [ "$status" -ne 0 ]; then echo "TESTS FAILED" >&2; fi
exit "$status"
