#!/usr/bin/env bash
# The main job: on a machine with a GPU it will autotune the kernels and check them
# against the reference. For now it reports the environment (`tessera doctor`) and
# checks the kernels (`tessera check`).
#
#     scripts/run-main.sh
set -euo pipefail
cd "$(dirname "$0")/.."

step() { echo "==> $*" >&2; }

step "NVRTC and ptxas (scripts/setup-cuda.sh)"
eval "$(scripts/setup-cuda.sh)"

step "release build"
cargo build --release

step "tessera doctor"
target/release/tessera doctor

step "tessera check"
target/release/tessera check
