//! Single-query flash decoding with GQA: the split kernel (grid `[splits, kv_heads, batch]`)
//! reads one split of one KV head once for the GROUP query heads that share it, with an
//! online softmax in log2 units; the combine kernel (grid `[q_heads, batch]`) merges the
//! splits by log-sum-exp.

use tessera_dsl_support::prelude::*;

#[kernel(tune(BLOCK_N = [64, 32, 128], WARPS = [4, 8], MIN_BLOCKS = [0, 2, 3]))]
pub fn flash_decode<
    const GROUP: usize,
    const HEAD_DIM: usize,
    const BLOCK_N: usize,
    const WARPS: usize,
    const MIN_BLOCKS: usize,
>(
    q: Tensor<bf16, 3>,            // [B, Hq, D]
    k: Tensor<bf16, 4>,            // [B, Hkv, N, D]
    v: Tensor<bf16, 4>,            // [B, Hkv, N, D]
    o_part: &mut Tensor<f32, 4>,   // [B, Hq, S, D]
    lse_part: &mut Tensor<f32, 3>, // [B, Hq, S]
    scale_log2: f32,
    split_len: i32,
) {
    let split = program_id(0);
    let kv_head = program_id(1);
    let batch = program_id(2);
    let seq_len = k.dim(2).cast::<i32>();
    let split_start = split * split_len;
    let split_stop = min(split_start + split_len, seq_len);
    let q_head0 = kv_head * GROUP as i32;

    if split_start >= split_stop {
        o_part.store([at(batch), range(q_head0, GROUP), at(split), range(0, HEAD_DIM)], zeros([GROUP, HEAD_DIM]));
        lse_part.store([at(batch), range(q_head0, GROUP), at(split)], full([GROUP], f32::NEG_INFINITY));
        return;
    }

    let q_tile = q.load([at(batch), range(q_head0, GROUP), range(0, HEAD_DIM)]);
    let mut row_max = full([GROUP], f32::NEG_INFINITY);
    let mut row_sum = zeros([GROUP]);
    let mut acc = zeros([GROUP, HEAD_DIM]);
    for kv_start in (split_start..split_stop).step_by(BLOCK_N) {
        let valid = arange(0, BLOCK_N) + kv_start < split_stop;
        let rows = valid.expand_dims(1);
        let k_tile = k.load_masked([at(batch), at(kv_head), range(kv_start, BLOCK_N), range(0, HEAD_DIM)], rows, 0.0);
        let v_tile = v.load_masked([at(batch), at(kv_head), range(kv_start, BLOCK_N), range(0, HEAD_DIM)], rows, 0.0);
        let scores = where_(valid, dot_t(q_tile, k_tile) * scale_log2, f32::NEG_INFINITY);
        let m_new = max(row_max, scores.max(1));
        let alpha = exp2(row_max - m_new);
        let probs = exp2(scores - m_new.expand_dims(1));
        row_sum = row_sum * alpha + probs.sum(1);
        acc = acc * alpha.expand_dims(1) + dot(probs.cast::<bf16>(), v_tile);
        row_max = m_new;
    }
    o_part.store([at(batch), range(q_head0, GROUP), at(split), range(0, HEAD_DIM)], acc / row_sum.expand_dims(1));
    lse_part.store([at(batch), range(q_head0, GROUP), at(split)], row_max + log2(row_sum));
}

#[kernel]
pub fn flash_decode_combine<const HEAD_DIM: usize, const MAX_SPLITS: usize, const WARPS: usize>(
    o_part: Tensor<f32, 4>,    // [B, Hq, S, D]
    lse_part: Tensor<f32, 3>,  // [B, Hq, S]
    out: &mut Tensor<bf16, 3>, // [B, Hq, D]
) {
    let head = program_id(0);
    let batch = program_id(1);
    let lse = lse_part.load_or([at(batch), at(head), range(0, MAX_SPLITS)], f32::NEG_INFINITY);
    let split_weight = exp2(lse - lse.max(0));
    let parts = o_part.load([at(batch), at(head), range(0, MAX_SPLITS), range(0, HEAD_DIM)]);
    let o = (parts * split_weight.expand_dims(1)).sum(0) / split_weight.sum(0);
    out.store([at(batch), at(head), range(0, HEAD_DIM)], o.cast::<bf16>());
}
