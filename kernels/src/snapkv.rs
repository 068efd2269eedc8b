//! SnapKV prefill-time KV selection (algorithms.md §4), per (batch, KV head).
//!
//! For a prompt of `T` keys and `C` cache slots (`T > C`), with an observation window of the
//! last `w` prompt queries:
//!
//! 1. `A = softmax(Q[-w:] · Kᵀ / √d)` with the causal mask inside the window (observation
//!    query `i` sits at position `T − w + i` and sees keys `0..=T − w + i`);
//! 2. `vote[j] = Σ_i A[i, j]` for `j` in the prefix `[0, T − w)`, and, under GQA, summed
//!    over the `GROUP` query heads of the KV head (the cache is per KV head; SnapKV itself
//!    is per head, its GQA ports average the group's votes — same ranking);
//! 3. 1-D pooling of the votes, kernel `k`, stride 1, padding `k / 2`: average
//!    (PyTorch `avg_pool1d`, padding counted: divide by `k`) or max (padding = -inf);
//! 4. the top-`(C − w)` pooled positions (ties: the lower position);
//! 5. the compressed cache: the selected keys/values (ascending position) followed by the
//!    last `w`, `C` rows per KV head.
//!
//! The host functions here are the algorithm (the f64 reference and the recall tool use
//! them). Row max / sum of `A` come first (passes 1-2), then the column sums (pass 3), so the
//! `w × T` matrix is never stored.
//!
//! Kernels ([`SnapKvCompress`], six launches): row statistics over key splits, their merge, column
//! votes over prefix tiles, pooling + tile top-k, candidate merge (sorted ascending),
//! gather of the compressed cache. Scores in log2 units with
//! `scale_log2 = log2(e) / √d`. The merge is one program per KV head over
//! `tiles · (C − w)` candidates: fine for the interpreter and small `C`; at 128K with
//! `C = 2048` it is the bottleneck (a radix select / threshold pass would replace it).

use tessera_codegen::host::HostTensor;
use tessera_codegen::ir::DType;
use tessera_dsl_support::prelude::*;
use tessera_runtime::DeviceTensor;

use crate::error::{expect, invalid, KernelError, TensorMeta};

/// Votes pooling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pool {
    Avg,
    Max,
}

/// Column votes over the prefix `[0, t − w)` of one KV head: `keys [t, d]`, `obs
/// [group · w, d]` (observation query `i` of each head at position `t − w + i`), scores
/// `scale · q·k` (natural-log units). Returns `t − w` votes summed over the group.
pub fn votes(keys: &[f32], t: usize, d: usize, obs: &[f32], w: usize, scale: f32) -> Vec<f32> {
    let rows = obs.len() / d;
    assert!(w > 0 && w <= t && rows.is_multiple_of(w), "votes: bad window");
    let prefix = t - w;
    let mut out = vec![0.0f32; prefix];
    let mut s = vec![0.0f32; t];
    for r in 0..rows {
        let i = r % w;
        let q = &obs[r * d..(r + 1) * d];
        let visible = t - w + i + 1;
        let mut m = f32::NEG_INFINITY;
        for (j, sj) in s[..visible].iter_mut().enumerate() {
            *sj = scale * crate::recall::dot(q, &keys[j * d..(j + 1) * d]);
            m = m.max(*sj);
        }
        let mut sum = 0.0f32;
        for sj in s[..visible].iter_mut() {
            *sj = (*sj - m).exp();
            sum += *sj;
        }
        let inv = 1.0 / sum;
        for (o, sj) in out.iter_mut().zip(&s[..prefix]) {
            *o += sj * inv;
        }
    }
    out
}

/// Stride-1 pooling with kernel `k` (odd or even) and padding `k / 2`, output length =
/// input length for odd `k` (PyTorch's length `n + 2·(k/2) − k + 1`; for even `k` the
/// output is one longer and its last element is dropped so positions stay aligned).
pub fn pool(v: &[f32], k: usize, kind: Pool) -> Vec<f32> {
    let n = v.len();
    let pad = k / 2;
    (0..n)
        .map(|i| {
            let lo = i as isize - pad as isize;
            let win = (lo..lo + k as isize).filter(|&j| j >= 0 && (j as usize) < n).map(|j| v[j as usize]);
            match kind {
                Pool::Avg => win.sum::<f32>() / k as f32,
                Pool::Max => win.fold(f32::NEG_INFINITY, f32::max),
            }
        })
        .collect()
}

/// The top-`c` positions of `scores` (descending, ties to the lower position), then sorted
/// ascending.
pub fn top_positions(scores: &[f32], c: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    let c = c.min(order.len());
    let cmp = |a: &usize, b: &usize| scores[*b].total_cmp(&scores[*a]).then(a.cmp(b));
    if c < order.len() && c > 0 {
        order.select_nth_unstable_by(c - 1, cmp);
    }
    order.truncate(c);
    order.sort_unstable();
    order
}

/// The kept positions of one KV head: top-`(c − w)` of the pooled prefix votes, then the
/// last `w` positions. `t <= c` keeps everything.
#[allow(clippy::too_many_arguments)]
pub fn select(
    keys: &[f32],
    t: usize,
    d: usize,
    obs: &[f32],
    w: usize,
    c: usize,
    kernel: usize,
    kind: Pool,
    scale: f32,
) -> Vec<usize> {
    if t <= c {
        return (0..t).collect();
    }
    let v = pool(&votes(keys, t, d, obs, w, scale), kernel, kind);
    let mut keep = top_positions(&v, c.saturating_sub(w));
    keep.extend(t - w..t);
    keep
}

/// f64 reference of one problem for the kernels: `q_obs [b, hkv, g·w, d]` (row `r` of a
/// KV head = observation query `r % w` of query head `r / w`), `k`/`v [b, hkv, cap, d]`
/// (bf16-rounded values), scores `scale_log2 · q·k` in log2 units. Returns per
/// `(b, kv_head)` `(pooled votes [t − w], kept prefix positions ascending)`.
#[allow(clippy::too_many_arguments)]
pub fn reference(
    dims: crate::reference::DecodeDims,
    w: usize,
    q_obs: &[f64],
    k: &[f64],
    t: usize,
    c: usize,
    kernel: usize,
    kind: Pool,
    scale_log2: f64,
) -> Vec<(Vec<f64>, Vec<usize>)> {
    let crate::reference::DecodeDims { batch, kv_heads, group, cap, head_dim: d } = dims;
    let rows = group * w;
    let prefix = t - w;
    let mut out = Vec::new();
    for bh in 0..batch * kv_heads {
        let mut votes = vec![0.0f64; prefix];
        for r in 0..rows {
            let q = &q_obs[(bh * rows + r) * d..][..d];
            let visible = prefix + r % w + 1;
            let s: Vec<f64> = (0..visible)
                .map(|j| scale_log2 * q.iter().zip(&k[(bh * cap + j) * d..][..d]).map(|(a, b)| a * b).sum::<f64>())
                .collect();
            let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let l: f64 = s.iter().map(|x| (x - m).exp2()).sum();
            for j in 0..prefix {
                votes[j] += (s[j] - m).exp2() / l;
            }
        }
        let pad = kernel / 2;
        let pooled: Vec<f64> = (0..prefix)
            .map(|i| {
                let win = (i as isize - pad as isize..i as isize - pad as isize + kernel as isize)
                    .filter(|&j| j >= 0 && (j as usize) < prefix)
                    .map(|j| votes[j as usize]);
                match kind {
                    Pool::Avg => win.sum::<f64>() / kernel as f64,
                    Pool::Max => win.fold(f64::NEG_INFINITY, f64::max),
                }
            })
            .collect();
        let mut order: Vec<usize> = (0..prefix).collect();
        order.sort_by(|&a, &b| pooled[b].total_cmp(&pooled[a]).then(a.cmp(&b)));
        order.truncate(c.saturating_sub(w).min(prefix));
        order.sort_unstable();
        out.push((pooled, order));
    }
    out
}

/// Pass 1: per observation row, partial log2 max / sum of `exp2(scale_log2 · q·k)` over
/// the visible keys (`j <= t − w + r % W`) of split `program_id(0)`. Grid `[S, Hkv, B]`.
#[kernel(tune(BLOCK_N = [64, 32, 128], WARPS = [4, 8]), example(GROUP = 4, WINDOW = 32, HEAD_DIM = 128))]
pub fn snapkv_row_stats<
    const GROUP: usize,
    const WINDOW: usize,
    const HEAD_DIM: usize,
    const BLOCK_N: usize,
    const WARPS: usize,
>(
    q_obs: Tensor<bf16, 4>,       // [B, Hkv, GROUP·WINDOW, D]
    k: Tensor<bf16, 4>,           // [B, Hkv, N, D]
    row_max: &mut Tensor<f32, 4>, // [B, Hkv, S, GROUP·WINDOW]
    row_sum: &mut Tensor<f32, 4>, // [B, Hkv, S, GROUP·WINDOW]
    scale_log2: f32,
    seq_len: i32,
    split_len: i32,
) {
    let split = program_id(0);
    let kv_head = program_id(1);
    let batch = program_id(2);
    let rows = GROUP * WINDOW;
    let q = q_obs.load([at(batch), at(kv_head), range(0, rows), range(0, HEAD_DIM)]);
    let last = (arange(0, rows) % WINDOW as i32 + (seq_len - WINDOW as i32)).expand_dims(1);
    let j0 = split * split_len;
    let j1 = min(j0 + split_len, seq_len);
    let mut m = full([rows], f32::NEG_INFINITY);
    let mut l = zeros([rows]);
    // Whole tiles of the prefix are visible to every row: no mask, and the running
    // maximum is finite after the first of them.
    let plain_end = max(j0, j0 + (min(j1, seq_len - WINDOW as i32) - j0) / BLOCK_N as i32 * BLOCK_N as i32);
    for kv_start in (j0..plain_end).step_by(BLOCK_N) {
        let keys = k.load([at(batch), at(kv_head), range(kv_start, BLOCK_N), range(0, HEAD_DIM)]);
        let s = dot_t(q, keys) * scale_log2;
        let m_new = max(m, s.max(1));
        l = l * exp2(m - m_new) + exp2(s - m_new.expand_dims(1)).sum(1);
        m = m_new;
    }
    for kv_start in (plain_end..j1).step_by(BLOCK_N) {
        let pos = arange(0, BLOCK_N) + kv_start;
        let inb = pos < j1;
        let keys = k.load_masked(
            [at(batch), at(kv_head), range(kv_start, BLOCK_N), range(0, HEAD_DIM)],
            inb.expand_dims(1),
            0.0,
        );
        let vis = inb && pos <= last;
        let s = where_(vis, dot_t(q, keys) * scale_log2, f32::NEG_INFINITY);
        let m_new = max(m, s.max(1));
        let m_use = where_(m_new == f32::NEG_INFINITY, 0.0, m_new);
        l = l * exp2(m - m_use) + exp2(s - m_use.expand_dims(1)).sum(1);
        m = m_new;
    }
    row_max.store([at(batch), at(kv_head), at(split), range(0, rows)], m);
    row_sum.store([at(batch), at(kv_head), at(split), range(0, rows)], l);
}

/// Pass 2: merges the `S` partial row statistics of each observation row into its log2
/// max `M_r` and `1 / L_r` (`L_r = Σ_s l_s · 2^{m_s − M_r}`), so the vote tiles read two
/// vectors instead of `S` partial rows each. Grid `[Hkv, B]`.
#[kernel(tune(WARPS = [4, 8]), example(GROUP = 4, WINDOW = 32, MAX_SPLITS = 64))]
pub fn snapkv_row_merge<const GROUP: usize, const WINDOW: usize, const MAX_SPLITS: usize, const WARPS: usize>(
    row_max: Tensor<f32, 4>,      // [B, Hkv, S, GROUP·WINDOW]
    row_sum: Tensor<f32, 4>,      // [B, Hkv, S, GROUP·WINDOW]
    row_m: &mut Tensor<f32, 3>,   // [B, Hkv, GROUP·WINDOW]
    row_inv: &mut Tensor<f32, 3>, // [B, Hkv, GROUP·WINDOW]
) {
    let kv_head = program_id(0);
    let batch = program_id(1);
    let rows = GROUP * WINDOW;
    let pm = row_max.load_or([at(batch), at(kv_head), range(0, MAX_SPLITS), range(0, rows)], f32::NEG_INFINITY);
    let pl = row_sum.load([at(batch), at(kv_head), range(0, MAX_SPLITS), range(0, rows)]);
    let m = pm.max(0);
    let m_use = where_(m == f32::NEG_INFINITY, 0.0, m);
    let l = (pl * exp2(pm - m_use)).sum(0);
    row_m.store([at(batch), at(kv_head), range(0, rows)], m_use);
    row_inv.store([at(batch), at(kv_head), range(0, rows)], 1.0 / where_(l > 0.0, l, 1.0));
}

/// Pass 3: the column votes of `BLOCK_N` prefix keys: `Σ_r exp2(s_rj − M_r) / L_r`
/// (prefix keys are visible to every row). Grid `[ceil((t − w) / BLOCK_N), Hkv, B]`.
#[kernel(tune(BLOCK_N = [128, 64, 32], WARPS = [8, 4]), example(GROUP = 4, WINDOW = 32, HEAD_DIM = 128))]
pub fn snapkv_votes<
    const GROUP: usize,
    const WINDOW: usize,
    const HEAD_DIM: usize,
    const BLOCK_N: usize,
    const WARPS: usize,
>(
    q_obs: Tensor<bf16, 4>,     // [B, Hkv, GROUP·WINDOW, D]
    k: Tensor<bf16, 4>,         // [B, Hkv, N, D]
    row_m: Tensor<f32, 3>,      // [B, Hkv, GROUP·WINDOW]
    row_inv: Tensor<f32, 3>,    // [B, Hkv, GROUP·WINDOW]
    votes: &mut Tensor<f32, 3>, // [B, Hkv, N]
    scale_log2: f32,
    prefix: i32,
) {
    let tile = program_id(0);
    let kv_head = program_id(1);
    let batch = program_id(2);
    let rows = GROUP * WINDOW;
    let m = row_m.load([at(batch), at(kv_head), range(0, rows)]);
    let inv = row_inv.load([at(batch), at(kv_head), range(0, rows)]);
    let q = q_obs.load([at(batch), at(kv_head), range(0, rows), range(0, HEAD_DIM)]);
    let j0 = tile * BLOCK_N as i32;
    let inb = arange(0, BLOCK_N) + j0 < prefix;
    let keys = k.load_masked([at(batch), at(kv_head), range(j0, BLOCK_N), range(0, HEAD_DIM)], inb.expand_dims(1), 0.0);
    let p = exp2(dot_t(q, keys) * scale_log2 - m.expand_dims(1)) * inv.expand_dims(1);
    votes.store_masked([at(batch), at(kv_head), range(j0, BLOCK_N)], p.sum(0), inb);
}

/// Pass 4: pooling (kernel `KSIZE`, padding `KSIZE / 2`, avg counts the padding, max pads
/// with -inf) of `POOL_TILE` prefix votes, then the tile's top-`TOPK` into candidates.
/// Grid `[ceil((t − w) / POOL_TILE), Hkv, B]`.
#[kernel(tune(POOL_TILE = [1024, 2048, 4096], WARPS = [4, 8]), constraint = "TOPK <= POOL_TILE", example(KSIZE = 7, MAX_POOL = 1, TOPK = 1024))]
pub fn snapkv_pool_topk<
    const KSIZE: usize,
    const MAX_POOL: usize,
    const POOL_TILE: usize,
    const TOPK: usize,
    const WARPS: usize,
>(
    votes: Tensor<f32, 3>,         // [B, Hkv, N]
    cand_val: &mut Tensor<f32, 3>, // [B, Hkv, tiles·TOPK]
    cand_idx: &mut Tensor<i32, 3>, // [B, Hkv, tiles·TOPK]
    prefix: i32,
) {
    let tile = program_id(0);
    let kv_head = program_id(1);
    let batch = program_id(2);
    let j0 = tile * POOL_TILE as i32;
    let pos = arange(0, POOL_TILE) + j0;
    let mut acc = zeros([POOL_TILE]);
    if MAX_POOL == 1 {
        acc = full([POOL_TILE], f32::NEG_INFINITY);
    }
    for o in 0..KSIZE as i32 {
        let src = pos + (o - (KSIZE / 2) as i32);
        let ok = src >= 0 && src < prefix;
        let x = votes.load_masked([at(batch), at(kv_head), gather(src)], ok, 0.0);
        if MAX_POOL == 1 {
            acc = max(acc, where_(ok, x, f32::NEG_INFINITY));
        } else {
            acc = acc + x;
        }
    }
    if MAX_POOL == 0 {
        acc = acc / KSIZE as f32;
    }
    let (vals, idx) = topk(where_(pos < prefix, acc, f32::NEG_INFINITY), TOPK);
    cand_val.store([at(batch), at(kv_head), range(tile * TOPK as i32, TOPK)], vals);
    cand_idx.store([at(batch), at(kv_head), range(tile * TOPK as i32, TOPK)], idx + j0);
}

/// Pass 5: top-`TOPK` of the candidates (ties: the earlier candidate = lower position),
/// sorted ascending by position (topk of `-pos`), into `keep_idx [B, Hkv, TOPK]` (-1
/// padding) + `keep_count [B, Hkv]`. Grid `[Hkv, B]`.
#[kernel(example(TOPK = 1024, CAND = 4096))]
pub fn snapkv_merge<const TOPK: usize, const CAND: usize, const WARPS: usize>(
    cand_val: Tensor<f32, 3>,
    cand_idx: Tensor<i32, 3>,
    keep_idx: &mut Tensor<i32, 3>,
    keep_count: &mut Tensor<i32, 2>,
) {
    let kv_head = program_id(0);
    let batch = program_id(1);
    let vals = cand_val.load_or([at(batch), at(kv_head), range(0, CAND)], f32::NEG_INFINITY);
    let (best, slot) = topk(vals, TOPK);
    let ids = cand_idx.load([at(batch), at(kv_head), gather(slot)]);
    let ok = best > f32::NEG_INFINITY;
    let (v, _s) = topk(where_(ok, -(ids.cast::<f32>()), f32::NEG_INFINITY), TOPK);
    let live = v > f32::NEG_INFINITY;
    keep_idx.store([at(batch), at(kv_head), range(0, TOPK)], where_(live, (-v).cast::<i32>(), -1));
    keep_count.store([at(batch), at(kv_head)], live.cast::<i32>().sum(0));
}

/// Pass 6: the compressed cache `[B, Hkv, C, D]`: row `r < count` is key/value
/// `keep_idx[r]`, rows `count .. count + w` the last `w` prompt tokens, the rest zero.
/// Grid `[ceil(C / ROWS), Hkv, B]`. Writes a separate cache: compacting in place would
/// let one program overwrite rows another still reads.
#[kernel(tune(ROWS = [64, 32, 128], WARPS = [4, 8]), example(WINDOW = 32, HEAD_DIM = 128))]
pub fn snapkv_compress<const WINDOW: usize, const HEAD_DIM: usize, const ROWS: usize, const WARPS: usize>(
    k: Tensor<bf16, 4>,          // [B, Hkv, N, D]
    v: Tensor<bf16, 4>,          // [B, Hkv, N, D]
    keep_idx: Tensor<i32, 3>,    // [B, Hkv, C − WINDOW]
    keep_count: Tensor<i32, 2>,  // [B, Hkv]
    k_out: &mut Tensor<bf16, 4>, // [B, Hkv, C, D]
    v_out: &mut Tensor<bf16, 4>, // [B, Hkv, C, D]
    seq_len: i32,
) {
    let tile = program_id(0);
    let kv_head = program_id(1);
    let batch = program_id(2);
    let count = keep_count.load([at(batch), at(kv_head)]);
    let r = arange(0, ROWS) + tile * ROWS as i32;
    let sel = r < count;
    let kept = keep_idx.load_masked([at(batch), at(kv_head), gather(r)], sel, 0);
    let win = r - count + (seq_len - WINDOW as i32);
    let in_win = !sel && r < count + WINDOW as i32;
    let pos = where_(sel, kept, win);
    let ok = (sel || in_win).expand_dims(1);
    let kr = k.load_masked([at(batch), at(kv_head), gather(pos), range(0, HEAD_DIM)], ok, 0.0);
    let vr = v.load_masked([at(batch), at(kv_head), gather(pos), range(0, HEAD_DIM)], ok, 0.0);
    k_out.store([at(batch), at(kv_head), range(tile * ROWS as i32, ROWS), range(0, HEAD_DIM)], kr);
    v_out.store([at(batch), at(kv_head), range(tile * ROWS as i32, ROWS), range(0, HEAD_DIM)], vr);
}

/// Keys per tile of the two passes over the keys: the row statistics (`block_n`, a
/// [`snapkv_row_stats`](SnapkvRowStats) loop tile) and the votes (`votes_block_n`, one [`snapkv_votes`](SnapkvVotes)
/// program). The default is what `new` / `cpu` build; the autotuner tries others.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapTiles {
    pub block_n: usize,
    pub votes_block_n: usize,
}

impl Default for SnapTiles {
    fn default() -> Self {
        SnapTiles { block_n: 64, votes_block_n: 128 }
    }
}

/// Host op: SnapKV selection + compression of a prompt of `t` tokens into `capacity`
/// slots (`capacity > window`; `t <= capacity` is the caller's "do nothing" case and is
/// refused here).
pub struct SnapKvCompress {
    pub group: usize,
    pub window: usize,
    pub head_dim: usize,
    pub capacity: usize,
    pub kernel_size: usize,
    pub pool: Pool,
    /// Keys per tile of the row statistics (pass 1).
    pub block_n: usize,
    /// Keys per program of the votes (pass 3).
    pub votes_block_n: usize,
    pub max_splits: usize,
    pub pool_tile: usize,
    /// Most candidates (`ceil(prefix / pool_tile) · (capacity − window)`), comptime.
    pub max_cand: usize,
    kernels: Option<SnapKernels>,
}

struct SnapKernels {
    stats: SnapkvRowStatsKernel,
    row_merge: SnapkvRowMergeKernel,
    votes: SnapkvVotesKernel,
    pool_topk: SnapkvPoolTopkKernel,
    merge: SnapkvMergeKernel,
    compress: SnapkvCompressKernel,
}

/// Launch plan of one compression.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapKvPlan {
    pub batch: usize,
    pub kv_heads: usize,
    pub prefix: usize,
    pub splits: usize,
    pub split_len: usize,
    pub cand: usize,
}

impl SnapKvCompress {
    const NAME: &'static str = "snapkv_compress";

    /// Configs of the six kernels. 8 warps for the two passes over the keys: their
    /// `G·w × BLOCK_N` score tiles (128 × 64 at G = 4, w = 32) spill at 4.
    pub fn configs(&self) -> [KernelConfig; 6] {
        let topk = (self.capacity - self.window) as i64;
        let (g, w, d) = (self.group as i64, self.window as i64, self.head_dim as i64);
        [
            KernelConfig::from_pairs(&[
                ("GROUP", g),
                ("WINDOW", w),
                ("HEAD_DIM", d),
                ("BLOCK_N", self.block_n as i64),
                ("WARPS", 8),
            ]),
            KernelConfig::from_pairs(&[
                ("GROUP", g),
                ("WINDOW", w),
                ("MAX_SPLITS", self.max_splits as i64),
                ("WARPS", 8),
            ]),
            KernelConfig::from_pairs(&[
                ("GROUP", g),
                ("WINDOW", w),
                ("HEAD_DIM", d),
                ("BLOCK_N", self.votes_block_n as i64),
                ("WARPS", 8),
            ]),
            KernelConfig::from_pairs(&[
                ("KSIZE", self.kernel_size as i64),
                ("MAX_POOL", (self.pool == Pool::Max) as i64),
                ("POOL_TILE", self.pool_tile as i64),
                ("TOPK", topk),
                ("WARPS", 8),
            ]),
            // One program per KV head: as many threads as the block allows help.
            KernelConfig::from_pairs(&[("TOPK", topk), ("CAND", self.max_cand as i64), ("WARPS", 16)]),
            KernelConfig::from_pairs(&[("WINDOW", w), ("HEAD_DIM", d), ("ROWS", 64), ("WARPS", 4)]),
        ]
    }

    #[allow(clippy::too_many_arguments)]
    fn make(
        group: usize,
        window: usize,
        head_dim: usize,
        capacity: usize,
        kernel_size: usize,
        pool: Pool,
        pool_tile: usize,
        max_cand: usize,
        rt: Option<&Runtime>,
    ) -> Result<Self, KernelError> {
        let keep = capacity.saturating_sub(window);
        if window == 0 || keep == 0 || kernel_size == 0 || keep > pool_tile || keep > max_cand {
            return Err(invalid(
                Self::NAME,
                format!(
                    "need window > 0, capacity > window, kernel > 0, capacity - window <= pool_tile, max_cand \
                     (window {window}, capacity {capacity}, kernel {kernel_size}, pool_tile {pool_tile}, max_cand {max_cand})"
                ),
            ));
        }
        let mut op = SnapKvCompress {
            group,
            window,
            head_dim,
            capacity,
            kernel_size,
            pool,
            block_n: SnapTiles::default().block_n,
            votes_block_n: SnapTiles::default().votes_block_n,
            // 1024-key splits at 128K: 1024 programs over 8 KV heads fill the GPU (16
            // splits left one program per SM working through 8K keys).
            max_splits: 128,
            pool_tile,
            max_cand,
            kernels: None,
        };
        op.kernels = Some(op.build_kernels(rt)?);
        Ok(op)
    }

    /// The op with other tile sizes for its passes over the keys (rebuilt kernels).
    pub fn with_tiles(mut self, rt: Option<&Runtime>, tiles: SnapTiles) -> Result<Self, KernelError> {
        if tiles.block_n == 0 || tiles.votes_block_n == 0 {
            return Err(invalid(Self::NAME, format!("tile sizes must be > 0 (got {tiles:?})")));
        }
        self.block_n = tiles.block_n;
        self.votes_block_n = tiles.votes_block_n;
        self.kernels = Some(self.build_kernels(rt)?);
        Ok(self)
    }

    fn build_kernels(&self, rt: Option<&Runtime>) -> Result<SnapKernels, KernelError> {
        let [a, m, b, c, d, e] = self.configs();
        Ok(match rt {
            None => SnapKernels {
                stats: SnapkvRowStats::cpu(&a)?,
                row_merge: SnapkvRowMerge::cpu(&m)?,
                votes: SnapkvVotes::cpu(&b)?,
                pool_topk: SnapkvPoolTopk::cpu(&c)?,
                merge: SnapkvMerge::cpu(&d)?,
                compress: SnapkvCompress::cpu(&e)?,
            },
            Some(rt) => SnapKernels {
                stats: SnapkvRowStats::new(rt, &a)?,
                row_merge: SnapkvRowMerge::new(rt, &m)?,
                votes: SnapkvVotes::new(rt, &b)?,
                pool_topk: SnapkvPoolTopk::new(rt, &c)?,
                merge: SnapkvMerge::new(rt, &d)?,
                compress: SnapkvCompress::new(rt, &e)?,
            },
        })
    }

    /// Interpreter op (`max_cand >= ceil(prefix / pool_tile) · (capacity − window)`).
    #[allow(clippy::too_many_arguments)]
    pub fn cpu(
        group: usize,
        window: usize,
        head_dim: usize,
        capacity: usize,
        kernel_size: usize,
        pool: Pool,
        pool_tile: usize,
        max_cand: usize,
    ) -> Result<Self, KernelError> {
        Self::make(group, window, head_dim, capacity, kernel_size, pool, pool_tile, max_cand, None)
    }

    /// GPU op.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        rt: &Runtime,
        group: usize,
        window: usize,
        head_dim: usize,
        capacity: usize,
        kernel_size: usize,
        pool: Pool,
        pool_tile: usize,
        max_cand: usize,
    ) -> Result<Self, KernelError> {
        Self::make(group, window, head_dim, capacity, kernel_size, pool, pool_tile, max_cand, Some(rt))
    }

    /// Checks `q_obs [B, Hkv, G·w, D] bf16` (= `[B, Hq, w, D]` reshaped), `k`/`v [B, Hkv,
    /// cap, D] bf16` with `capacity < t <= cap`, `k_out`/`v_out [B, Hkv, C, D] bf16`,
    /// `keep_idx [B, Hkv, C − w] i32`, `keep_count [B, Hkv] i32`.
    #[allow(clippy::too_many_arguments)]
    pub fn check_args(
        &self,
        q_obs: &dyn TensorMeta,
        k: &dyn TensorMeta,
        v: &dyn TensorMeta,
        t: usize,
        keep_idx: &dyn TensorMeta,
        keep_count: &dyn TensorMeta,
        k_out: &dyn TensorMeta,
        v_out: &dyn TensorMeta,
    ) -> Result<SnapKvPlan, KernelError> {
        let n = Self::NAME;
        let d = self.head_dim;
        expect(n, "k", k, DType::BF16, &[None, None, None, Some(d)])?;
        let s = k.shape();
        let (b, hkv, cap) = (s[0], s[1], s[2]);
        expect(n, "v", v, DType::BF16, &[Some(b), Some(hkv), Some(cap), Some(d)])?;
        expect(n, "q_obs", q_obs, DType::BF16, &[Some(b), Some(hkv), Some(self.group * self.window), Some(d)])?;
        let keep = self.capacity - self.window;
        expect(n, "keep_idx", keep_idx, DType::I32, &[Some(b), Some(hkv), Some(keep)])?;
        expect(n, "keep_count", keep_count, DType::I32, &[Some(b), Some(hkv)])?;
        expect(n, "k_out", k_out, DType::BF16, &[Some(b), Some(hkv), Some(self.capacity), Some(d)])?;
        expect(n, "v_out", v_out, DType::BF16, &[Some(b), Some(hkv), Some(self.capacity), Some(d)])?;
        if t > cap || t <= self.capacity || t > i32::MAX as usize {
            return Err(invalid(n, format!("need capacity {} < t {t} <= cache {cap}", self.capacity)));
        }
        let prefix = t - self.window;
        let (split_len, splits) = crate::split_plan(t, self.block_n, self.max_splits);
        let cand = prefix.div_ceil(self.pool_tile) * keep;
        if cand > self.max_cand {
            return Err(invalid(n, format!("{cand} candidates exceed max_cand = {}", self.max_cand)));
        }
        Ok(SnapKvPlan { batch: b, kv_heads: hkv, prefix, splits, split_len, cand })
    }

    fn grids(&self, p: &SnapKvPlan) -> [[u32; 3]; 6] {
        let (h, b) = (p.kv_heads as u32, p.batch as u32);
        [
            [p.splits as u32, h, b],
            [h, b, 1],
            [p.prefix.div_ceil(self.votes_block_n) as u32, h, b],
            [p.prefix.div_ceil(self.pool_tile) as u32, h, b],
            [h, b, 1],
            [self.capacity.div_ceil(64) as u32, h, b],
        ]
    }

    /// Runs the six passes on the interpreter; `votes [B, Hkv, cap] f32` is scratch the
    /// caller may inspect (prefix entries are the unpooled votes).
    #[allow(clippy::too_many_arguments)]
    pub fn run_cpu(
        &self,
        q_obs: &HostTensor,
        k: &HostTensor,
        v: &HostTensor,
        t: usize,
        votes: &mut HostTensor,
        keep_idx: &mut HostTensor,
        keep_count: &mut HostTensor,
        k_out: &mut HostTensor,
        v_out: &mut HostTensor,
    ) -> Result<SnapKvPlan, KernelError> {
        let p = self.check_args(q_obs, k, v, t, keep_idx, keep_count, k_out, v_out)?;
        expect(Self::NAME, "votes", votes, DType::F32, &[Some(p.batch), Some(p.kv_heads), Some(k.shape[2])])?;
        let g = self.grids(&p);
        let kn = self.kernels.as_ref().expect("built");
        let rows = self.group * self.window;
        let stat = [p.batch, p.kv_heads, p.splits, rows];
        let (mut m, mut l) =
            (HostTensor::full(DType::F32, &stat, f64::NAN), HostTensor::full(DType::F32, &stat, f64::NAN));
        let sc = crate::default_scale_log2(self.head_dim);
        kn.stats.run_cpu(g[0], q_obs, k, &mut m, &mut l, sc, t as i32, p.split_len as i32)?;
        let rs = [p.batch, p.kv_heads, rows];
        let (mut rm, mut ri) =
            (HostTensor::full(DType::F32, &rs, f64::NAN), HostTensor::full(DType::F32, &rs, f64::NAN));
        kn.row_merge.run_cpu(g[1], &m, &l, &mut rm, &mut ri)?;
        kn.votes.run_cpu(g[2], q_obs, k, &rm, &ri, votes, sc, p.prefix as i32)?;
        let cs = [p.batch, p.kv_heads, p.cand];
        let (mut cv, mut ci) = (HostTensor::full(DType::F32, &cs, f64::NAN), HostTensor::full(DType::I32, &cs, -7.0));
        kn.pool_topk.run_cpu(g[3], votes, &mut cv, &mut ci, p.prefix as i32)?;
        kn.merge.run_cpu(g[4], &cv, &ci, keep_idx, keep_count)?;
        kn.compress.run_cpu(g[5], k, v, keep_idx, keep_count, k_out, v_out, t as i32)?;
        Ok(p)
    }

    /// The same passes on the GPU (`votes` as in [`Self::run_cpu`]).
    #[allow(clippy::too_many_arguments)]
    pub fn launch(
        &self,
        rt: &Runtime,
        q_obs: &DeviceTensor,
        k: &DeviceTensor,
        v: &DeviceTensor,
        t: usize,
        votes: &DeviceTensor,
        keep_idx: &DeviceTensor,
        keep_count: &DeviceTensor,
        k_out: &DeviceTensor,
        v_out: &DeviceTensor,
    ) -> Result<SnapKvPlan, KernelError> {
        // The same launches with fresh buffers (allocated, as before, on every call).
        self.launch_with(rt, &crate::Scratch::new(), q_obs, k, v, t, votes, keep_idx, keep_count, k_out, v_out)
    }

    /// [`Self::launch`] with the row statistics and candidates kept in `scratch` (for
    /// timing loops: no allocation, memset or synchronization per call). Pass 1 writes
    /// every split's statistics and pass 3 every candidate slot before they are read.
    #[allow(clippy::too_many_arguments)]
    pub fn launch_with(
        &self,
        rt: &Runtime,
        scratch: &crate::Scratch,
        q_obs: &DeviceTensor,
        k: &DeviceTensor,
        v: &DeviceTensor,
        t: usize,
        votes: &DeviceTensor,
        keep_idx: &DeviceTensor,
        keep_count: &DeviceTensor,
        k_out: &DeviceTensor,
        v_out: &DeviceTensor,
    ) -> Result<SnapKvPlan, KernelError> {
        let p = self.check_args(q_obs, k, v, t, keep_idx, keep_count, k_out, v_out)?;
        expect(Self::NAME, "votes", votes, DType::F32, &[Some(p.batch), Some(p.kv_heads), Some(k.shape()[2])])?;
        let g = self.grids(&p);
        let kn = self.kernels.as_ref().expect("built");
        let st = rt.stream();
        let rows = self.group * self.window;
        let stat = [p.batch, p.kv_heads, p.splits, rows];
        let (m, l) = (scratch.get(rt, 0, DType::F32, &stat)?, scratch.get(rt, 1, DType::F32, &stat)?);
        let rs = [p.batch, p.kv_heads, rows];
        let (rm, ri) = (scratch.get(rt, 4, DType::F32, &rs)?, scratch.get(rt, 5, DType::F32, &rs)?);
        let sc = crate::default_scale_log2(self.head_dim);
        kn.stats.launch(st, g[0], q_obs, k, &m, &l, sc, t as i32, p.split_len as i32)?;
        kn.row_merge.launch(st, g[1], &m, &l, &rm, &ri)?;
        kn.votes.launch(st, g[2], q_obs, k, &rm, &ri, votes, sc, p.prefix as i32)?;
        let cs = [p.batch, p.kv_heads, p.cand];
        let (cv, ci) = (scratch.get(rt, 2, DType::F32, &cs)?, scratch.get(rt, 3, DType::I32, &cs)?);
        kn.pool_topk.launch(st, g[3], votes, &cv, &ci, p.prefix as i32)?;
        kn.merge.launch(st, g[4], &cv, &ci, keep_idx, keep_count)?;
        kn.compress.launch(st, g[5], k, v, keep_idx, keep_count, k_out, v_out, t as i32)?;
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooling_matches_pytorch() {
        let v = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(pool(&v, 3, Pool::Avg), vec![1.0, 2.0, 3.0, 4.0, 3.0]);
        assert_eq!(pool(&v, 3, Pool::Max), vec![2.0, 3.0, 4.0, 5.0, 5.0]);
        assert_eq!(pool(&v, 1, Pool::Avg), v.to_vec());
        assert_eq!(top_positions(&[0.5, 2.0, 2.0, 1.0], 2), vec![1, 2]);
        assert_eq!(top_positions(&[3.0, 1.0, 3.0, 3.0], 2), vec![0, 2]);
    }

    #[test]
    fn votes_sum_to_prefix_mass() {
        // One obs query per head, 2 heads: votes ≤ 2 and each column ≥ 0.
        let (t, d, w) = (9, 2, 3);
        let keys: Vec<f32> = (0..t * d).map(|i| (i as f32 * 0.37).sin()).collect();
        let obs: Vec<f32> = (0..2 * w * d).map(|i| (i as f32 * 0.11).cos()).collect();
        let v = votes(&keys, t, d, &obs, w, 1.0);
        assert_eq!(v.len(), t - w);
        let total: f32 = v.iter().sum();
        assert!(total > 0.0 && total < 2.0 * w as f32, "{total}");
        let sel = select(&keys, t, d, &obs, w, 5, 3, Pool::Max, 1.0);
        assert_eq!(sel.len(), 5);
        assert_eq!(&sel[2..], &[6, 7, 8]);
    }
}
