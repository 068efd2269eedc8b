#!/usr/bin/env bash
# The one test command of the project (CI runs it through .ci/run):
#
#     scripts/test.sh
#
# Needs Rust (rustfmt and clippy included) and python3 with pip; no GPU.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { echo "==> $*" >&2; }

step "NVRTC and ptxas (scripts/setup-cuda.sh)"
eval "$(scripts/setup-cuda.sh)"

step "SmolLM2-135M-Instruct for the decoder tests (scripts/fetch-model.sh, cached)"
export TESSERA_MODEL_DIR=${TESSERA_MODEL_DIR:-$HOME/.cache/tessera/models}
scripts/fetch-model.sh "$TESSERA_MODEL_DIR" >/dev/null

# Snapshot tests must fail on a mismatch or a missing snapshot instead of writing new
# files: INSTA_UPDATE=no never writes, CI=true is what insta treats as a CI run.
export INSTA_UPDATE=no
export CI=true
unset INSTA_FORCE_PASS

step "formatting (cargo fmt --check)"
cargo fmt --all -- --check

step "lints (cargo clippy, warnings are errors)"
cargo clippy --workspace --all-targets -- -D warnings

step "tests (cargo test)"
cargo test --workspace

step "all checks passed"
