#!/usr/bin/env bash
# The last GPU call of a session (repo root there, release binary in .bin/ or .bin/tessera.xz):
# 1. the GPU checks (sample problems vs the interpreter + every tessera-kernels case);
# 2. `tessera bench-kernels` (decode kernels at the PEERS.md shapes);
# 3. `tessera bench-selection` (HiP, centroids, SnapKV, k-means);
# 4. `tessera autotune` into a fresh SQLite database (timed, within AUTOTUNE_BUDGET), the
#    same command again (nothing stale: seconds), the database exported as JSON (for a
#    PostgreSQL import elsewhere).
# Logs under $OUT/logs, packed into one archive; a short summary last. Budgets are env knobs;
# SKIP (comma list of check, kernels, selection, autotune) leaves steps out; CHECK_ONLY
# restricts the checks (`tessera check --only`); KERNELS_ONLY
# restricts bench-kernels (`--only`), KERNELS_FLAGS adds flags to it (e.g. `--min-blocks 3`); RECALL=1 runs `tessera recall` (CPU) in the background.
set -uo pipefail
OUT=${OUT:-/tmp/out}
L="$OUT/logs"
mkdir -p "$L"
BIN=${TESSERA_BIN:-.bin/tessera}
[ -x "$BIN" ] || { xz -dkf .bin/tessera.xz && chmod +x .bin/tessera; }
SKIP=",${SKIP:-},"
want() { [[ "$SKIP" != *",$1,"* ]]; }
$BIN doctor > "$L/doctor.log" 2>&1
recall_pid=
if [ "${RECALL:-0}" = 1 ]; then
    ( start=$(date +%s); timeout ${RECALL_TIMEOUT:-500} nice -n 19 $BIN recall > "$L/recall.log" 2> "$L/recall.err"
      echo "recall: rc $? in $(( $(date +%s) - start )) s" >> "$L/recall.err" ) &
    recall_pid=$!
fi
if want check; then
timeout 120 $BIN check --suite small ${CHECK_ONLY:+--only "$CHECK_ONLY"} > "$L/check-small.log" 2>&1; echo "== check small: rc $?"
timeout ${CHECK_TIMEOUT:-240} $BIN check --suite kernels ${CHECK_ONLY:+--only "$CHECK_ONLY"} > "$L/check-kernels.log" 2>&1; echo "== check kernels: rc $?"
grep -hE "^(ok|FAIL)" "$L"/check-*.log | awk '{print $1}' | sort | uniq -c
grep -hE "^FAIL" "$L"/check-*.log | head
fi
if want kernels; then
timeout $(( ${KERNELS_BUDGET:-100} + 60 )) $BIN bench-kernels --budget-s "${KERNELS_BUDGET:-100}" --iters 30 \
    ${KERNELS_ONLY:+--only "$KERNELS_ONLY"} ${KERNELS_FLAGS:-} \
    --json "$L/kernels.json" > "$L/kernels.log" 2> "$L/kernels.err"
echo "== bench-kernels: rc $?"
fi
if want selection; then
timeout $(( ${SELECTION_BUDGET:-120} + 90 )) $BIN bench-selection ${SELECTION_FLAGS:---quick} --budget-s "${SELECTION_BUDGET:-120}" \
    --json "$L/selection.json" > "$L/selection.log" 2> "$L/selection.err"
echo "== bench-selection: rc $?"
fi
if want autotune; then
DB="sqlite://$L/tune.db"
start=$(date +%s)
timeout $(( ${AUTOTUNE_BUDGET:-90} + 120 )) $BIN autotune --db "$DB" --budget "${AUTOTUNE_BUDGET:-90}s" \
    --iters "${AUTOTUNE_ITERS:-15}" > "$L/autotune.log" 2> "$L/autotune.err"
echo "== autotune: rc $? in $(( $(date +%s) - start )) s"
start=$(date +%s)
timeout 60 $BIN autotune --db "$DB" --budget "${AUTOTUNE_BUDGET:-90}s" > "$L/autotune2.log" 2> "$L/autotune2.err"
echo "== second autotune: rc $? in $(( $(date +%s) - start )) s"
$BIN db export --db "$DB" --format json -o "$L/tune.json" 2> "$L/export.err"
$BIN db list --db "$DB" > "$L/db-list.log" 2>&1
fi
# GPU test binaries carried in .bin/ as gpu_<name>.xz (stripped `cargo test --no-run`
# outputs of tests/gpu_*.rs): run with the GPU tests on and the carried tessera binary.
for t in .bin/gpu_*.xz; do
    [ -f "$t" ] || continue
    b=${t%.xz}; name=$(basename "$b")
    xz -dkf "$t" && chmod +x "$b"
    TESSERA_GPU_TESTS=1 TESSERA_BIN="$(realpath "$BIN")" timeout 180 "$b" > "$L/$name.log" 2>&1
    echo "== $name test: rc $?"; grep -E "^test |test result" "$L/$name.log"
done
if [ -n "$recall_pid" ]; then wait "$recall_pid"; tail -1 "$L/recall.err"; fi
tar czf "$OUT/final-logs.tgz" -C "$OUT" logs
echo "== kernels"; grep -B2 -A16 "^workload" "$L/kernels.log" | head -20
echo "== selection"; tail -24 "$L/selection.log"
echo "== autotune"; grep -A40 "^kernel " "$L/autotune.log" | head -42
[ -f "$L/recall.log" ] && { echo "== recall"; tail -30 "$L/recall.log"; }
