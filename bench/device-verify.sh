#!/usr/bin/env bash
# One call on the GPU machine: every GPU check (samples + tessera-kernels cases), a full
# `tessera autotune` into a fresh SQLite database (timed), the same command again (nothing
# stale: should take seconds), the database exported, and a few kernel benchmarks.
# Usage (repo root there, release binary in .bin/): bench/device-verify.sh [bench-kernels --only list]
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
BIN=${TESSERA_BIN:-.bin/tessera}
ONLY=${1:-topk,tree}
DB="sqlite://$OUT/tune.db"
$BIN doctor 2>&1 | tee "$OUT/doctor.log"
$BIN kernels > "$OUT/kernels-list.log" 2>&1
timeout 200 $BIN check --suite all > "$OUT/check.log" 2>&1
echo "== check exit code: $?"
grep -E "^(ok|FAIL)" "$OUT/check.log" | awk '{print $1}' | sort | uniq -c
grep -E "^FAIL" "$OUT/check.log" | head -20
start=$(date +%s)
timeout 330 $BIN autotune --db "$DB" > "$OUT/autotune.log" 2> "$OUT/autotune.err"
echo "== autotune exit code: $? in $(( $(date +%s) - start )) s"
start=$(date +%s)
timeout 60 $BIN autotune --db "$DB" > "$OUT/autotune2.log" 2> "$OUT/autotune2.err"
echo "== second autotune exit code: $? in $(( $(date +%s) - start )) s"
$BIN db export --db "$DB" --format json > "$OUT/tune.json" 2> "$OUT/export.err"
$BIN db list --db "$DB" > "$OUT/db-list.log" 2>&1
if [ -n "$ONLY" ]; then
    timeout 150 $BIN bench-kernels --only "$ONLY" --json "$OUT/kernels.json" > "$OUT/kernels.log" 2> "$OUT/kernels.err"
    echo "== bench-kernels exit code: $?"
fi
command -v postgres psql pg_ctl > "$OUT/pg.log" 2>&1; ls /usr/lib/postgresql >> "$OUT/pg.log" 2>&1
echo "== autotune summary"; tail -40 "$OUT/autotune.log"
echo "== bench"; tail -15 "$OUT/kernels.log" 2>/dev/null
