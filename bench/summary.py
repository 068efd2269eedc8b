"""Prints Tessera's best flash-decode figures beside the peers of the same run."""
import json
import sys

ours = {r["shape"]: r for r in json.load(open(sys.argv[1]))}
peers = json.load(open(sys.argv[2])) if len(sys.argv) > 2 else []
print(f"{'shape':<12} {'tessera us':>11} {'TB/s':>6} {'sdpa us':>9} {'flex us':>9} {'sdpa/tessera':>13}")
for shape, r in ours.items():
    p = {x["peer"]: x for x in peers if x.get("shape") == shape and "median_us" in x}
    sdpa = p.get("sdpa", {}).get("median_us")
    flex = p.get("flex", {}).get("median_us")
    ratio = f"{sdpa / r['median_us']:.2f}x" if sdpa else "-"
    fmt = lambda x: f"{x:9.1f}" if x else f"{'-':>9}"
    print(f"{shape:<12} {r['median_us']:11.1f} {r['tb_per_s']:6.2f} {fmt(sdpa)} {fmt(flex)} {ratio:>13}")
