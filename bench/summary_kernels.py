"""Tessera's kernel ops beside the PyTorch peers of the same run (and PEERS.md's Triton).

Usage: summary_kernels.py KERNELS.json KERNEL_PEERS.json [DECODE_PEERS.json] [BENCH.json]
  KERNELS.json       `tessera bench-kernels --json`
  KERNEL_PEERS.json  bench/peers/kernel_peers.py
  DECODE_PEERS.json  bench/peers/decode_peers.py (dense SDPA/FlexAttention, optional)
  BENCH.json         `tessera bench --json` (the sample flash-decode, optional)
Missing or unreadable files are skipped.
"""
import json
import sys

# PEERS.md (H200, 2026-11-28): hand-written Triton figures and the targets, in µs.
TRITON = {"dense_B1": 138, "dense_B8": 940, "sink_window_B8": 50.0, "block_sparse_B8": 80.3,
          "tree_T16_B1": 150.6, "tree_T64_B1": 318}
TARGET = {"dense_B1": 130, "dense_B8": 940, "sink_window_B8": 35, "block_sparse_B8": 65,
          "topk_select_B8_bs64": 30, "topk_select_B8_bs128": 30, "tree_T16_B1": 140, "tree_T64_B1": 290}
DENSE_SHAPES = {"1x131072": "dense_B1", "8x131072": "dense_B8"}


def load(i):
    if len(sys.argv) <= i:
        return []
    try:
        with open(sys.argv[i]) as f:
            return json.load(f)
    except Exception as e:  # noqa: BLE001
        print(f"(skipping {sys.argv[i]}: {e})")
        return []


ours = load(1)
peers = [p for p in load(2) if isinstance(p, dict)]
for p in load(3):  # decode_peers: {"peer", "shape", ...}
    if p.get("shape") in DENSE_SHAPES:
        peers.append({**p, "workload": DENSE_SHAPES[p["shape"]], "peer": p["peer"] + "(decode_peers)"})
sample = {DENSE_SHAPES[r["shape"]]: r for r in load(4) if r.get("shape") in DENSE_SHAPES}

fmt = lambda x: f"{x:9.1f}" if isinstance(x, (int, float)) else f"{'-':>9}"  # noqa: E731
print(f"\n{'workload':<27} {'tessera':>9} {'TB/s':>6} {'check':>6} {'best peer':>9} {'(which)':<26} "
      f"{'Triton*':>9} {'target':>7} {'peer/tess':>9}")
for r in ours:
    w = r["workload"]
    ps = [p for p in peers if p.get("workload") == w and "median_us" in p]
    best = min(ps, key=lambda p: p["median_us"]) if ps else None
    us = r.get("median_us")
    ratio = f"{best['median_us'] / us:.2f}x" if best and us else "-"
    tb = f"{r['tb_per_s']:6.2f}" if r.get("tb_per_s") else f"{'-':>6}"
    check = "ok" if r.get("ok") else "WRONG" if us else "-"
    print(f"{w:<27} {fmt(us)} {tb} {check:>6} {fmt(best and best['median_us'])} "
          f"{(best['peer'] if best else '-'):<26} {fmt(TRITON.get(w))} {fmt(TARGET.get(w))[2:]:>7} {ratio:>9}")
print("  * Triton: PEERS.md, measured on the H200 on 2026-11-28, not in this run.")

print("\nevery peer:")
for r in ours:
    w = r["workload"]
    line = [f"tessera {r.get('median_us')} µs ({r.get('config', r.get('error', ''))})"]
    if w in sample:
        line.append(f"tessera bench sample flash_decode {sample[w]['median_us']} µs")
    for p in peers:
        if p.get("workload") == w:
            fig = f"{p['median_us']} µs" if "median_us" in p else f"ERROR {p.get('error', '')[:120]}"
            extra = f" [{p['tflop_per_s']} TFLOP/s]" if "tflop_per_s" in p else ""
            note = f" — {p['note']}" if p.get("note") else ""
            line.append(f"{p['peer']}: {fig}{extra}{note}")
    print(f"  {w}:\n    " + "\n    ".join(line))
for p in peers:
    if p.get("workload") not in {r["workload"] for r in ours}:
        fig = p.get("median_us", "ERROR " + p.get("error", "")[:120])
        print(f"  (peer without a tessera row) {p.get('workload')} {p.get('peer')}: {fig}")
