"""Peers for dense flash-decoding, timed in the same run as `tessera bench`.

PyTorch SDPA (enable_gqa) and compiled FlexAttention with an explicit full BlockMask
(without one FlexAttention decode is ~20x slower; see shared/H200.md). bf16, 32 query
heads, 8 KV heads, head dim 128, KV layout [B, Hkv, N, D]. Prints one JSON object per
line and writes them all to the file named by the first argument.
"""
import json
import sys

import torch
import torch.nn.functional as F

SHAPES = [(8, 32768), (1, 131072), (8, 131072)]
HQ, HKV, D = 32, 8, 128


def median_us(fn, iters=50, warmup=5):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        torch.cuda.synchronize()
        times.append(s.elapsed_time(e) * 1e3)
    times.sort()
    return times[len(times) // 2]


def main(out_path):
    results = []
    flex = None
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        torch._dynamo.config.cache_size_limit = 64
        flex = torch.compile(flex_attention, fullgraph=True)
    except Exception as e:  # noqa: BLE001 - report and go on with SDPA
        print(json.dumps({"peer": "flex", "error": str(e)}))
    for b, n in SHAPES:
        g = torch.Generator(device="cuda").manual_seed(0)
        q = torch.rand(b, HQ, 1, D, device="cuda", dtype=torch.bfloat16, generator=g) * 2 - 1
        k = torch.rand(b, HKV, n, D, device="cuda", dtype=torch.bfloat16, generator=g) * 2 - 1
        v = torch.rand(b, HKV, n, D, device="cuda", dtype=torch.bfloat16, generator=g) * 2 - 1
        kv_bytes = 2 * k.numel() * 2
        t = median_us(lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=True))
        results.append({"peer": "sdpa", "shape": f"{b}x{n}", "median_us": t, "tb_per_s": kv_bytes / t / 1e6})
        print(json.dumps(results[-1]), flush=True)
        if flex is not None:
            try:
                torch._dynamo.reset()
                mask = create_block_mask(lambda b_, h, qi, kv: qi >= 0, B=None, H=None, Q_LEN=1, KV_LEN=n)
                t = median_us(lambda: flex(q, k, v, block_mask=mask, enable_gqa=True))
                results.append({"peer": "flex", "shape": f"{b}x{n}", "median_us": t, "tb_per_s": kv_bytes / t / 1e6})
            except Exception as e:  # noqa: BLE001
                results.append({"peer": "flex", "shape": f"{b}x{n}", "error": str(e)[:300]})
            print(json.dumps(results[-1]), flush=True)
        del q, k, v
        torch.cuda.empty_cache()
    with open(out_path, "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "peers.json")
