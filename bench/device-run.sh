#!/usr/bin/env bash
# One call on the GPU machine: doctor, the GPU check of every sample, the flash-decode
# benchmark and its peers, a summary table last. Full logs go to $OUT.
# Usage (from the repo root there): bench/device-run.sh [bench shapes]
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
BIN=${TESSERA_BIN:-.bin/tessera}
SHAPES=${1:-8x32768,1x131072,8x131072}
$BIN doctor 2>&1 | tee "$OUT/doctor.log"
$BIN check 2>&1 | tee "$OUT/check.log"
check_rc=${PIPESTATUS[0]}
$BIN bench --shapes "$SHAPES" --json "$OUT/bench.json" 2>"$OUT/bench.err" | tee "$OUT/bench.log"
PYTHONUNBUFFERED=1 timeout 300 python3 bench/peers/decode_peers.py "$OUT/peers.json" 2>&1 | tee "$OUT/peers.log" | grep -v Warning
echo "== check exit code: $check_rc"
grep -E "^(ok|FAIL)" "$OUT/check.log" | awk '{print $1}' | sort | uniq -c
python3 bench/summary.py "$OUT/bench.json" "$OUT/peers.json"
