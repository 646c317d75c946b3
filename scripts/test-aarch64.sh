#!/usr/bin/env bash
# The aarch64 build, run under qemu-user: a cross build with Debian's aarch64 gcc as the
# linker; the kernels' tests (every NEON kernel against its scalar twin) on two emulated
# CPUs, qemu's `max` (NEON with the dot-product extension and the 8-bit matrix multiply, so
# all three levels) and a Cortex-A57 (NEON only); and one real model's greedy continuations
# against llama.cpp's at the best level. Needs the models fetched (scripts/fetch-models.sh);
# installs the target and the Debian packages it lacks.
set -euo pipefail
cd "$(dirname "$0")/.."
target=aarch64-unknown-linux-gnu
rustup target list --installed | grep -qx "$target" || rustup target add "$target"
if ! command -v qemu-aarch64 >/dev/null || ! command -v aarch64-linux-gnu-gcc >/dev/null; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
        gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user >/dev/null
fi
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
runner() { echo "qemu-aarch64 -cpu $1 -L /usr/aarch64-linux-gnu"; }
# BANTAM_EXPECT_ISAS makes the kernels' tests fail if a level is missing, so an emulator
# that lost a feature cannot pass by testing less.
CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER=$(runner max) BANTAM_EXPECT_ISAS=neon,neon-dotprod,neon-i8mm \
    cargo test --release --target "$target" -p kernels
CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER=$(runner cortex-a57) BANTAM_EXPECT_ISAS=neon \
    cargo test --release --target "$target" -p kernels
CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER=$(runner max) \
    cargo test --release --target "$target" -p model --test greedy smollm2
