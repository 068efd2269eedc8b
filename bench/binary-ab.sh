#!/usr/bin/env bash
# A/B of two tessera builds in one device call: the GPU checks on the new build, then the
# same benchmarks on both, interleaved (base, new, base, new) so clock or thermal drift
# shows up as a base-vs-base difference instead of a fake gain.
# Usage (repo root on the GPU machine; stripped, xz-compressed builds in .bin/):
#   BASE=.bin/base.xz NEW=.bin/tessera.xz bench/binary-ab.sh
# Knobs: ONLY (bench-kernels workloads), TILES (--decode-tiles), SELECTION (bench-selection
# --only; empty skips it), ROUNDS (default 1), SIDES (default "base new"), BUDGET (seconds
# per bench-kernels run),
# SKIP_CHECK=1.
set -uo pipefail
OUT=${OUT:-/tmp/out}
L="$OUT/logs"
mkdir -p "$L"
unpack() { local b=${1%.xz}; [ -x "$b" ] || { xz -dkf "$1" && chmod +x "$b"; }; echo "$b"; }
BASE_BIN=$(unpack "${BASE:-.bin/base.xz}")
NEW_BIN=$(unpack "${NEW:-.bin/tessera.xz}")
ONLY=${ONLY:-sink,block_sparse,dense,topk}
if [ "${SKIP_CHECK:-0}" != 1 ]; then
    timeout 90 "$NEW_BIN" check --suite small > "$L/check-small.log" 2>&1; echo "== check small (new): rc $?"
    timeout "${CHECK_TIMEOUT:-240}" "$NEW_BIN" check --suite kernels ${CHECK_ONLY:+--only "$CHECK_ONLY"} \
        > "$L/check-kernels.log" 2>&1
    echo "== check kernels (new): rc $?"
    grep -hE "^(ok|FAIL)" "$L"/check-*.log | awk '{print $1}' | sort | uniq -c
    grep -hE "^FAIL" "$L"/check-*.log | head -12 | cut -c1-200
fi
for round in $(seq "${ROUNDS:-1}"); do
    for side in ${SIDES:-base new}; do
        bin=$BASE_BIN; [ $side = new ] && bin=$NEW_BIN
        timeout $(( ${BUDGET:-60} + 60 )) "$bin" bench-kernels --only "$ONLY" ${TILES:+--decode-tiles "$TILES"} \
            --budget-s "${BUDGET:-60}" --iters 20 --json "$L/$side$round.json" > "$L/$side$round.log" 2>&1
        echo "== bench-kernels $side (round $round): rc $?"
        grep -A12 "^workload" "$L/$side$round.log" | cut -c1-170
        if [ -n "${SELECTION:-}" ]; then
            timeout 150 "$bin" bench-selection --only "$SELECTION" --budget-s 60 \
                --json "$L/sel-$side$round.json" > "$L/sel-$side$round.log" 2>&1
            echo "== bench-selection $side (round $round): rc $?"
            tail -8 "$L/sel-$side$round.log" | cut -c1-170
        fi
    done
done
