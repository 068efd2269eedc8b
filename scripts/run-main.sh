#!/usr/bin/env bash
# The main job: on a machine with a GPU it reports the environment (`tessera doctor`),
# autotunes the kernels into the tuning database (SQLite in the cache folder unless
# TESSERA_DB says otherwise; keys already tuned are skipped) and checks every sample and
# attention kernel against its reference (`tessera check`).
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

step "tessera autotune"
target/release/tessera autotune

step "tessera check"
target/release/tessera check
