//! Block-sparse decode: per (batch, KV head) — or, with
//! [`BlockSparseDecode::per_query_head`], per (batch, query head) — a list of KV block
//! indices (block size `BLOCK_SIZE`, runtime data: a new selection never recompiles) plus
//! optional dense sink and window ranges, all merged in one launch + the shared combine.
//! Per query head, each program serves one query head (GROUP = 1) and reads its KV
//! head's rows (`KV_SHARE` = the GQA ratio): the K/V of a group is read once per query
//! head that selects it (the L2 absorbs part of the overlap).
//!
//! The attended key set is `sink ∪ window ∪ (⋃ selected blocks)` clipped to `[0, seq_len)`:
//! block tokens that fall inside the sink or the window are skipped (they are already
//! attended by the dense ranges), so overlaps never double count. **Duplicate block
//! indices in a list are attended twice** (the caller guarantees no duplicates;
//! `topk_block_select` never produces any): the kernel does not deduplicate, and
//! `BlockSparseDecode::check_args` does not refuse them either; see the tests.
//! Entries `j >= block_count[b, h]` are ignored; an index outside
//! `[0, ceil(seq_len / BLOCK_SIZE))` among the counted entries is refused before launch.
//! An empty selection with no sink/window gives a zero output and LSE = -inf.
//!
//! Work layout: the virtual sequence `sink ++ window ++ blocks[0..count] tokens` is split
//! over `grid = [num_splits, selection rows, batch]` programs (`split_len` tokens each, or,
//! with `split_len <= 0`, the actual total shared evenly by the grid on the device); sink and window tiles use
//! contiguous loads, block tiles gather K/V rows by the position tile
//! `block_idx[t / BLOCK_SIZE] · BLOCK_SIZE + t % BLOCK_SIZE` (so any block size works
//! with any tile size).

use tessera_codegen::host::HostTensor;
use tessera_codegen::ir::DType;
use tessera_dsl_support::prelude::*;
use tessera_runtime::DeviceTensor;

use crate::combine::LseCombine;
use crate::dense::{split_combine_cpu, split_combine_gpu, split_combine_gpu_with, DecodeParams};
use crate::error::{expect, host_ints, invalid, unravel, KernelError, TensorMeta};
use crate::online_softmax::{online_softmax, online_softmax_masked};
use crate::scratch::Scratch;
use crate::sink_window::union_len;

/// Block-sparse decode split: attention over a runtime list of KV blocks plus optional sink/window ranges.
#[kernel(tune(BLOCK_N = [64, 32, 128], WARPS = [4, 8], STAGES = [2, 3]), example(GROUP = 4, HEAD_DIM = 128, BLOCK_SIZE = 128, KV_SHARE = 1, MIN_BLOCKS = 0))]
pub fn block_sparse_decode_split<
    KV,
    const GROUP: usize,
    const HEAD_DIM: usize,
    const BLOCK_SIZE: usize,
    const KV_SHARE: usize,
    const BLOCK_N: usize,
    const WARPS: usize,
    const STAGES: usize,
    const MIN_BLOCKS: usize,
>(
    q: Tensor<KV, 3>,              // [B, Hq, D]
    k: Tensor<KV, 4>,              // [B, Hkv, N, D]
    v: Tensor<KV, 4>,              // [B, Hkv, N, D]
    block_idx: Tensor<i32, 3>,     // [B, R, MAX_BLOCKS], R = Hkv (shared) or Hq (per query head)
    block_count: Tensor<i32, 2>,   // [B, R]
    o_part: &mut Tensor<f32, 4>,   // [B, Hq, S, D]
    lse_part: &mut Tensor<f32, 3>, // [B, Hq, S]
    scale_log2: f32,
    seq_len: i32,
    sink: i32,
    window: i32,
    split_len: i32,
) {
    let split = program_id(0);
    // Selection row: a KV head (GROUP query heads share its block list, KV_SHARE = 1) or
    // one query head (GROUP = 1, KV_SHARE = the GQA ratio: its own list, its KV head's K/V).
    let sel = program_id(1);
    let kv_head = sel / KV_SHARE as i32;
    let batch = program_id(2);
    let sink_end = min(max(sink, 0), seq_len);
    let win_start = max(max(seq_len - max(window, 0), 0), sink_end);
    let dense_len = sink_end + (seq_len - win_start);
    let max_blocks = block_idx.dim(2).cast::<i32>();
    let count = min(max(block_count.load([at(batch), at(sel)]), 0), max_blocks);
    let total = dense_len + count * BLOCK_SIZE as i32;
    // `split_len <= 0`: the grid shares the actual work evenly (whole tiles each), for
    // selections a kernel produced whose length the host does not know (the centroid
    // lookup's packed rows): a host split sized for the bound would leave most programs idle.
    let per_program = (total + num_programs(0) - 1) / num_programs(0);
    let balanced = (per_program + BLOCK_N as i32 - 1) / BLOCK_N as i32 * BLOCK_N as i32;
    let span = where_(split_len > 0, split_len, balanced);
    let v0 = split * span;
    let v1 = min(v0 + span, total);
    let q_head0 = sel * GROUP as i32;
    if v0 >= v1 {
        o_part.store([at(batch), range(q_head0, GROUP), at(split), range(0, HEAD_DIM)], zeros([GROUP, HEAD_DIM]));
        lse_part.store([at(batch), range(q_head0, GROUP), at(split)], full([GROUP], f32::NEG_INFINITY));
        return;
    }
    let q_tile = q.load([at(batch), range(q_head0, GROUP), range(0, HEAD_DIM)]);
    let mut row_max = full([GROUP], f32::NEG_INFINITY);
    // Per-column partial sums, summed across the tile once after the loop: a row sum per
    // tile would cost a cross-warp reduction (a barrier) each time.
    let mut sum_part = zeros([GROUP, BLOCK_N]);
    let mut acc = zeros([GROUP, HEAD_DIM]);
    // Sink segment.
    let s_stop = min(v1, sink_end);
    for kv_start in (v0..s_stop).step_by(BLOCK_N) {
        let valid = arange(0, BLOCK_N) + kv_start < s_stop;
        let rows = valid.expand_dims(1);
        let k_tile = k.load_masked([at(batch), at(kv_head), range(kv_start, BLOCK_N), range(0, HEAD_DIM)], rows, 0.0);
        let v_tile = v.load_masked([at(batch), at(kv_head), range(kv_start, BLOCK_N), range(0, HEAD_DIM)], rows, 0.0);
        let scores = where_(valid, dot_t(q_tile, k_tile) * scale_log2, f32::NEG_INFINITY);
        let (m_new, alpha, probs) = online_softmax(scores, row_max);
        sum_part = sum_part * alpha.expand_dims(1) + probs;
        acc = acc * alpha.expand_dims(1) + dot(probs.cast::<KV>(), v_tile);
        row_max = m_new;
    }
    // Window segment: virtual [max(v0, sink_end), min(v1, dense_len)) + shift.
    let shift = win_start - sink_end;
    let w_start = max(v0, sink_end) + shift;
    let w_stop = min(v1, dense_len) + shift;
    for kv_start in (w_start..w_stop).step_by(BLOCK_N) {
        let valid = arange(0, BLOCK_N) + kv_start < w_stop;
        let rows = valid.expand_dims(1);
        let k_tile = k.load_masked([at(batch), at(kv_head), range(kv_start, BLOCK_N), range(0, HEAD_DIM)], rows, 0.0);
        let v_tile = v.load_masked([at(batch), at(kv_head), range(kv_start, BLOCK_N), range(0, HEAD_DIM)], rows, 0.0);
        let scores = where_(valid, dot_t(q_tile, k_tile) * scale_log2, f32::NEG_INFINITY);
        let (m_new, alpha, probs) = online_softmax(scores, row_max);
        sum_part = sum_part * alpha.expand_dims(1) + probs;
        acc = acc * alpha.expand_dims(1) + dot(probs.cast::<KV>(), v_tile);
        row_max = m_new;
    }
    // Block segment: virtual [max(v0, dense_len), v1) - dense_len = selected-token index t.
    let t_start = max(v0, dense_len) - dense_len;
    let t_stop = v1 - dense_len;
    if BLOCK_SIZE % BLOCK_N == 0 {
        // Tiles aligned to BLOCK_N never straddle two blocks: one scalar index per tile and
        // contiguous K/V rows, so the copies take the affine path and stream a tile ahead.
        for t0 in (t_start - t_start % BLOCK_N as i32..t_stop).step_by(BLOCK_N) {
            let t = arange(0, BLOCK_N) + t0;
            let live = t >= t_start && t < t_stop;
            let blk = block_idx.load([at(batch), at(sel), at(t0 / BLOCK_SIZE as i32)]);
            let pos0 = blk * BLOCK_SIZE as i32 + t0 % BLOCK_SIZE as i32;
            let pos = arange(0, BLOCK_N) + pos0;
            let in_dense = pos < sink_end || pos >= win_start;
            let valid = live && blk >= 0 && pos < seq_len && !in_dense;
            let rows = valid.expand_dims(1);
            let k_tile = k.load_masked([at(batch), at(kv_head), range(pos0, BLOCK_N), range(0, HEAD_DIM)], rows, 0.0);
            let v_tile = v.load_masked([at(batch), at(kv_head), range(pos0, BLOCK_N), range(0, HEAD_DIM)], rows, 0.0);
            let scores = where_(valid, dot_t(q_tile, k_tile) * scale_log2, f32::NEG_INFINITY);
            let (m_new, alpha, probs) = online_softmax_masked(scores, row_max);
            sum_part = sum_part * alpha.expand_dims(1) + probs;
            acc = acc * alpha.expand_dims(1) + dot(probs.cast::<KV>(), v_tile);
            row_max = m_new;
        }
    } else {
        // Blocks smaller than (or not dividing) the tile: gather rows by a position tile.
        for t0 in (t_start..t_stop).step_by(BLOCK_N) {
            let t = arange(0, BLOCK_N) + t0;
            let live = t < t_stop;
            let blk = block_idx.load_masked([at(batch), at(sel), gather(t / BLOCK_SIZE)], live, -1);
            let pos = blk * BLOCK_SIZE as i32 + t % BLOCK_SIZE as i32;
            let in_dense = pos < sink_end || pos >= win_start;
            let valid = live && blk >= 0 && pos < seq_len && !in_dense;
            let rows = valid.expand_dims(1);
            let k_tile = k.load_masked([at(batch), at(kv_head), gather(pos), range(0, HEAD_DIM)], rows, 0.0);
            let v_tile = v.load_masked([at(batch), at(kv_head), gather(pos), range(0, HEAD_DIM)], rows, 0.0);
            let scores = where_(valid, dot_t(q_tile, k_tile) * scale_log2, f32::NEG_INFINITY);
            // A tile may be fully masked (a block inside the window): keep -inf rows NaN-free.
            let (m_new, alpha, probs) = online_softmax_masked(scores, row_max);
            sum_part = sum_part * alpha.expand_dims(1) + probs;
            acc = acc * alpha.expand_dims(1) + dot(probs.cast::<KV>(), v_tile);
            row_max = m_new;
        }
    }
    let row_sum = sum_part.sum(1);
    let nonempty = row_sum > 0.0;
    let denom = where_(nonempty, row_sum, 1.0);
    o_part.store([at(batch), range(q_head0, GROUP), at(split), range(0, HEAD_DIM)], acc / denom.expand_dims(1));
    lse_part.store(
        [at(batch), range(q_head0, GROUP), at(split)],
        where_(nonempty, row_max + log2(denom), f32::NEG_INFINITY),
    );
}

/// Host op: block-sparse (+ sink/window) split decode + combine.
pub struct BlockSparseDecode {
    pub params: DecodeParams,
    pub block_size: usize,
    /// Block lists per query head (`[B, Hq, MAX_BLOCKS]`) instead of per KV head.
    pub per_query_head: bool,
    split: BlockSparseDecodeSplitKernel,
    combine: LseCombine,
}

impl BlockSparseDecode {
    const NAME: &'static str = "block_sparse_decode";

    /// The split kernel's configuration: GROUP query heads per selection row, the
    /// selection rows per KV head in KV_SHARE.
    pub fn config(params: &DecodeParams, block_size: usize, per_query_head: bool) -> KernelConfig {
        let (group, share) = if per_query_head { (1, params.group) } else { (params.group, 1) };
        params
            .split_config()
            .with("GROUP", group as i64)
            .with("KV_SHARE", share as i64)
            .with("BLOCK_SIZE", block_size as i64)
            .with("MIN_BLOCKS", params.min_blocks as i64)
    }

    /// Interpreter op, one block list per (batch, KV head).
    pub fn cpu(params: DecodeParams, block_size: usize) -> Result<Self, KernelError> {
        Self::make(params, block_size, false, None)
    }

    /// GPU op, one block list per (batch, KV head).
    pub fn new(rt: &Runtime, params: DecodeParams, block_size: usize) -> Result<Self, KernelError> {
        Self::make(params, block_size, false, Some(rt))
    }

    /// One block list per (batch, query head): `block_idx [B, Hq, MAX_BLOCKS]`,
    /// `block_count [B, Hq]`; on the interpreter when `rt` is `None`.
    pub fn per_query_head(rt: Option<&Runtime>, params: DecodeParams, block_size: usize) -> Result<Self, KernelError> {
        Self::make(params, block_size, true, rt)
    }

    fn make(
        params: DecodeParams,
        block_size: usize,
        per_query_head: bool,
        rt: Option<&Runtime>,
    ) -> Result<Self, KernelError> {
        let config = Self::config(&params, block_size, per_query_head);
        let (split, combine) = match rt {
            Some(rt) => (BlockSparseDecodeSplit::new(rt, &config)?, params.combine(Some(rt), params.max_splits)?),
            None => (BlockSparseDecodeSplit::cpu(&config)?, params.combine(None, params.max_splits)?),
        };
        Ok(BlockSparseDecode { params, block_size, per_query_head, split, combine })
    }

    /// Checks dtypes and shapes (`block_idx [B, R, MAX_BLOCKS] i32`, `block_count [B, R]
    /// i32`, R = Hkv, or Hq per query head) and, for host index tensors, that every count is in `[0, MAX_BLOCKS]` and every
    /// counted index in `[0, ceil(seq_len / BLOCK_SIZE))`. Returns the split grid and
    /// `split_len`.
    #[allow(clippy::too_many_arguments)]
    pub fn check_args(
        &self,
        q: &dyn TensorMeta,
        k: &dyn TensorMeta,
        v: &dyn TensorMeta,
        block_idx: &dyn TensorMeta,
        block_count: &dyn TensorMeta,
        seq_len: usize,
        sink: usize,
        window: usize,
        out: &dyn TensorMeta,
        lse: Option<&dyn TensorMeta>,
    ) -> Result<([u32; 3], usize), KernelError> {
        let name = Self::NAME;
        let p = &self.params;
        let (b, hkv, _) = p.check_qkv(name, q, k, v, seq_len, out, lse)?;
        let rows = if self.per_query_head { hkv * p.group } else { hkv };
        expect(name, "block_idx", block_idx, DType::I32, &[Some(b), Some(rows), None])?;
        expect(name, "block_count", block_count, DType::I32, &[Some(b), Some(rows)])?;
        if sink > i32::MAX as usize || window > i32::MAX as usize {
            return Err(invalid(name, "sink/window do not fit i32"));
        }
        let max_blocks = block_idx.shape()[2];
        let num_blocks = seq_len.div_ceil(self.block_size) as i64;
        if let (Some(idx), Some(cnt)) = (host_ints(block_idx), host_ints(block_count)) {
            for (i, &c) in cnt.iter().enumerate() {
                if c < 0 || c > max_blocks as i64 {
                    let at = unravel(i, block_count.shape());
                    return Err(KernelError::IndexOutOfRange {
                        kernel: name,
                        arg: "block_count",
                        at,
                        value: c,
                        lo: 0,
                        hi: max_blocks as i64 + 1,
                    });
                }
                for j in 0..c as usize {
                    let x = idx[i * max_blocks + j];
                    if !(0..num_blocks).contains(&x) {
                        let mut at = unravel(i, block_count.shape());
                        at.push(j);
                        return Err(KernelError::IndexOutOfRange {
                            kernel: name,
                            arg: "block_idx",
                            at,
                            value: x,
                            lo: 0,
                            hi: num_blocks,
                        });
                    }
                }
            }
        }
        let len = union_len(seq_len, sink, window) + max_blocks * self.block_size;
        let (split_len, splits) = crate::split_plan(len, p.block_n, p.max_splits);
        Ok(([splits as u32, rows as u32, b as u32], split_len))
    }

    #[allow(clippy::too_many_arguments)]
    pub fn run_cpu(
        &self,
        q: &HostTensor,
        k: &HostTensor,
        v: &HostTensor,
        block_idx: &HostTensor,
        block_count: &HostTensor,
        seq_len: usize,
        sink: usize,
        window: usize,
        out: &mut HostTensor,
        lse: Option<&mut HostTensor>,
    ) -> Result<(), KernelError> {
        let lse_meta = lse.as_deref().map(|l| l as &dyn TensorMeta);
        let (grid, split_len) =
            self.check_args(q, k, v, block_idx, block_count, seq_len, sink, window, out, lse_meta)?;
        let shape = [q.shape[0], q.shape[1], grid[0] as usize];
        let sc = self.params.scale_log2;
        split_combine_cpu(&self.combine, shape, out, lse, |o, l| {
            let (n, s, w) = (seq_len as i32, sink as i32, window as i32);
            Ok(self.split.run_cpu(grid, q, k, v, block_idx, block_count, o, l, sc, n, s, w, split_len as i32)?)
        })
    }

    /// GPU launch. Index ranges of device tensors cannot be checked here: check the host
    /// copy with [`Self::check_args`] before uploading (out-of-range gathers are masked by
    /// the kernel, never a fault, but they are an error of the caller).
    #[allow(clippy::too_many_arguments)]
    pub fn launch(
        &self,
        rt: &Runtime,
        q: &DeviceTensor,
        k: &DeviceTensor,
        v: &DeviceTensor,
        block_idx: &DeviceTensor,
        block_count: &DeviceTensor,
        seq_len: usize,
        sink: usize,
        window: usize,
        out: &DeviceTensor,
        lse: Option<&DeviceTensor>,
    ) -> Result<(), KernelError> {
        let lse_meta = lse.map(|l| l as &dyn TensorMeta);
        let (grid, split_len) =
            self.check_args(q, k, v, block_idx, block_count, seq_len, sink, window, out, lse_meta)?;
        let shape = [q.shape()[0], q.shape()[1], grid[0] as usize];
        let sc = self.params.scale_log2;
        split_combine_gpu(rt, &self.combine, shape, out, lse, |o, l| {
            let (n, s, w) = (seq_len as i32, sink as i32, window as i32);
            let st = rt.stream();
            Ok(self.split.launch(st, grid, q, k, v, block_idx, block_count, o, l, sc, n, s, w, split_len as i32)?)
        })
    }

    /// [`Self::launch`] with the intermediates kept in `scratch` (for timing loops).
    #[allow(clippy::too_many_arguments)]
    pub fn launch_with(
        &self,
        rt: &Runtime,
        scratch: &Scratch,
        q: &DeviceTensor,
        k: &DeviceTensor,
        v: &DeviceTensor,
        block_idx: &DeviceTensor,
        block_count: &DeviceTensor,
        seq_len: usize,
        sink: usize,
        window: usize,
        out: &DeviceTensor,
        lse: Option<&DeviceTensor>,
    ) -> Result<(), KernelError> {
        let lse_meta = lse.map(|l| l as &dyn TensorMeta);
        let (grid, split_len) =
            self.check_args(q, k, v, block_idx, block_count, seq_len, sink, window, out, lse_meta)?;
        let shape = [q.shape()[0], q.shape()[1], grid[0] as usize];
        let sc = self.params.scale_log2;
        split_combine_gpu_with(rt, scratch, &self.combine, shape, out, lse, |o, l| {
            let (n, s, w) = (seq_len as i32, sink as i32, window as i32);
            let st = rt.stream();
            Ok(self.split.launch(st, grid, q, k, v, block_idx, block_count, o, l, sc, n, s, w, split_len as i32)?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// `split_len = 0` (the grid shares the actual rows, as the centroid lookup launches
    /// it) gives the host-planned result for any split count, counts varying per head
    /// (an empty one included), blocks gathered (bs 1) and tile-aligned (bs 32).
    #[test]
    fn balanced_splits_match_the_host_plan() {
        let (b, hkv, g, d, n) = (2, 2, 3, 64, 301);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let q = HostTensor::random(DType::BF16, &[b, hkv * g, d], -1.0, 1.0, &mut rng);
        let k = HostTensor::random(DType::BF16, &[b, hkv, n, d], -1.0, 1.0, &mut rng);
        let v = HostTensor::random(DType::BF16, &[b, hkv, n, d], -1.0, 1.0, &mut rng);
        for (bs, window, splits) in [(1, 37, 3), (1, 0, 5), (32, 10, 4)] {
            let mb = (n - window) / bs;
            let (mut idx, mut cnt) = (vec![-1.0; b * hkv * mb], vec![0.0; b * hkv]);
            for row in 0..b * hkv {
                let c = if row == 1 { 0 } else { rng.random_range(1..=mb) };
                for (j, x) in idx[row * mb..row * mb + c].iter_mut().enumerate() {
                    *x = (j * (mb / c.max(1))) as f64;
                }
                cnt[row] = c as f64;
            }
            let idx = HostTensor::from_f64(DType::I32, &[b, hkv, mb], &idx);
            let cnt = HostTensor::from_f64(DType::I32, &[b, hkv], &cnt);
            let p = DecodeParams { block_n: 16, max_splits: 8, ..DecodeParams::new(g, d) };
            let op = BlockSparseDecode::cpu(p.clone(), bs).unwrap();
            let mut want = HostTensor::full(DType::BF16, &[b, hkv * g, d], f64::NAN);
            op.run_cpu(&q, &k, &v, &idx, &cnt, n, 0, window, &mut want, None).unwrap();
            let mut got = HostTensor::full(DType::BF16, &[b, hkv * g, d], f64::NAN);
            let grid = [splits as u32, hkv as u32, b as u32];
            let (sc, nn, w) = (p.scale_log2, n as i32, window as i32);
            split_combine_cpu(&op.combine, [b, hkv * g, splits], &mut got, None, |o, l| {
                Ok(op.split.run_cpu(grid, &q, &k, &v, &idx, &cnt, o, l, sc, nn, 0, w, 0)?)
            })
            .unwrap();
            let (want, got) = (want.to_f64(), got.to_f64());
            let worst = want.iter().zip(&got).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
            assert!(worst <= 2e-2, "bs {bs} window {window} splits {splits}: max abs diff {worst}");
            // The empty head without a window is all zeros, not NaN.
            if window == 0 {
                assert!(got[g * d..2 * g * d].iter().all(|&x| x == 0.0));
            }
        }
    }
}
