#!/usr/bin/env bash
# Detailed ncu sections (speed of light, occupancy, warp stalls, memory, source counters)
# for the first launch of each kernel matching $KERNELS in one `tessera` command.
# Usage (repo root on the GPU machine): KERNELS='regex:^tree_verify_split' \
#   bench/ncu-detail.sh bench-kernels --only tree --quick --no-reference --iters 1 --warmup 0
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
BIN=${TESSERA_BIN:-.bin/tessera}
[ -x "$BIN" ] || { xz -dkf .bin/tessera.xz && chmod +x .bin/tessera; }
timeout ${PROFILE_TIMEOUT:-300} ncu --clock-control none -k "${KERNELS:-regex:.}" -c "${COUNT:-1}" \
    --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
    --section SchedulerStats --section MemoryWorkloadAnalysis --section InstructionStats \
    --section SourceCounters "$BIN" "$@" > "$OUT/ncu-detail.txt" 2> "$OUT/ncu-detail.err"
echo "== ncu rc $?"
grep -E "^  [a-z_]+|Duration|Throughput|Registers Per|Achieved Occupancy|Theoretical Occupancy|Block Limit|Stall|Warp Cycles Per Issued|Issued Ipc|Dynamic Shared|Bank" "$OUT/ncu-detail.txt" | head -${LINES_MAX:-120}
tail -3 "$OUT/ncu-detail.err"
