"""Side-by-side decode figures: `tessera decoder-check --json` and decoder_peer.py's JSON.

usage: summary_decoder.py DECODER.json [PEER.json]
"""
import json
import sys


def main(ours_path, peer_path=None):
    ours = json.load(open(ours_path))
    peer = {}
    if peer_path:
        try:
            for r in json.load(open(peer_path)):
                peer[(r["context"], r["batch"])] = r
        except (OSError, ValueError) as e:
            print(f"(no peer figures: {e})")
    print(f"{'model':<26} {'batch':>5} {'context':>8} {'prefill ms':>11} {'tok/s':>9} {'ms/tok':>8} {'attn %':>7}"
          f" | {'HF static tok/s':>15} {'HF prefill ms':>13} {'speedup':>8}")
    for s in ours.get("speed", []):
        p = peer.get((s["context"], s["batch"]), {})
        hf = p.get("decode_tokens_per_s")
        pre = s["prefill_ms"]
        print(f"{s['model'][:26]:<26} {s['batch']:>5} {s['context']:>8} {('%.1f' % pre) if pre is not None else '-':>11}"
              f" {s['tokens_per_s']:>9.1f} {s['ms_per_step']:>8.3f} {100 * s['attn_share']:>6.1f}%"
              f" | {('%.1f' % hf) if hf else p.get('error', '-')[:15]:>15}"
              f" {('%.1f' % p['prefill_ms']) if 'prefill_ms' in p else '-':>13}"
              f" {('%.2fx' % (s['tokens_per_s'] / hf)) if hf else '-':>8}")
    g = ours.get("golden", [])
    print(f"golden prompts passed: {sum(x['passed'] for x in g)}/{len(g)}; chat mentions Paris: "
          f"{ours.get('chat', {}).get('mentions_paris')}; failures: {ours.get('failures')}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
