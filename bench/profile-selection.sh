#!/usr/bin/env bash
# Per-kernel GPU time of the selection pipelines (HiP, SnapKV, centroids, k-means) under
# ncu (hardware timer per launch, --clock-control none), one configuration each, no f64
# reference. Prints the median duration per kernel name; the raw CSV goes to $OUT.
# Usage (repo root on the GPU machine): bench/profile-selection.sh [--only list]
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
BIN=${TESSERA_BIN:-.bin/tessera}
[ -x "$BIN" ] || { xz -dkf .bin/tessera.xz && chmod +x .bin/tessera; }
timeout ${PROFILE_TIMEOUT:-300} ncu --clock-control none --metrics gpu__time_duration.sum --csv \
    -k 'regex:^(snapkv|hip|centroid|kmeans|block_sparse|attn_combine|dense)' \
    "$BIN" bench-selection --quick --no-reference --iters 3 --warmup 1 --kmeans-iters 1 "$@" \
    > "$OUT/ncu.csv" 2> "$OUT/ncu.err"
echo "== ncu rc $?"
python3 - "$OUT/ncu.csv" <<'PY'
import csv, sys, statistics, collections
rows = [l for l in open(sys.argv[1]) if l.startswith('"')]
times = collections.OrderedDict()
for r in csv.DictReader(rows):
    if r.get("Metric Name") != "gpu__time_duration.sum":
        continue
    name = r["Kernel Name"].split("(")[0]
    v = float(r["Metric Value"].replace(",", ""))
    unit = r.get("Metric Unit", "ns")
    us = v / 1000 if unit in ("nsecond", "ns") else v if unit in ("usecond", "us") else v * 1000
    key = (name, r.get("Grid Size", ""))
    times.setdefault(key, []).append(us)
print(f"{'kernel':34} {'grid':>18} {'n':>4} {'median us':>10}")
for (name, grid), v in times.items():
    print(f"{name[:34]:34} {grid:>18} {len(v):4d} {statistics.median(v):10.1f}")
PY
tail -5 "$OUT/ncu.err"
