#!/usr/bin/env bash
# One call on the GPU machine: doctor, the GPU check of every sample, the flash-decode
# benchmark and its peers, a summary table last. Full logs go to $OUT.
# Usage (from the repo root there): bench/device-run.sh [bench shapes]
# KERNELS=1 also runs `tessera bench-kernels` (the tessera-kernels ops at the PEERS.md
# shapes), bench/peers/kernel_peers.py and bench/summary_kernels.py after the usual flow;
# KERNELS=only runs just those (fits one 10-minute device call).
set -uo pipefail
KERNELS=${KERNELS:-0}
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
BIN=${TESSERA_BIN:-.bin/tessera}
SHAPES=${1:-8x32768,1x131072,8x131072}
if [ "$KERNELS" != only ]; then
$BIN doctor 2>&1 | tee "$OUT/doctor.log"
$BIN check 2>&1 | tee "$OUT/check.log"
check_rc=${PIPESTATUS[0]}
$BIN bench --shapes "$SHAPES" --json "$OUT/bench.json" 2>"$OUT/bench.err" | tee "$OUT/bench.log"
PYTHONUNBUFFERED=1 timeout 300 python3 bench/peers/decode_peers.py "$OUT/peers.json" 2>&1 | tee "$OUT/peers.log" | grep -v Warning
echo "== check exit code: $check_rc"
grep -E "^(ok|FAIL)" "$OUT/check.log" | awk '{print $1}' | sort | uniq -c
python3 bench/summary.py "$OUT/bench.json" "$OUT/peers.json"
fi
if [ "$KERNELS" != 0 ]; then
    timeout 330 $BIN bench-kernels --json "$OUT/kernels.json" 2>"$OUT/kernels.err" | tee "$OUT/kernels.log"
    echo "== bench-kernels exit code: ${PIPESTATUS[0]} (per-configuration sweep in kernels.err)"
    PYTHONUNBUFFERED=1 timeout 240 python3 bench/peers/kernel_peers.py "$OUT/kernel_peers.json" \
        2>"$OUT/kernel_peers.err" | tee "$OUT/kernel_peers.log"
    echo "== kernel_peers exit code: ${PIPESTATUS[0]}"
    python3 bench/summary_kernels.py "$OUT/kernels.json" "$OUT/kernel_peers.json" "$OUT/peers.json" "$OUT/bench.json"
fi
