#!/usr/bin/env bash
# A/B of the padded fragment layouts (TESSERA_FRAGMENT_PAD=1, off by default until this
# has passed on a GPU): the GPU checks with padding on (every decode kernel then keeps its
# scores, softmax statistics and accumulator in mma fragments), then the decode benchmarks
# with padding on and off in the same call. Flip the default in codegen/src/emit/layout.rs
# (`Fragment::padding_enabled`) only if the checks pass and the padded rows are faster.
# Usage (repo root on the GPU machine, release binary in .bin/ or .bin/tessera.xz):
#   bench/fragment-pad-ab.sh [workloads, default dense_B8,dense_B1,sink,block_sparse]
set -uo pipefail
OUT=${OUT:-/tmp/out}
L="$OUT/logs"
mkdir -p "$L"
BIN=${TESSERA_BIN:-.bin/tessera}
[ -x "$BIN" ] || { xz -dkf .bin/tessera.xz && chmod +x .bin/tessera; }
W=${1:-dense_B8,dense_B1,sink,block_sparse}
TESSERA_FRAGMENT_PAD=1 timeout 60 $BIN check --suite small > "$L/pad-check-small.log" 2>&1
echo "== check small (padded): rc $?"
TESSERA_FRAGMENT_PAD=1 timeout ${CHECK_TIMEOUT:-200} $BIN check --suite kernels > "$L/pad-check.log" 2>&1
echo "== check kernels (padded): rc $?"
grep -hE "^(ok|FAIL)" "$L"/pad-check*.log | awk '{print $1}' | sort | uniq -c
grep -hE "^FAIL" "$L"/pad-check*.log | head -12 | cut -c1-160
for pad in 1 0; do
    TESSERA_FRAGMENT_PAD=$pad timeout $(( ${BUDGET:-60} + 60 )) $BIN bench-kernels --only "$W" \
        --budget-s "${BUDGET:-60}" --iters 20 --json "$L/pad$pad.json" > "$L/pad$pad.log" 2>&1
    echo "== bench-kernels TESSERA_FRAGMENT_PAD=$pad: rc $?"
    grep -A8 "^workload" "$L/pad$pad.log" | cut -c1-170
done
