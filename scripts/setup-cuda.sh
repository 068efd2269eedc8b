#!/usr/bin/env bash
# Installs NVRTC (libnvrtc) and ptxas from NVIDIA's PyPI wheels into a private folder,
# then prints shell `export` lines for the caller to evaluate:
#
#     eval "$(scripts/setup-cuda.sh)"
#
# Only the export lines go to stdout; everything else goes to stderr.
# No GPU is needed: NVRTC and ptxas run on any x86-64 Linux machine.
#
# Folder: $TESSERA_CUDA_HOME, default ~/.cache/tessera/cuda. Idempotent: a marker file
# records the pinned versions, and a second run with the same pins installs nothing.
set -euo pipefail

# Version pin: keep 13.0.x. The H200 machine's driver (580) only loads PTX up to ISA 9.0,
# which is what NVRTC 13.0 emits; a newer NVRTC emits a newer ISA that the driver refuses.
# The same pin keeps PTX snapshots stable between CI and the H200 machine.
# No CUDA headers are installed: the emitted source is self-contained (no --include-path).
PACKAGES=(
    nvidia-cuda-nvrtc==13.0.88
    nvidia-cuda-nvcc==13.0.88
)

DIR="${TESSERA_CUDA_HOME:-$HOME/.cache/tessera/cuda}"
MARKER="$DIR/.tessera-cuda-versions"
WANT="${PACKAGES[*]}"
LIB_DIR="$DIR/nvidia/cu13/lib"
BIN_DIR="$DIR/nvidia/cu13/bin"

if [[ -f "$MARKER" && "$(cat "$MARKER")" == "$WANT" && -e "$LIB_DIR/libnvrtc.so.13" ]]; then
    echo "setup-cuda: $WANT already in $DIR" >&2
else
    echo "setup-cuda: installing $WANT into $DIR" >&2
    # Remove only what an earlier run of this script put there.
    mkdir -p "$DIR"
    rm -rf "$DIR/nvidia" "$DIR"/nvidia_cuda_*.dist-info "$MARKER"
    # pip's own progress goes to stderr so that stdout stays evaluable.
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps --target "$DIR" "${PACKAGES[@]}" >&2
    for f in "$LIB_DIR/libnvrtc.so.13" "$LIB_DIR/libnvrtc-builtins.so.13.0" "$BIN_DIR/ptxas"; do
        if [[ ! -e "$f" ]]; then
            echo "setup-cuda: $f is missing after the install" >&2
            exit 1
        fi
    done
    printf '%s' "$WANT" >"$MARKER"
fi

# libnvrtc loads libnvrtc-builtins by bare name, so the lib folder must be on the
# loader path (a full path to libnvrtc alone is not enough).
echo "export TESSERA_CUDA_LIB_DIR='$LIB_DIR'"
echo "export TESSERA_PTXAS='$BIN_DIR/ptxas'"
echo "export LD_LIBRARY_PATH='$LIB_DIR'\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
