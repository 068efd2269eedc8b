#!/usr/bin/env bash
# The last GPU call of a session, part 1 (repo root there, release binary in .bin/):
# the GPU checks (sample problems vs the interpreter + every tessera-kernels case), a full
# `tessera autotune` into a fresh SQLite database (timed), the same command again (nothing
# stale), the database exported as JSON (for a PostgreSQL import elsewhere), and
# `tessera bench-selection` (HiP, centroids, SnapKV, k-means). Logs under $OUT, packed
# into one archive; a short summary last.
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT/logs"
L="$OUT/logs"
BIN=${TESSERA_BIN:-.bin/tessera}
[ -x "$BIN" ] || { xz -dkf .bin/tessera.xz && chmod +x .bin/tessera; }
DB="sqlite://$L/tune.db"
$BIN doctor > "$L/doctor.log" 2>&1
timeout 120 $BIN check --suite small > "$L/check-small.log" 2>&1; echo "== check small: rc $?"
timeout 150 $BIN check --suite kernels > "$L/check-kernels.log" 2>&1; echo "== check kernels: rc $?"
grep -hE "^(ok|FAIL)" "$L"/check-*.log | awk '{print $1}' | sort | uniq -c
grep -hE "^FAIL" "$L"/check-*.log | head
start=$(date +%s)
timeout ${AUTOTUNE_TIMEOUT:-300} $BIN autotune --db "$DB" --iters ${AUTOTUNE_ITERS:-20} > "$L/autotune.log" 2> "$L/autotune.err"
echo "== autotune: rc $? in $(( $(date +%s) - start )) s"
start=$(date +%s)
timeout 60 $BIN autotune --db "$DB" > "$L/autotune2.log" 2> "$L/autotune2.err"
echo "== second autotune: rc $? in $(( $(date +%s) - start )) s"
$BIN db export --db "$DB" --format json -o "$L/tune.json" 2> "$L/export.err"
$BIN db list --db "$DB" > "$L/db-list.log" 2>&1
timeout ${SELECTION_TIMEOUT:-150} $BIN bench-selection --json "$L/selection.json" > "$L/selection.log" 2> "$L/selection.err"
echo "== bench-selection: rc $?"
tar czf "$OUT/final-logs.tgz" -C "$OUT" logs
echo "== autotune summary"; grep -A30 "^kernel " "$L/autotune.log" | head -32
echo "== selection"; tail -20 "$L/selection.log"
