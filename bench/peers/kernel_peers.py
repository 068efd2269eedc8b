"""PyTorch peers of `tessera bench-kernels`, on the same workloads, in the same run.

Shapes (../shared/PEERS.md): bf16, 32 query heads, 8 KV heads, head dim 128, KV layout
[B, Hkv, N, D], N = 131072. Workload names match `tessera bench-kernels --json`:

  sink_window_B8        SDPA on pre-sliced KV (sink 64 ++ window 4096 concatenated before
                        timing: the attention only is timed), FlexAttention (compiled) with
                        a sink+window BlockMask over the full cache.
  block_sparse_qh_B8    the same with one selection per (batch, query head): FlexAttention.
  block_sparse_B8       64 random distinct blocks x 128 tokens per (batch, KV head):
                        SDPA on gathered KV (gather + attention, and attention alone on
                        pre-gathered KV), FlexAttention (compiled) with a BlockMask (the KV
                        head's selection repeated for its 4 query heads).
  topk_select_B8_bs128  landmark scores (max over the GQA group) + top-64 of N/128 blocks,
  topk_select_B8_bs64   resp. N/64 blocks: eager PyTorch and torch.compile.
  tree_T16_B1           T draft-tree queries over the N prefix + T tree keys, ancestor mask:
  tree_T64_B1           SDPA with a boolean mask, FlexAttention (compiled) with a mask_mod.
  dense_B1, dense_B8    SDPA (decode_peers.py has FlexAttention for these).

Bytes (tb_per_s) are the same as Tessera's: the KV rows that must be read, once.
Every peer is wrapped in try/except: a failure is reported as {"error": ...} and the run
goes on. Prints one JSON object per line and (re)writes them all to the file named by the
first argument after every result, so a timeout still leaves what was measured.
"""
import json
import os
import sys
import traceback

import torch
import torch.nn.functional as F

HQ, HKV, D = 32, 8, 128
G = HQ // HKV
N = 131072
SINK, WINDOW = 64, 4096
BS, NBLK = 128, 64
ITERS = int(os.environ.get("KERNEL_PEERS_ITERS", "50"))

results = []
out_path = "kernel_peers.json"


def emit(rec):
    results.append(rec)
    print(json.dumps(rec), flush=True)
    with open(out_path, "w") as f:
        json.dump(results, f, indent=1)


def median_us(fn, iters=ITERS, warmup=5):
    """Median of CUDA-event times of fn(i) (i counts on, for rotating inputs)."""
    for i in range(warmup):
        fn(i)
    torch.cuda.synchronize()
    times = []
    for i in range(iters):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn(warmup + i)
        e.record()
        torch.cuda.synchronize()
        times.append(s.elapsed_time(e) * 1e3)
    times.sort()
    return times[len(times) // 2]


def measure(workload, peer, fn, nbytes, note="", flops=None):
    try:
        t = median_us(fn)
        rec = {"workload": workload, "peer": peer, "median_us": round(t, 2), "tb_per_s": round(nbytes / t / 1e6, 3)}
        if flops:
            rec["tflop_per_s"] = round(flops / t / 1e6, 1)
        if note:
            rec["note"] = note
    except Exception as e:  # noqa: BLE001 - report and go on
        rec = {"workload": workload, "peer": peer, "error": f"{type(e).__name__}: {str(e)[:400]}"}
        traceback.print_exc(limit=2, file=sys.stderr)
    emit(rec)
    return rec


def error(workload, peer, e):
    emit({"workload": workload, "peer": peer, "error": f"{type(e).__name__}: {str(e)[:400]}"})
    traceback.print_exc(limit=2, file=sys.stderr)


def rand(*shape, gen):
    return torch.rand(*shape, device="cuda", dtype=torch.bfloat16, generator=gen) * 2 - 1


def kv_bytes(pairs, tokens):
    return pairs * tokens * 2 * D * 2


def max_diff(a, b):
    return float((a.float() - b.float()).abs().max())


def get_flex():
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    torch._dynamo.config.cache_size_limit = 64
    return torch.compile(flex_attention, fullgraph=True), create_block_mask


def main():
    global out_path
    out_path = sys.argv[1] if len(sys.argv) > 1 else out_path
    try:
        flex, create_block_mask = get_flex()
    except Exception as e:  # noqa: BLE001
        flex = None
        error("all", "flex", e)
    only = os.environ.get("KERNEL_PEERS_ONLY", "")
    wanted = lambda w: not only or any(s in w for s in only.split(","))  # noqa: E731

    # ---- B=8 cache: sink+window, block-sparse, top-k, dense B8
    b = 8
    g = torch.Generator(device="cuda").manual_seed(0)
    q = rand(b, HQ, 1, D, gen=g)
    k = rand(b, HKV, N, D, gen=g)
    v = rand(b, HKV, N, D, gen=g)

    w = "sink_window_B8"
    if wanted(w):
        nbytes = kv_bytes(b * HKV, SINK + WINDOW)
        ks = torch.cat([k[:, :, :SINK], k[:, :, N - WINDOW :]], dim=2).contiguous()
        vs = torch.cat([v[:, :, :SINK], v[:, :, N - WINDOW :]], dim=2).contiguous()
        ref = F.scaled_dot_product_attention(q, ks, vs, enable_gqa=True)
        measure(w, "sdpa_presliced", lambda i: F.scaled_dot_product_attention(q, ks, vs, enable_gqa=True), nbytes,
                "attention only: KV sliced+concatenated before timing")
        measure(w, "sdpa_slice_in_timing", lambda i: F.scaled_dot_product_attention(
            q, torch.cat([k[:, :, :SINK], k[:, :, N - WINDOW :]], dim=2),
            torch.cat([v[:, :, :SINK], v[:, :, N - WINDOW :]], dim=2), enable_gqa=True), nbytes,
            "torch.cat of the sink and window slices + attention")
        if flex is not None:
            try:
                torch._dynamo.reset()
                mask = create_block_mask(lambda b_, h, qi, kv: (kv < SINK) | (kv >= N - WINDOW),
                                         B=None, H=None, Q_LEN=1, KV_LEN=N, BLOCK_SIZE=128)
                o = flex(q, k, v, block_mask=mask, enable_gqa=True)
                measure(w, "flex", lambda i: flex(q, k, v, block_mask=mask, enable_gqa=True), nbytes,
                        f"compiled, sink+window BlockMask over the full cache; max |diff| vs sdpa {max_diff(o, ref):.1e}")
            except Exception as e:  # noqa: BLE001
                error(w, "flex", e)
        del ks, vs

    w = "block_sparse_B8"
    if wanted(w):
        nbytes = kv_bytes(b * HKV, NBLK * BS)
        nb = N // BS
        gi = torch.Generator(device="cuda").manual_seed(1)
        blocks = torch.argsort(torch.rand(b, HKV, nb, device="cuda", generator=gi), dim=-1)[..., :NBLK]
        tok = (blocks.unsqueeze(-1) * BS + torch.arange(BS, device="cuda")).reshape(b, HKV, NBLK * BS)
        tok_idx = tok.unsqueeze(-1).expand(b, HKV, NBLK * BS, D)
        kg = torch.gather(k, 2, tok_idx)
        vg = torch.gather(v, 2, tok_idx)
        ref = F.scaled_dot_product_attention(q, kg, vg, enable_gqa=True)
        measure(w, "sdpa_gathered", lambda i: F.scaled_dot_product_attention(q, kg, vg, enable_gqa=True), nbytes,
                "attention alone on pre-gathered KV")
        measure(w, "sdpa_gather_and_attend", lambda i: F.scaled_dot_product_attention(
            q, torch.gather(k, 2, tok_idx), torch.gather(v, 2, tok_idx), enable_gqa=True), nbytes,
            "torch.gather of K and V + attention")
        if flex is not None:
            try:
                torch._dynamo.reset()
                sel = torch.zeros(b, HKV, nb, dtype=torch.bool, device="cuda")
                sel.scatter_(2, blocks, True)

                def bs_mask(b_, h, qi, kv):
                    return sel[b_, h // G, kv // BS]

                mask = create_block_mask(bs_mask, B=b, H=HQ, Q_LEN=1, KV_LEN=N, BLOCK_SIZE=BS)
                o = flex(q, k, v, block_mask=mask, enable_gqa=True)
                measure(w, "flex", lambda i: flex(q, k, v, block_mask=mask, enable_gqa=True), nbytes,
                        f"compiled, BlockMask per query head (KV head's selection); max |diff| vs sdpa_gathered "
                        f"{max_diff(o, ref):.1e}")
            except Exception as e:  # noqa: BLE001
                error(w, "flex", e)
        del kg, vg, tok_idx

    w = "block_sparse_qh_B8"
    if wanted(w) and flex is not None:
        # One independent list of NBLK blocks per query head (PEERS.md's FlexAttention row).
        nbytes = kv_bytes(b * HQ, NBLK * BS)
        nb = N // BS
        gi = torch.Generator(device="cuda").manual_seed(3)
        blocks = torch.argsort(torch.rand(b, HQ, nb, device="cuda", generator=gi), dim=-1)[..., :NBLK]
        try:
            torch._dynamo.reset()
            sel_qh = torch.zeros(b, HQ, nb, dtype=torch.bool, device="cuda")
            sel_qh.scatter_(2, blocks, True)

            def qh_mask(b_, h, qi, kv):
                return sel_qh[b_, h, kv // BS]

            mask = create_block_mask(qh_mask, B=b, H=HQ, Q_LEN=1, KV_LEN=N, BLOCK_SIZE=BS)
            measure(w, "flex", lambda i: flex(q, k, v, block_mask=mask, enable_gqa=True), nbytes,
                    "compiled, BlockMask with its own selection per query head")
        except Exception as e:  # noqa: BLE001
            error(w, "flex", e)

    for bs in (128, 64):
        w = f"topk_select_B8_bs{bs}"
        if not wanted(w):
            continue
        nb = N // bs
        one = b * HKV * nb * D * 4
        sets = max(1, min(8, -(-2 * 60 * 2**20 // one)))
        gl = torch.Generator(device="cuda").manual_seed(2)
        lms = [torch.rand(b, HKV, nb, D, device="cuda", generator=gl) * 2 - 1 for _ in range(sets)]
        qg = q.reshape(b, HKV, G, D)

        def select(lm):
            s = torch.matmul(qg.float(), lm.transpose(-1, -2))  # [B, Hkv, G, nb]
            return torch.topk(s.amax(dim=2), NBLK, dim=-1)

        note = f"bytes = landmarks read (f32); {sets} landmark sets rotated"
        measure(w, "torch_eager", lambda i: select(lms[i % sets]), one, note)
        try:
            torch._dynamo.reset()
            sel_c = torch.compile(select, fullgraph=True)
            measure(w, "torch_compile", lambda i: sel_c(lms[i % sets]), one, note)
        except Exception as e:  # noqa: BLE001
            error(w, "torch_compile", e)
        del lms

    w = "dense_B8"
    if wanted(w):
        measure(w, "sdpa", lambda i: F.scaled_dot_product_attention(q, k, v, enable_gqa=True), kv_bytes(b * HKV, N))
    del q, k, v
    torch.cuda.empty_cache()

    # ---- B=1 cache of N prefix rows + 64 tree rows: tree verify, dense B1
    b = 1
    g = torch.Generator(device="cuda").manual_seed(3)
    k = rand(b, HKV, N + 64, D, gen=g)
    v = rand(b, HKV, N + 64, D, gen=g)
    w = "dense_B1"
    if wanted(w):
        q = rand(b, HQ, 1, D, gen=g)
        kd, vd = k[:, :, :N].contiguous(), v[:, :, :N].contiguous()
        measure(w, "sdpa", lambda i: F.scaled_dot_product_attention(q, kd, vd, enable_gqa=True), kv_bytes(b * HKV, N))
        del kd, vd
    for t in (16, 64):
        w = f"tree_T{t}_B1"
        if not wanted(w):
            continue
        nbytes = kv_bytes(b * HKV, N)
        flops = 4 * b * HQ * t * N * D
        qt = rand(b, HQ, t, D, gen=g)
        kt, vt = k[:, :, : N + t], v[:, :, : N + t]
        # Random tree: node i > 0 has a random parent < i; anc[i, j] = j is an ancestor-or-self of i.
        gp = torch.Generator().manual_seed(t)
        anc = torch.zeros(t, t, dtype=torch.bool)
        for i in range(t):
            if i > 0:
                anc[i] = anc[int(torch.randint(0, i, (1,), generator=gp))]
            anc[i, i] = True
        anc = anc.cuda()
        mask = torch.cat([torch.ones(t, N, dtype=torch.bool, device="cuda"), anc], dim=1)[None, None]
        ref = None
        try:
            ref = F.scaled_dot_product_attention(qt, kt, vt, attn_mask=mask, enable_gqa=True)
            measure(w, "sdpa_bool_mask", lambda i: F.scaled_dot_product_attention(
                qt, kt, vt, attn_mask=mask, enable_gqa=True), nbytes, "T queries over prefix+T keys", flops)
        except Exception as e:  # noqa: BLE001
            error(w, "sdpa_bool_mask", e)
        if flex is not None:
            try:
                torch._dynamo.reset()

                def tree_mask(b_, h, qi, kv):
                    return (kv < N) | anc[qi, torch.clamp(kv - N, 0, t - 1)]

                bm = create_block_mask(tree_mask, B=None, H=None, Q_LEN=t, KV_LEN=N + t, BLOCK_SIZE=128)
                o = flex(qt, kt, vt, block_mask=bm, enable_gqa=True)
                diff = f"; max |diff| vs sdpa {max_diff(o, ref):.1e}" if ref is not None else ""
                measure(w, "flex", lambda i: flex(qt, kt, vt, block_mask=bm, enable_gqa=True), nbytes,
                        "compiled, ancestor mask_mod" + diff, flops)
            except Exception as e:  # noqa: BLE001
                error(w, "flex", e)
        del qt, mask
    with open(out_path, "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
