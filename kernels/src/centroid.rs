//! Centroid lookup (Squeezed Attention, algorithms.md §3), per (batch, KV head).
//!
//! **Offline** ([`KMeansCluster`]): Lloyd k-means over the keys of a fixed context
//! `[0, T_f)` from given initial centroids (deterministic seeds: [`init_centroids`]),
//! `I` iterations of
//!
//! 1. [`kmeans_assign`](KmeansAssign) — label = `argmax_c (x · c − |c|² / 2)` = the nearest centroid in
//!    L2 (ties: the lower centroid), `x` the key, L2-normalized when `normalize` (the
//!    paper clusters normalized keys);
//! 2. [`kmeans_accumulate`](KmeansAccumulate) — per-cluster sums of `x` and counts by atomics;
//! 3. [`kmeans_finalize`](KmeansFinalize) — centroid = sum / count (an empty cluster keeps its centroid);
//!
//! then one more accumulate + finalize over the **unnormalized** keys, so the stored
//! centroids are the mean raw keys of each cluster (as the paper stores them). On the host
//! the labels are counting-sorted (stable) into `perm` and cluster `starts` (a scan: no
//! prefix sum in the DSL), and [`centroid_permute`](CentroidPermute) writes the cache with the fixed keys
//! and values permuted by cluster — cluster `c` is rows `[starts[c], starts[c + 1])` —
//! and the recent rows `[T_f, seq_len)` unchanged.
//!
//! **Decode** ([`CentroidDecode`]):
//!
//! 1. [`centroid_tile_lse`](CentroidTileLse) then [`centroid_scores`](CentroidScores) — per cluster the log2 of the paper's
//!    estimated per-key probability `P̂_c = exp(q·c/√d) / Σ_k n_k exp(q·c_k/√d)`, maximum
//!    over the GQA group: every tile of 64 centroids of every head in parallel, first the
//!    tiles' partial log-sum-exps of the denominator, then (merging them) the scores;
//! 2. [`centroid_select`](CentroidSelect) — the top-`KEEP` clusters, of those the ones with
//!    `log2 P̂ > threshold` (threshold variant; `-inf` = pure top-k), as contiguous row
//!    ranges (ascending cluster id);
//! 3. [`centroid_pack_rows`](CentroidPackRows) — the kept ranges expanded into one packed
//!    row list per head (offsets = prefix sums of the kept lengths);
//! 4. [`crate::block_sparse`]'s split kernel with one-row blocks — attention over the
//!    packed rows plus the recent rows `[T_f, seq_len)` as its window, the grid sharing
//!    the actual rows evenly (`split_len = 0`), merged by [`crate::LseCombine`].
//!
//! [`kmeans_reference`], [`cluster_layout`], [`score_clusters`], [`select_clusters`] are
//! the host algorithm (f64 reference and `tessera recall`).

use tessera_codegen::host::HostTensor;
use tessera_codegen::ir::DType;
use tessera_dsl_support::prelude::*;
use tessera_runtime::DeviceTensor;

use crate::block_sparse::{BlockSparseDecode, BlockSparseDecodeSplit, BlockSparseDecodeSplitKernel};
use crate::combine::LseCombine;
use crate::dense::{split_combine_cpu, DecodeParams};
use crate::error::{expect, invalid, KernelError, TensorMeta};

// ---- host algorithm ---------------------------------------------------------------------

/// `c` distinct rows of `keys [t, d]` chosen by a seeded partial Fisher–Yates shuffle
/// (normalized when `normalize`): the initial centroids `[c, d]`.
pub fn init_centroids(keys: &[f64], t: usize, d: usize, c: usize, normalize: bool, seed: u64) -> Vec<f64> {
    let mut out = Vec::with_capacity(c * d);
    for j in init_indices(t, c, seed) {
        let row = &keys[j * d..(j + 1) * d];
        let inv = if normalize { inv_norm(row) } else { 1.0 };
        out.extend(row.iter().map(|x| x * inv));
    }
    out
}

/// The `c` distinct key indices of [`init_centroids`].
pub fn init_indices(t: usize, c: usize, seed: u64) -> Vec<usize> {
    assert!(c <= t && c > 0, "init_centroids: need 0 < c <= t");
    let mut idx: Vec<usize> = (0..t).collect();
    let mut s = seed ^ 0x9e37_79b9_7f4a_7c15;
    for i in 0..c {
        // splitmix64: deterministic and independent of the rand crate's version.
        s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        let j = i + (z % (t - i) as u64) as usize;
        idx.swap(i, j);
    }
    idx.truncate(c);
    idx
}

fn inv_norm(x: &[f64]) -> f64 {
    let n: f64 = x.iter().map(|v| v * v).sum();
    if n > 0.0 {
        1.0 / n.sqrt()
    } else {
        1.0
    }
}

/// A clustering of one (batch, KV head).
#[derive(Clone, Debug, PartialEq)]
pub struct Clustering {
    pub labels: Vec<usize>,
    /// `[c, d]`: the mean unnormalized key of each cluster (empty: the last centroid).
    pub centroids: Vec<f64>,
    pub counts: Vec<usize>,
    /// `[c, d]`: the centroids of the last assignment.
    pub assign_centroids: Vec<f64>,
}

/// Nearest centroid of `x` by `x·c − |c|²/2` (ties: lower index).
pub fn nearest(x: &[f64], centroids: &[f64], d: usize) -> usize {
    let mut best = (f64::NEG_INFINITY, 0);
    for (ci, c) in centroids.chunks_exact(d).enumerate() {
        let s: f64 = x.iter().zip(c).map(|(a, b)| a * b).sum::<f64>() - 0.5 * c.iter().map(|v| v * v).sum::<f64>();
        if s > best.0 {
            best = (s, ci);
        }
    }
    best.1
}

fn means(xs: &[f64], d: usize, labels: &[usize], old: &[f64]) -> (Vec<f64>, Vec<usize>) {
    let c = old.len() / d;
    let mut sum = vec![0.0; c * d];
    let mut cnt = vec![0usize; c];
    for (j, &l) in labels.iter().enumerate() {
        cnt[l] += 1;
        for (s, x) in sum[l * d..(l + 1) * d].iter_mut().zip(&xs[j * d..(j + 1) * d]) {
            *s += x;
        }
    }
    for ci in 0..c {
        let row = &mut sum[ci * d..(ci + 1) * d];
        if cnt[ci] == 0 {
            row.copy_from_slice(&old[ci * d..(ci + 1) * d]);
        } else {
            row.iter_mut().for_each(|x| *x /= cnt[ci] as f64);
        }
    }
    (sum, cnt)
}

/// Lloyd k-means of `keys [t, d]` from `init [c, d]`, `iters` × (assign, update), then the
/// raw-key means of the final labels (the algorithm of [`KMeansCluster`]).
pub fn kmeans_reference(keys: &[f64], t: usize, d: usize, init: &[f64], iters: usize, normalize: bool) -> Clustering {
    let xs: Vec<f64> = if normalize {
        keys[..t * d].chunks_exact(d).flat_map(|r| r.iter().map(move |x| x * inv_norm(r))).collect()
    } else {
        keys[..t * d].to_vec()
    };
    let mut cent = init.to_vec();
    let mut labels = vec![0usize; t];
    let mut assign = cent.clone();
    for _ in 0..iters {
        assign = cent.clone();
        for (j, l) in labels.iter_mut().enumerate() {
            *l = nearest(&xs[j * d..(j + 1) * d], &cent, d);
        }
        cent = means(&xs, d, &labels, &cent).0;
    }
    let (centroids, counts) = means(&keys[..t * d], d, &labels, &cent);
    Clustering { labels, centroids, counts, assign_centroids: assign }
}

/// Stable counting sort of `labels` into `c` clusters: `(perm, starts)` with `perm[r]` the
/// original position of permuted row `r` and cluster `i` = rows `[starts[i], starts[i+1])`.
pub fn cluster_layout(labels: &[usize], c: usize) -> (Vec<usize>, Vec<usize>) {
    let mut starts = vec![0usize; c + 1];
    for &l in labels {
        starts[l + 1] += 1;
    }
    for i in 0..c {
        starts[i + 1] += starts[i];
    }
    let mut next = starts.clone();
    let mut perm = vec![0usize; labels.len()];
    for (j, &l) in labels.iter().enumerate() {
        perm[next[l]] = j;
        next[l] += 1;
    }
    (perm, starts)
}

/// Cluster scores of one KV head: `max_g log2 P̂_c(q_g)` with
/// `log2 P̂_c = s_c − log2 Σ_k n_k 2^{s_k}`, `s = scale_log2 · q·c`; empty clusters -inf.
pub fn score_clusters(qs: &[f64], centroids: &[f64], counts: &[usize], d: usize, scale_log2: f64) -> Vec<f64> {
    let c = counts.len();
    let mut best = vec![f64::NEG_INFINITY; c];
    for q in qs.chunks_exact(d) {
        let s: Vec<f64> = centroids
            .chunks_exact(d)
            .map(|cc| scale_log2 * q.iter().zip(cc).map(|(a, b)| a * b).sum::<f64>())
            .collect();
        let m = s.iter().zip(counts).filter(|x| *x.1 > 0).map(|x| *x.0).fold(f64::NEG_INFINITY, f64::max);
        let l: f64 = s.iter().zip(counts).map(|(x, &n)| n as f64 * (x - m).exp2()).sum();
        let lse = m + l.log2();
        for i in 0..c {
            if counts[i] > 0 {
                best[i] = best[i].max(s[i] - lse);
            }
        }
    }
    best
}

/// The clusters [`centroid_select`](CentroidSelect) keeps: the top-`keep` scores (ties: lower id) above
/// `threshold` (and finite), ascending ids.
pub fn select_clusters(scores: &[f64], keep: usize, threshold: f64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    order.truncate(keep);
    order.retain(|&i| scores[i] > threshold && scores[i] > f64::NEG_INFINITY);
    order.sort_unstable();
    order
}

// ---- k-means kernels ----------------------------------------------------------------------

/// Labels of `KEY_TILE` keys of `[0, num_keys)`: the nearest centroid (`x·c − |c|²/2`,
/// ties to the lower centroid), `x·c` on the tensor cores as bf16 hi/lo halves. Grid `[ceil(num_keys / KEY_TILE), Hkv, B]`.
#[kernel(tune(KEY_TILE = [64, 32, 128], C_TILE = [64, 32, 128], WARPS = [4, 8]), example(HEAD_DIM = 128, NORMALIZE = 0))]
pub fn kmeans_assign<
    const HEAD_DIM: usize,
    const NORMALIZE: usize,
    const KEY_TILE: usize,
    const C_TILE: usize,
    const WARPS: usize,
>(
    k: Tensor<bf16, 4>,          // [B, Hkv, N, D]
    centroids: Tensor<f32, 4>,   // [B, Hkv, C, D]
    labels: &mut Tensor<i32, 3>, // [B, Hkv, T_f]
    num_keys: i32,
) {
    let tile = program_id(0);
    let kv_head = program_id(1);
    let batch = program_id(2);
    let nc = centroids.dim(2).cast::<i32>();
    let j0 = tile * KEY_TILE as i32;
    let inb = arange(0, KEY_TILE) + j0 < num_keys;
    let raw = k.load_masked([at(batch), at(kv_head), range(j0, KEY_TILE), range(0, HEAD_DIM)], inb.expand_dims(1), 0.0);
    let mut x = raw.cast::<f32>();
    if NORMALIZE == 1 {
        let n2 = (x * x).sum(1);
        x = x * where_(n2 > 0.0, n2, 1.0).rsqrt().expand_dims(1);
    }
    let xh = x.cast::<bf16>();
    let xl = (x - xh.cast::<f32>()).cast::<bf16>();
    let mut best = full([KEY_TILE], f32::NEG_INFINITY);
    let mut arg = arange(0, KEY_TILE) * 0;
    for cb in (0..nc).step_by(C_TILE) {
        let cv = arange(0, C_TILE) + cb < nc;
        let ct = centroids.load_masked(
            [at(batch), at(kv_head), range(cb, C_TILE), range(0, HEAD_DIM)],
            cv.expand_dims(1),
            0.0,
        );
        let half = (ct * ct).sum(1) * 0.5;
        // x·c on the tensor cores to ~f32 accuracy: c = c_hi + c_lo (bf16 each, exact
        // products, f32 accumulation); x is bf16 already unless normalized (then x_lo
        // too). The dropped x_lo·c_lo term is ~2^-16 of |x||c|.
        let ch = ct.cast::<bf16>();
        let cl = (ct - ch.cast::<f32>()).cast::<bf16>();
        let mut xc = dot_t(xh, ch) + dot_t(xh, cl);
        if NORMALIZE == 1 {
            xc = xc + dot_t(xl, ch);
        }
        let s = where_(cv, xc - half, f32::NEG_INFINITY);
        let m = s.max(1);
        let a = s.argmax(1) + cb;
        let better = m > best;
        arg = where_(better, a, arg);
        best = where_(better, m, best);
    }
    labels.store_masked([at(batch), at(kv_head), range(j0, KEY_TILE)], arg, inb);
}

/// Adds each key (normalized when `NORMALIZE`) to its cluster's sum and 1 to its count
/// (atomics). Grid `[ceil(num_keys / KEY_TILE), Hkv, B]`; `sums`/`counts` zeroed before.
#[kernel(tune(KEY_TILE = [64, 32, 128], WARPS = [4, 8]), example(HEAD_DIM = 128, NORMALIZE = 0))]
pub fn kmeans_accumulate<const HEAD_DIM: usize, const NORMALIZE: usize, const KEY_TILE: usize, const WARPS: usize>(
    k: Tensor<bf16, 4>,          // [B, Hkv, N, D]
    labels: Tensor<i32, 3>,      // [B, Hkv, T_f]
    sums: &mut Tensor<f32, 4>,   // [B, Hkv, C, D]
    counts: &mut Tensor<i32, 3>, // [B, Hkv, C]
    num_keys: i32,
) {
    let tile = program_id(0);
    let kv_head = program_id(1);
    let batch = program_id(2);
    let j0 = tile * KEY_TILE as i32;
    let inb = arange(0, KEY_TILE) + j0 < num_keys;
    let lab = labels.load_masked([at(batch), at(kv_head), range(j0, KEY_TILE)], inb, 0);
    let raw = k.load_masked([at(batch), at(kv_head), range(j0, KEY_TILE), range(0, HEAD_DIM)], inb.expand_dims(1), 0.0);
    let mut x = raw.cast::<f32>();
    if NORMALIZE == 1 {
        let n2 = (x * x).sum(1);
        x = x * where_(n2 > 0.0, n2, 1.0).rsqrt().expand_dims(1);
    }
    // Out-of-range rows add zeros to cluster 0 (the DSL has no masked atomics).
    sums.atomic_add([at(batch), at(kv_head), gather(lab), range(0, HEAD_DIM)], x);
    counts.atomic_add([at(batch), at(kv_head), gather(lab)], inb.cast::<i32>());
}

/// `next = sums / counts` per cluster, `old` where the count is 0. Grid
/// `[ceil(C / C_TILE), Hkv, B]`.
#[kernel(tune(C_TILE = [32, 64, 16], WARPS = [4, 8]), example(HEAD_DIM = 128))]
pub fn kmeans_finalize<const HEAD_DIM: usize, const C_TILE: usize, const WARPS: usize>(
    sums: Tensor<f32, 4>,      // [B, Hkv, C, D]
    counts: Tensor<i32, 3>,    // [B, Hkv, C]
    old: Tensor<f32, 4>,       // [B, Hkv, C, D]
    next: &mut Tensor<f32, 4>, // [B, Hkv, C, D]
) {
    let tile = program_id(0);
    let kv_head = program_id(1);
    let batch = program_id(2);
    let nc = old.dim(2).cast::<i32>();
    let cb = tile * C_TILE as i32;
    let cv = arange(0, C_TILE) + cb < nc;
    let rows = cv.expand_dims(1);
    let n = counts.load_masked([at(batch), at(kv_head), range(cb, C_TILE)], cv, 0);
    let s = sums.load_masked([at(batch), at(kv_head), range(cb, C_TILE), range(0, HEAD_DIM)], rows, 0.0);
    let o = old.load_masked([at(batch), at(kv_head), range(cb, C_TILE), range(0, HEAD_DIM)], rows, 0.0);
    let nonempty = n > 0;
    let mean = s / where_(nonempty, n.cast::<f32>(), 1.0).expand_dims(1);
    next.store_masked(
        [at(batch), at(kv_head), range(cb, C_TILE), range(0, HEAD_DIM)],
        where_(nonempty.expand_dims(1), mean, o),
        rows,
    );
}

/// The permuted cache: row `r < T_f` is row `perm[r]`, rows `[T_f, seq_len)` are copied.
/// Grid `[ceil(seq_len / ROWS), Hkv, B]`.
#[kernel(tune(ROWS = [64, 32, 128], WARPS = [4, 8]), example(HEAD_DIM = 128))]
pub fn centroid_permute<const HEAD_DIM: usize, const ROWS: usize, const WARPS: usize>(
    k: Tensor<bf16, 4>,          // [B, Hkv, N, D]
    v: Tensor<bf16, 4>,          // [B, Hkv, N, D]
    perm: Tensor<i32, 3>,        // [B, Hkv, T_f]
    k_out: &mut Tensor<bf16, 4>, // [B, Hkv, N, D]
    v_out: &mut Tensor<bf16, 4>, // [B, Hkv, N, D]
    fixed_len: i32,
    seq_len: i32,
) {
    let tile = program_id(0);
    let kv_head = program_id(1);
    let batch = program_id(2);
    let r0 = tile * ROWS as i32;
    let r = arange(0, ROWS) + r0;
    let live = r < seq_len;
    let fixed = r < fixed_len;
    let p = perm.load_masked([at(batch), at(kv_head), range(r0, ROWS)], fixed, 0);
    let pos = where_(fixed, p, r);
    let ok = live.expand_dims(1);
    let kr = k.load_masked([at(batch), at(kv_head), gather(pos), range(0, HEAD_DIM)], ok, 0.0);
    let vr = v.load_masked([at(batch), at(kv_head), gather(pos), range(0, HEAD_DIM)], ok, 0.0);
    k_out.store_masked([at(batch), at(kv_head), range(r0, ROWS), range(0, HEAD_DIM)], kr, ok);
    v_out.store_masked([at(batch), at(kv_head), range(r0, ROWS), range(0, HEAD_DIM)], vr, ok);
}

// ---- decode kernels -----------------------------------------------------------------------

/// Per tile of `C_TILE` clusters, the partial log2-sum-exp of `s_gc + log2 n_c`
/// (`s = scale_log2 · q_g · c`) for each query head `g` of the group: `part_m` (the tile's
/// maximum, -inf when every cluster of the tile is empty) and `part_l` (`Σ 2^{x − m}`),
/// and the scores `s` themselves (`s_raw`, so [`centroid_scores`](CentroidScores) reads `G` floats per
/// cluster instead of its `D`-float centroid a second time). Grid `[tiles, Hkv, B]`:
/// every tile of every head at once, so the centroids stream through all SMs.
#[kernel(tune(C_TILE = [64, 128, 32], WARPS = [4, 8]), example(GROUP = 4, HEAD_DIM = 128))]
pub fn centroid_tile_lse<const GROUP: usize, const HEAD_DIM: usize, const C_TILE: usize, const WARPS: usize>(
    q: Tensor<bf16, 3>,          // [B, Hq, D]
    centroids: Tensor<f32, 4>,   // [B, Hkv, C, D]
    counts: Tensor<i32, 3>,      // [B, Hkv, C]
    part_m: &mut Tensor<f32, 4>, // [B, Hkv, T, GROUP]
    part_l: &mut Tensor<f32, 4>, // [B, Hkv, T, GROUP]
    s_raw: &mut Tensor<f32, 4>,  // [B, Hkv, GROUP, C]
    scale_log2: f32,
) {
    let tile = program_id(0);
    let kv_head = program_id(1);
    let batch = program_id(2);
    let cb = tile * C_TILE as i32;
    let nc = centroids.dim(2).cast::<i32>();
    let qt = q.load([at(batch), range(kv_head * GROUP as i32, GROUP), range(0, HEAD_DIM)]).cast::<f32>();
    let cv = arange(0, C_TILE) + cb < nc;
    let ct =
        centroids.load_masked([at(batch), at(kv_head), range(cb, C_TILE), range(0, HEAD_DIM)], cv.expand_dims(1), 0.0);
    let n = counts.load_masked([at(batch), at(kv_head), range(cb, C_TILE)], cv, 0);
    let w = where_(n > 0, log2(where_(n > 0, n.cast::<f32>(), 1.0)), f32::NEG_INFINITY);
    let s = dot_t(qt, ct) * scale_log2;
    s_raw.store_masked([at(batch), at(kv_head), range(0, GROUP), range(cb, C_TILE)], s, cv.expand_dims(0));
    let x = s + w;
    let m = x.max(1);
    let m_use = where_(m == f32::NEG_INFINITY, 0.0, m);
    let l = exp2(x - m_use.expand_dims(1)).sum(1);
    part_m.store([at(batch), at(kv_head), at(tile), range(0, GROUP)], m);
    part_l.store([at(batch), at(kv_head), at(tile), range(0, GROUP)], l);
}

/// `scores[c] = max_g (s_gc − log2 Σ_k n_k 2^{s_gk})`, `s = scale_log2 · q_g · c` (empty
/// clusters -inf): the paper's estimated per-key probability in log2, the normalizer merged
/// from the `≤ MAX_TILES` partials of [`centroid_tile_lse`](CentroidTileLse), `s` as it stored it. Grid
/// `[tiles, Hkv, B]`.
#[kernel(tune(C_TILE = [64, 128, 32], WARPS = [4, 8]), example(GROUP = 4, MAX_TILES = 128))]
pub fn centroid_scores<const GROUP: usize, const C_TILE: usize, const MAX_TILES: usize, const WARPS: usize>(
    s_raw: Tensor<f32, 4>,       // [B, Hkv, GROUP, C]
    counts: Tensor<i32, 3>,      // [B, Hkv, C]
    part_m: Tensor<f32, 4>,      // [B, Hkv, T, GROUP]
    part_l: Tensor<f32, 4>,      // [B, Hkv, T, GROUP]
    scores: &mut Tensor<f32, 3>, // [B, Hkv, C]
) {
    let tile = program_id(0);
    let kv_head = program_id(1);
    let batch = program_id(2);
    let pm = part_m.load_or([at(batch), at(kv_head), range(0, MAX_TILES), range(0, GROUP)], f32::NEG_INFINITY);
    let pl = part_l.load_or([at(batch), at(kv_head), range(0, MAX_TILES), range(0, GROUP)], 0.0);
    let m = pm.max(0);
    let m_use = where_(m == f32::NEG_INFINITY, 0.0, m);
    let l = (pl * exp2(pm - m_use.expand_dims(0))).sum(0);
    let lse = m_use + log2(where_(l > 0.0, l, 1.0));
    let cb = tile * C_TILE as i32;
    let nc = counts.dim(2).cast::<i32>();
    let cv = arange(0, C_TILE) + cb < nc;
    let raw = s_raw.load_masked([at(batch), at(kv_head), range(0, GROUP), range(cb, C_TILE)], cv.expand_dims(0), 0.0);
    let n = counts.load_masked([at(batch), at(kv_head), range(cb, C_TILE)], cv, 0);
    let s = (raw - lse.expand_dims(1)).max(0);
    scores.store_masked([at(batch), at(kv_head), range(cb, C_TILE)], where_(n > 0, s, f32::NEG_INFINITY), cv);
}

/// The top-`KEEP` clusters (ties: lower id) with score `> threshold`, ascending ids, as
/// row ranges `keep_start`/`keep_len [B, Hkv, KEEP]` (unused slots 0/0) and `keep_count`.
/// Grid `[Hkv, B]`.
#[kernel(example(KEEP = 64, CAND = 1024))]
pub fn centroid_select<const KEEP: usize, const CAND: usize, const WARPS: usize>(
    scores: Tensor<f32, 3>,          // [B, Hkv, C]
    starts: Tensor<i32, 3>,          // [B, Hkv, C + 1]
    keep_start: &mut Tensor<i32, 3>, // [B, Hkv, KEEP]
    keep_len: &mut Tensor<i32, 3>,   // [B, Hkv, KEEP]
    keep_count: &mut Tensor<i32, 2>, // [B, Hkv]
    threshold: f32,
) {
    let kv_head = program_id(0);
    let batch = program_id(1);
    let s = scores.load_or([at(batch), at(kv_head), range(0, CAND)], f32::NEG_INFINITY);
    let (v, cl) = topk(s, KEEP);
    let ok = v > threshold && v > f32::NEG_INFINITY;
    let (u, _slot) = topk(where_(ok, -(cl.cast::<f32>()), f32::NEG_INFINITY), KEEP);
    let live = u > f32::NEG_INFINITY;
    let id = where_(live, (-u).cast::<i32>(), 0);
    let st = starts.load([at(batch), at(kv_head), gather(id)]);
    let en = starts.load([at(batch), at(kv_head), gather(id + 1)]);
    keep_start.store([at(batch), at(kv_head), range(0, KEEP)], where_(live, st, 0));
    keep_len.store([at(batch), at(kv_head), range(0, KEEP)], where_(live, en - st, 0));
    keep_count.store([at(batch), at(kv_head)], live.cast::<i32>().sum(0));
}

/// Expands the kept row ranges into one packed row list per (batch, KV head): slot `j`'s
/// rows `[keep_start[j], keep_start[j] + keep_len[j])` land at `rows[off_j ..]`, `off_j =
/// Σ_{i<j} keep_len[i]`, and `n_rows = Σ keep_len`. The attention then reads whole tiles of
/// kept rows ([`crate::block_sparse`] with one-row blocks) instead of one partly masked
/// tile per short cluster (kept clusters average ~20 rows). Each program expands `SLOTS`
/// slots; unused slots have length 0. Grid `[ceil(KEEP / SLOTS), Hkv, B]`.
#[kernel(tune(ROWS = [32, 64], WARPS = [4]), example(KEEP = 64, SLOTS = 8))]
pub fn centroid_pack_rows<const KEEP: usize, const SLOTS: usize, const ROWS: usize, const WARPS: usize>(
    keep_start: Tensor<i32, 3>,  // [B, Hkv, KEEP]
    keep_len: Tensor<i32, 3>,    // [B, Hkv, KEEP]
    rows: &mut Tensor<i32, 3>,   // [B, Hkv, T_f]
    n_rows: &mut Tensor<i32, 2>, // [B, Hkv]
) {
    let chunk = program_id(0);
    let kv_head = program_id(1);
    let batch = program_id(2);
    let lens = max(keep_len.load([at(batch), at(kv_head), range(0, KEEP)]), 0);
    let slot_ids = arange(0, KEEP);
    if chunk == 0 {
        n_rows.store([at(batch), at(kv_head)], lens.sum(0));
    }
    // One block-wide sum for the chunk's first offset, then a running scalar (a sum per
    // slot cost 16 reductions per program: 34 µs at B8 by ncu).
    let mut off = where_(slot_ids < chunk * SLOTS as i32, lens, 0).sum(0);
    for i in 0..SLOTS as i32 {
        let slot = chunk * SLOTS as i32 + i;
        let sc = min(slot, KEEP as i32 - 1);
        let st = keep_start.load([at(batch), at(kv_head), at(sc)]);
        let ln = where_(slot < KEEP as i32, max(keep_len.load([at(batch), at(kv_head), at(sc)]), 0), 0);
        for r0 in (0..ln).step_by(ROWS) {
            let r = arange(0, ROWS) + r0;
            rows.store_masked([at(batch), at(kv_head), range(off + r0, ROWS)], r + st, r < ln);
        }
        off = off + ln;
    }
}

// ---- host ops -----------------------------------------------------------------------------

/// Per-(b, h) `(perm [B, Hkv, T_f], starts [B, Hkv, C + 1])` i32 from `labels [B, Hkv, T_f]`.
pub fn layout_tensors(labels: &HostTensor, clusters: usize) -> (HostTensor, HostTensor) {
    let s = &labels.shape;
    let (b, h, t) = (s[0], s[1], s[2]);
    let l = labels.to_f64();
    let (mut perm, mut starts) = (Vec::with_capacity(b * h * t), Vec::with_capacity(b * h * (clusters + 1)));
    for bh in 0..b * h {
        let lab: Vec<usize> = l[bh * t..(bh + 1) * t].iter().map(|&x| x as usize).collect();
        let (p, st) = cluster_layout(&lab, clusters);
        perm.extend(p.iter().map(|&x| x as f64));
        starts.extend(st.iter().map(|&x| x as f64));
    }
    (
        HostTensor::from_f64(DType::I32, &[b, h, t], &perm),
        HostTensor::from_f64(DType::I32, &[b, h, clusters + 1], &starts),
    )
}

/// The clustering of a whole cache on the host side (interpreter run).
#[derive(Clone, Debug)]
pub struct ClusterOut {
    /// `[B, Hkv, T_f] i32`.
    pub labels: HostTensor,
    /// `[B, Hkv, C, D] f32`: mean raw key per cluster (decode centroids).
    pub centroids: HostTensor,
    /// `[B, Hkv, C, D] f32`: the centroids of the last assignment.
    pub assign_centroids: HostTensor,
    /// `[B, Hkv, C] i32`.
    pub counts: HostTensor,
    /// `[B, Hkv, C + 1] i32`.
    pub starts: HostTensor,
    /// `[B, Hkv, T_f] i32`.
    pub perm: HostTensor,
}

/// The same on the GPU: device centroids / counts / starts for [`CentroidDecode`], host
/// labels and permutation.
pub struct DeviceClusters {
    pub centroids: DeviceTensor,
    pub assign_centroids: DeviceTensor,
    pub counts: DeviceTensor,
    pub starts: DeviceTensor,
    pub labels: HostTensor,
    pub perm: HostTensor,
}

struct KmKernels {
    assign: KmeansAssignKernel,
    accumulate: KmeansAccumulateKernel,
    accumulate_raw: KmeansAccumulateKernel,
    finalize: KmeansFinalizeKernel,
    permute: CentroidPermuteKernel,
}

/// Host op: k-means of the fixed context `[0, T_f)` per (batch, KV head) + the permuted
/// cache (see the module docs).
pub struct KMeansCluster {
    pub head_dim: usize,
    pub normalize: bool,
    pub key_tile: usize,
    pub c_tile: usize,
    kernels: KmKernels,
}

/// Shapes of one clustering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KMeansPlan {
    pub batch: usize,
    pub kv_heads: usize,
    pub clusters: usize,
    pub key_grid: [u32; 3],
    pub c_grid: [u32; 3],
    pub row_grid: [u32; 3],
}

impl KMeansCluster {
    const NAME: &'static str = "kmeans_cluster";

    fn configs(head_dim: usize, normalize: bool, key_tile: usize, c_tile: usize) -> [KernelConfig; 5] {
        let d = head_dim as i64;
        let assign = |n: bool| {
            KernelConfig::from_pairs(&[
                ("HEAD_DIM", d),
                ("NORMALIZE", n as i64),
                ("KEY_TILE", key_tile as i64),
                ("C_TILE", c_tile as i64),
                // 8 warps: at 4 the key tile, its hi/lo halves and three score tiles
                // spill (255 registers at KEY_TILE = C_TILE = 64, d = 128).
                ("WARPS", 8),
            ])
        };
        let acc = |n: bool| {
            KernelConfig::from_pairs(&[
                ("HEAD_DIM", d),
                ("NORMALIZE", n as i64),
                ("KEY_TILE", key_tile as i64),
                ("WARPS", 4),
            ])
        };
        [
            assign(normalize),
            acc(normalize),
            acc(false),
            KernelConfig::from_pairs(&[("HEAD_DIM", d), ("C_TILE", 32), ("WARPS", 4)]),
            KernelConfig::from_pairs(&[("HEAD_DIM", d), ("ROWS", 64), ("WARPS", 4)]),
        ]
    }

    fn make(
        head_dim: usize,
        normalize: bool,
        key_tile: usize,
        c_tile: usize,
        rt: Option<&Runtime>,
    ) -> Result<Self, KernelError> {
        if key_tile == 0 || c_tile == 0 {
            return Err(invalid(Self::NAME, "need key_tile, c_tile > 0"));
        }
        let [a, b, c, d, e] = Self::configs(head_dim, normalize, key_tile, c_tile);
        let kernels = match rt {
            None => KmKernels {
                assign: KmeansAssign::cpu(&a)?,
                accumulate: KmeansAccumulate::cpu(&b)?,
                accumulate_raw: KmeansAccumulate::cpu(&c)?,
                finalize: KmeansFinalize::cpu(&d)?,
                permute: CentroidPermute::cpu(&e)?,
            },
            Some(rt) => KmKernels {
                assign: KmeansAssign::new(rt, &a)?,
                accumulate: KmeansAccumulate::new(rt, &b)?,
                accumulate_raw: KmeansAccumulate::new(rt, &c)?,
                finalize: KmeansFinalize::new(rt, &d)?,
                permute: CentroidPermute::new(rt, &e)?,
            },
        };
        Ok(KMeansCluster { head_dim, normalize, key_tile, c_tile, kernels })
    }

    /// Interpreter op.
    pub fn cpu(head_dim: usize, normalize: bool, key_tile: usize, c_tile: usize) -> Result<Self, KernelError> {
        Self::make(head_dim, normalize, key_tile, c_tile, None)
    }

    /// GPU op.
    pub fn new(
        rt: &Runtime,
        head_dim: usize,
        normalize: bool,
        key_tile: usize,
        c_tile: usize,
    ) -> Result<Self, KernelError> {
        Self::make(head_dim, normalize, key_tile, c_tile, Some(rt))
    }

    /// Checks `k`/`v [B, Hkv, cap, D] bf16`, `init [B, Hkv, C, D] f32` with
    /// `1 <= C <= fixed_len <= seq_len <= cap`, `k_out`/`v_out` like `k`.
    #[allow(clippy::too_many_arguments)]
    pub fn check_args(
        &self,
        k: &dyn TensorMeta,
        v: &dyn TensorMeta,
        fixed_len: usize,
        seq_len: usize,
        init: &dyn TensorMeta,
        k_out: &dyn TensorMeta,
        v_out: &dyn TensorMeta,
    ) -> Result<KMeansPlan, KernelError> {
        let n = Self::NAME;
        let d = self.head_dim;
        expect(n, "k", k, DType::BF16, &[None, None, None, Some(d)])?;
        let s = k.shape();
        let (b, h, cap) = (s[0], s[1], s[2]);
        expect(n, "v", v, DType::BF16, &[Some(b), Some(h), Some(cap), Some(d)])?;
        expect(n, "k_out", k_out, DType::BF16, &[Some(b), Some(h), Some(cap), Some(d)])?;
        expect(n, "v_out", v_out, DType::BF16, &[Some(b), Some(h), Some(cap), Some(d)])?;
        expect(n, "init", init, DType::F32, &[Some(b), Some(h), None, Some(d)])?;
        let c = init.shape()[2];
        if c == 0 || c > fixed_len || fixed_len > seq_len || seq_len > cap || cap > i32::MAX as usize / 2 {
            return Err(invalid(
                n,
                format!("need 1 <= clusters {c} <= fixed_len {fixed_len} <= seq_len {seq_len} <= cache {cap}"),
            ));
        }
        let (bu, hu) = (b as u32, h as u32);
        Ok(KMeansPlan {
            batch: b,
            kv_heads: h,
            clusters: c,
            key_grid: [fixed_len.div_ceil(self.key_tile) as u32, hu, bu],
            c_grid: [c.div_ceil(32) as u32, hu, bu],
            row_grid: [seq_len.div_ceil(64) as u32, hu, bu],
        })
    }

    /// `iters` Lloyd iterations on the interpreter, the raw-key means, the host layout and
    /// the permuted cache (`k_out`/`v_out` rows `>= seq_len` are left as they were).
    #[allow(clippy::too_many_arguments)]
    pub fn run_cpu(
        &self,
        k: &HostTensor,
        v: &HostTensor,
        fixed_len: usize,
        seq_len: usize,
        init: &HostTensor,
        iters: usize,
        k_out: &mut HostTensor,
        v_out: &mut HostTensor,
    ) -> Result<ClusterOut, KernelError> {
        let p = self.check_args(k, v, fixed_len, seq_len, init, k_out, v_out)?;
        if iters == 0 {
            return Err(invalid(Self::NAME, "need at least one iteration"));
        }
        let kn = &self.kernels;
        let (b, h, c, d) = (p.batch, p.kv_heads, p.clusters, self.head_dim);
        let tf = fixed_len as i32;
        let mut labels = HostTensor::full(DType::I32, &[b, h, fixed_len], -5.0);
        let mut cent = init.clone();
        let mut assign = init.clone();
        let zs = || HostTensor::full(DType::F32, &[b, h, c, d], 0.0);
        let zc = || HostTensor::full(DType::I32, &[b, h, c], 0.0);
        let mut counts = zc();
        for _ in 0..iters {
            kn.assign.run_cpu(p.key_grid, k, &cent, &mut labels, tf)?;
            let (mut sums, mut cnt) = (zs(), zc());
            kn.accumulate.run_cpu(p.key_grid, k, &labels, &mut sums, &mut cnt, tf)?;
            let mut next = zs();
            kn.finalize.run_cpu(p.c_grid, &sums, &cnt, &cent, &mut next)?;
            assign = std::mem::replace(&mut cent, next);
            counts = cnt;
        }
        let centroids = if self.normalize {
            let (mut sums, mut cnt) = (zs(), zc());
            kn.accumulate_raw.run_cpu(p.key_grid, k, &labels, &mut sums, &mut cnt, tf)?;
            let mut next = zs();
            kn.finalize.run_cpu(p.c_grid, &sums, &cnt, &cent, &mut next)?;
            counts = cnt;
            next
        } else {
            cent
        };
        let (perm, starts) = layout_tensors(&labels, c);
        kn.permute.run_cpu(p.row_grid, k, v, &perm, k_out, v_out, tf, seq_len as i32)?;
        Ok(ClusterOut { labels, centroids, assign_centroids: assign, counts, starts, perm })
    }

    /// The same on the GPU. Synchronizes once, to download the labels for the host
    /// counting sort (no scan in the DSL), then uploads `perm`/`starts` and permutes.
    #[allow(clippy::too_many_arguments)]
    pub fn launch(
        &self,
        rt: &Runtime,
        k: &DeviceTensor,
        v: &DeviceTensor,
        fixed_len: usize,
        seq_len: usize,
        init: &DeviceTensor,
        iters: usize,
        k_out: &DeviceTensor,
        v_out: &DeviceTensor,
    ) -> Result<DeviceClusters, KernelError> {
        let p = self.check_args(k, v, fixed_len, seq_len, init, k_out, v_out)?;
        if iters == 0 {
            return Err(invalid(Self::NAME, "need at least one iteration"));
        }
        let kn = &self.kernels;
        let st = rt.stream();
        let (b, h, c, d) = (p.batch, p.kv_heads, p.clusters, self.head_dim);
        let tf = fixed_len as i32;
        let labels = DeviceTensor::zeros(st, DType::I32, &[b, h, fixed_len])?;
        let zs = || DeviceTensor::zeros(st, DType::F32, &[b, h, c, d]);
        let zc = || DeviceTensor::zeros(st, DType::I32, &[b, h, c]);
        // Ping-pong centroid buffers: `cent` is read, `next` written.
        let mut cent = zs()?;
        let mut next = zs()?;
        kn.finalize.launch(st, p.c_grid, &zs()?, &zc()?, init, &cent)?; // copy of init
        let mut assign = zs()?;
        let mut counts = zc()?;
        for _ in 0..iters {
            kn.assign.launch(st, p.key_grid, k, &cent, &labels, tf)?;
            let (sums, cnt) = (zs()?, zc()?);
            kn.accumulate.launch(st, p.key_grid, k, &labels, &sums, &cnt, tf)?;
            kn.finalize.launch(st, p.c_grid, &sums, &cnt, &cent, &next)?;
            std::mem::swap(&mut cent, &mut next);
            std::mem::swap(&mut assign, &mut next);
            counts = cnt;
        }
        let centroids = if self.normalize {
            let (sums, cnt) = (zs()?, zc()?);
            kn.accumulate_raw.launch(st, p.key_grid, k, &labels, &sums, &cnt, tf)?;
            let out = zs()?;
            kn.finalize.launch(st, p.c_grid, &sums, &cnt, &cent, &out)?;
            counts = cnt;
            out
        } else {
            cent
        };
        rt.synchronize()?;
        let labels_h = labels.download()?;
        let (perm, starts) = layout_tensors(&labels_h, c);
        let (perm_d, starts_d) = (DeviceTensor::upload(st, &perm)?, DeviceTensor::upload(st, &starts)?);
        kn.permute.launch(st, p.row_grid, k, v, &perm_d, k_out, v_out, tf, seq_len as i32)?;
        rt.synchronize()?;
        Ok(DeviceClusters { centroids, assign_centroids: assign, counts, starts: starts_d, labels: labels_h, perm })
    }
}

/// Launch plan of one centroid decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CentroidPlan {
    pub batch: usize,
    pub kv_heads: usize,
    pub clusters: usize,
    /// Attention splits per (batch, KV head): `params.max_splits`, sharing the kept and
    /// recent rows evenly on the device.
    pub splits: usize,
}

impl CentroidPlan {
    pub(crate) fn new(batch: usize, kv_heads: usize, clusters: usize, p: &DecodeParams) -> Self {
        CentroidPlan { batch, kv_heads, clusters, splits: p.max_splits.max(1) }
    }
}

/// The attention step of the centroid lookups (one- and two-level): the kept row ranges
/// `[keep_start, keep_len]` are packed into one row list per (batch, KV head)
/// ([`centroid_pack_rows`](CentroidPackRows)), then attended with the recent rows `[T_f,
/// seq_len)` as the window of a block-sparse decode with one-row blocks
/// ([`crate::block_sparse`], the grid sharing the actual rows evenly), merged by
/// [`LseCombine`].
pub(crate) struct KeptRangeAttention {
    pack: CentroidPackRowsKernel,
    slots: usize,
    attn: BlockSparseDecodeSplitKernel,
    combine: LseCombine,
}

/// Scratch slots of the packed rows and their counts (above those the ops use).
const ROWS_SLOT: usize = 30;

impl KeptRangeAttention {
    /// `pack` / `attn`: the configs of [`CentroidDecode::configs`]; `splits`: the combine's
    /// bound ([`CentroidDecode::combine_splits`]).
    pub(crate) fn new(
        rt: Option<&Runtime>,
        pack: &KernelConfig,
        attn: &KernelConfig,
        p: &DecodeParams,
        splits: usize,
    ) -> Result<Self, KernelError> {
        let slots = pack.get("SLOTS").unwrap_or(1).max(1) as usize;
        Ok(match rt {
            None => KeptRangeAttention {
                pack: CentroidPackRows::cpu(pack)?,
                slots,
                attn: BlockSparseDecodeSplit::cpu(attn)?,
                combine: p.combine(None, splits)?,
            },
            Some(rt) => KeptRangeAttention {
                pack: CentroidPackRows::new(rt, pack)?,
                slots,
                attn: BlockSparseDecodeSplit::new(rt, attn)?,
                combine: p.combine(Some(rt), splits)?,
            },
        })
    }

    fn grids(&self, p: &CentroidPlan, keep: usize) -> ([u32; 3], [u32; 3]) {
        let (h, b) = (p.kv_heads as u32, p.batch as u32);
        ([keep.div_ceil(self.slots) as u32, h, b], [p.splits as u32, h, b])
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn run_cpu(
        &self,
        p: &CentroidPlan,
        q: &HostTensor,
        k: &HostTensor,
        v: &HostTensor,
        kept: [&HostTensor; 3],
        scale_log2: f32,
        fixed_len: usize,
        seq_len: usize,
        out: &mut HostTensor,
        lse: Option<&mut HostTensor>,
    ) -> Result<(), KernelError> {
        let [ks, kl, _] = kept;
        let (pack_grid, grid) = self.grids(p, ks.shape[2]);
        let mut rows = HostTensor::full(DType::I32, &[p.batch, p.kv_heads, fixed_len.max(1)], -7.0);
        let mut n_rows = HostTensor::full(DType::I32, &[p.batch, p.kv_heads], -7.0);
        self.pack.run_cpu(pack_grid, ks, kl, &mut rows, &mut n_rows)?;
        let (n, w) = (seq_len as i32, (seq_len - fixed_len) as i32);
        split_combine_cpu(&self.combine, [q.shape[0], q.shape[1], p.splits], out, lse, |o, l| {
            Ok(self.attn.run_cpu(grid, q, k, v, &rows, &n_rows, o, l, scale_log2, n, 0, w, 0)?)
        })
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn launch_with(
        &self,
        rt: &Runtime,
        scratch: &crate::Scratch,
        p: &CentroidPlan,
        q: &DeviceTensor,
        k: &DeviceTensor,
        v: &DeviceTensor,
        kept: [&DeviceTensor; 3],
        scale_log2: f32,
        fixed_len: usize,
        seq_len: usize,
        out: &DeviceTensor,
        lse: Option<&DeviceTensor>,
    ) -> Result<(), KernelError> {
        let [ks, kl, _] = kept;
        let (pack_grid, grid) = self.grids(p, ks.shape()[2]);
        let rows = scratch.get(rt, ROWS_SLOT, DType::I32, &[p.batch, p.kv_heads, fixed_len.max(1)])?;
        let n_rows = scratch.get(rt, ROWS_SLOT + 1, DType::I32, &[p.batch, p.kv_heads])?;
        let st = rt.stream();
        self.pack.launch(st, pack_grid, ks, kl, &rows, &n_rows)?;
        let shape = [q.shape()[0], q.shape()[1], p.splits];
        let (n, w) = (seq_len as i32, (seq_len - fixed_len) as i32);
        crate::dense::split_combine_gpu_with(rt, scratch, &self.combine, shape, out, lse, |o, l| {
            Ok(self.attn.launch(st, grid, q, k, v, &rows, &n_rows, o, l, scale_log2, n, 0, w, 0)?)
        })
    }
}

/// Host op: centroid lookup decode (scores, select, packed kept rows, attention over them
/// and the recent rows, combine). `keep` = most clusters kept (top-k), `pack_slots` kept
/// clusters expanded per program of [`centroid_pack_rows`](CentroidPackRows);
/// `params.max_splits` attention splits per (batch, KV head).
pub struct CentroidDecode {
    pub params: DecodeParams,
    pub keep: usize,
    /// Power of two `>=` the number of clusters (the select kernel's `topk` width).
    pub cand: usize,
    pub pack_slots: usize,
    tile_lse: CentroidTileLseKernel,
    scores: CentroidScoresKernel,
    select: CentroidSelectKernel,
    attention: KeptRangeAttention,
}

impl CentroidDecode {
    const NAME: &'static str = "centroid_decode";

    /// The combine's split bound: `max_splits` rounded up to a power of two.
    pub fn combine_splits(p: &DecodeParams) -> usize {
        p.max_splits.max(1).next_power_of_two()
    }

    /// The [`centroid_pack_rows`](CentroidPackRows) config for `keep` kept slots.
    pub fn pack_config(keep: usize, pack_slots: usize) -> KernelConfig {
        KernelConfig::from_pairs(&[("KEEP", keep as i64), ("SLOTS", pack_slots as i64), ("ROWS", 32), ("WARPS", 4)])
    }

    /// Clusters per scoring tile (of `centroid_tile_lse` / `centroid_scores`).
    pub const C_TILE: usize = 64;

    /// Warps of the select kernels: one program per (batch, KV head) is fewer programs
    /// than SMs even at B8 (64), so each takes a wide block; its radix passes and sort
    /// split over the threads (16 warps: 40 registers, no spills at CAND 8192).
    pub const SELECT_WARPS: i64 = 16;

    /// Clusters per program of `centroid_scores`: each program first merges all the
    /// partial LSEs, so a wide tile amortizes that (at 64, 6528 programs took 32 µs at B8).
    pub const SCORE_TILE: usize = 512;

    /// Scoring tiles for `clusters` clusters (the partial-LSE rows).
    fn tiles(clusters: usize) -> usize {
        clusters.div_ceil(Self::C_TILE).max(1)
    }

    /// The grid of `centroid_scores` for `clusters` clusters.
    pub(crate) fn score_grid(clusters: usize, h: u32, b: u32) -> [u32; 3] {
        [clusters.div_ceil(Self::SCORE_TILE).max(1) as u32, h, b]
    }

    /// The configs of the op's five kernels (tile LSE, scores, select, row packing, and
    /// the attention: a block-sparse decode split with one-row blocks) for `cand` candidate
    /// clusters (the power of two ≥ the cluster count); the split bound of its combine is
    /// [`Self::combine_splits`]. Public so that tuning keys hash exactly what the op builds.
    pub fn configs(p: &DecodeParams, keep: usize, cand: usize, pack_slots: usize) -> [KernelConfig; 5] {
        let (g, d) = (p.group as i64, p.head_dim as i64);
        let tile = Self::C_TILE as i64;
        let max_tiles = Self::tiles(cand).next_power_of_two() as i64;
        [
            KernelConfig::from_pairs(&[("GROUP", g), ("HEAD_DIM", d), ("C_TILE", tile), ("WARPS", 4)]),
            KernelConfig::from_pairs(&[
                ("GROUP", g),
                ("C_TILE", Self::SCORE_TILE as i64),
                ("MAX_TILES", max_tiles),
                ("WARPS", 4),
            ]),
            KernelConfig::from_pairs(&[("KEEP", keep as i64), ("CAND", cand as i64), ("WARPS", Self::SELECT_WARPS)]),
            Self::pack_config(keep, pack_slots),
            BlockSparseDecode::config(p, 1, false),
        ]
    }

    fn make(
        params: DecodeParams,
        keep: usize,
        clusters: usize,
        pack_slots: usize,
        rt: Option<&Runtime>,
    ) -> Result<Self, KernelError> {
        let cand = clusters.next_power_of_two();
        if keep == 0 || pack_slots == 0 || keep > cand {
            return Err(invalid(
                Self::NAME,
                format!("need 0 < keep {keep} <= clusters (rounded up to {cand}), pack_slots {pack_slots} > 0"),
            ));
        }
        let [t, a, b, pack, attn] = Self::configs(&params, keep, cand, pack_slots);
        let ms = Self::combine_splits(&params);
        Ok(match rt {
            None => CentroidDecode {
                tile_lse: CentroidTileLse::cpu(&t)?,
                scores: CentroidScores::cpu(&a)?,
                select: CentroidSelect::cpu(&b)?,
                attention: KeptRangeAttention::new(None, &pack, &attn, &params, ms)?,
                params,
                keep,
                cand,
                pack_slots,
            },
            Some(rt) => CentroidDecode {
                tile_lse: CentroidTileLse::new(rt, &t)?,
                scores: CentroidScores::new(rt, &a)?,
                select: CentroidSelect::new(rt, &b)?,
                attention: KeptRangeAttention::new(Some(rt), &pack, &attn, &params, ms)?,
                params,
                keep,
                cand,
                pack_slots,
            },
        })
    }

    /// Interpreter op for up to `clusters` clusters per KV head.
    pub fn cpu(params: DecodeParams, keep: usize, clusters: usize, pack_slots: usize) -> Result<Self, KernelError> {
        Self::make(params, keep, clusters, pack_slots, None)
    }

    /// GPU op.
    pub fn new(
        rt: &Runtime,
        params: DecodeParams,
        keep: usize,
        clusters: usize,
        pack_slots: usize,
    ) -> Result<Self, KernelError> {
        Self::make(params, keep, clusters, pack_slots, Some(rt))
    }

    /// Checks `q [B, Hkv·G, D]`, `k`/`v [B, Hkv, cap, D]` (fixed rows permuted by
    /// cluster), `centroids [B, Hkv, C, D] f32`, `counts [B, Hkv, C] i32`, `starts [B, Hkv,
    /// C + 1] i32` (host copies: non-decreasing from 0 to `fixed_len`), `keep_start` /
    /// `keep_len [B, Hkv, keep] i32`, `keep_count [B, Hkv] i32`, `out`, `lse`.
    #[allow(clippy::too_many_arguments)]
    pub fn check_args(
        &self,
        q: &dyn TensorMeta,
        k: &dyn TensorMeta,
        v: &dyn TensorMeta,
        centroids: &dyn TensorMeta,
        counts: &dyn TensorMeta,
        starts: &dyn TensorMeta,
        fixed_len: usize,
        seq_len: usize,
        keep_start: &dyn TensorMeta,
        keep_len: &dyn TensorMeta,
        keep_count: &dyn TensorMeta,
        out: &dyn TensorMeta,
        lse: Option<&dyn TensorMeta>,
    ) -> Result<CentroidPlan, KernelError> {
        let n = Self::NAME;
        let p = &self.params;
        let (b, h, _) = p.check_qkv(n, q, k, v, seq_len, out, lse)?;
        expect(n, "centroids", centroids, DType::F32, &[Some(b), Some(h), None, Some(p.head_dim)])?;
        let c = centroids.shape()[2];
        if c == 0 || c > self.cand || fixed_len > seq_len {
            return Err(invalid(
                n,
                format!("clusters {c} not in 1..={}, or fixed_len {fixed_len} > seq_len", self.cand),
            ));
        }
        expect(n, "counts", counts, DType::I32, &[Some(b), Some(h), Some(c)])?;
        expect(n, "starts", starts, DType::I32, &[Some(b), Some(h), Some(c + 1)])?;
        for (name, t) in [("keep_start", keep_start), ("keep_len", keep_len)] {
            expect(n, name, t, DType::I32, &[Some(b), Some(h), Some(self.keep)])?;
        }
        expect(n, "keep_count", keep_count, DType::I32, &[Some(b), Some(h)])?;
        if let Some(st) = starts.host() {
            let s = st.to_f64();
            for row in s.chunks_exact(c + 1) {
                if row[0] != 0.0 || row[c] != fixed_len as f64 || row.windows(2).any(|w| w[1] < w[0]) {
                    return Err(invalid(n, format!("starts must rise from 0 to fixed_len {fixed_len}")));
                }
            }
        }
        Ok(CentroidPlan::new(b, h, c, p))
    }

    /// Scores, select (`threshold` in log2 of the estimated per-key probability; `-inf`:
    /// top-`keep` only), attention and combine on the interpreter. `keep_*` are outputs.
    #[allow(clippy::too_many_arguments)]
    pub fn run_cpu(
        &self,
        q: &HostTensor,
        k: &HostTensor,
        v: &HostTensor,
        centroids: &HostTensor,
        counts: &HostTensor,
        starts: &HostTensor,
        fixed_len: usize,
        seq_len: usize,
        threshold: f32,
        keep_start: &mut HostTensor,
        keep_len: &mut HostTensor,
        keep_count: &mut HostTensor,
        out: &mut HostTensor,
        lse: Option<&mut HostTensor>,
    ) -> Result<CentroidPlan, KernelError> {
        let lm = lse.as_deref().map(|l| l as &dyn TensorMeta);
        let p = self.check_args(
            q, k, v, centroids, counts, starts, fixed_len, seq_len, keep_start, keep_len, keep_count, out, lm,
        )?;
        let (b, h) = (p.batch as u32, p.kv_heads as u32);
        let sc = self.params.scale_log2;
        let mut scores = HostTensor::full(DType::F32, &[p.batch, p.kv_heads, p.clusters], f64::NAN);
        let tiles = Self::tiles(p.clusters);
        let part = [p.batch, p.kv_heads, tiles, self.params.group];
        let (mut pm, mut pl) =
            (HostTensor::full(DType::F32, &part, f64::NAN), HostTensor::full(DType::F32, &part, f64::NAN));
        let tg = [tiles as u32, h, b];
        let mut raw = HostTensor::full(DType::F32, &[p.batch, p.kv_heads, self.params.group, p.clusters], f64::NAN);
        self.tile_lse.run_cpu(tg, q, centroids, counts, &mut pm, &mut pl, &mut raw, sc)?;
        self.scores.run_cpu(Self::score_grid(p.clusters, h, b), &raw, counts, &pm, &pl, &mut scores)?;
        self.select.run_cpu([h, b, 1], &scores, starts, keep_start, keep_len, keep_count, threshold)?;
        let kept = [&*keep_start, &*keep_len, &*keep_count];
        self.attention.run_cpu(&p, q, k, v, kept, sc, fixed_len, seq_len, out, lse)?;
        Ok(p)
    }

    /// The same launches on the GPU (nothing synchronized).
    #[allow(clippy::too_many_arguments)]
    pub fn launch(
        &self,
        rt: &Runtime,
        q: &DeviceTensor,
        k: &DeviceTensor,
        v: &DeviceTensor,
        centroids: &DeviceTensor,
        counts: &DeviceTensor,
        starts: &DeviceTensor,
        fixed_len: usize,
        seq_len: usize,
        threshold: f32,
        keep_start: &DeviceTensor,
        keep_len: &DeviceTensor,
        keep_count: &DeviceTensor,
        out: &DeviceTensor,
        lse: Option<&DeviceTensor>,
    ) -> Result<CentroidPlan, KernelError> {
        // The same launches with fresh buffers (allocated, as before, on every call).
        self.launch_with(
            rt,
            &crate::Scratch::new(),
            q,
            k,
            v,
            centroids,
            counts,
            starts,
            fixed_len,
            seq_len,
            threshold,
            keep_start,
            keep_len,
            keep_count,
            out,
            lse,
        )
    }

    /// [`Self::launch`] with the cluster scores and the split partials kept in `scratch`
    /// (for timing loops: no allocation, memset or synchronization per call). The scores
    /// kernel writes all `C` scores and the attention kernel every split before they are
    /// read.
    #[allow(clippy::too_many_arguments)]
    pub fn launch_with(
        &self,
        rt: &Runtime,
        scratch: &crate::Scratch,
        q: &DeviceTensor,
        k: &DeviceTensor,
        v: &DeviceTensor,
        centroids: &DeviceTensor,
        counts: &DeviceTensor,
        starts: &DeviceTensor,
        fixed_len: usize,
        seq_len: usize,
        threshold: f32,
        keep_start: &DeviceTensor,
        keep_len: &DeviceTensor,
        keep_count: &DeviceTensor,
        out: &DeviceTensor,
        lse: Option<&DeviceTensor>,
    ) -> Result<CentroidPlan, KernelError> {
        let lm = lse.map(|l| l as &dyn TensorMeta);
        let p = self.check_args(
            q, k, v, centroids, counts, starts, fixed_len, seq_len, keep_start, keep_len, keep_count, out, lm,
        )?;
        let (b, h) = (p.batch as u32, p.kv_heads as u32);
        let sc = self.params.scale_log2;
        let st = rt.stream();
        let scores = scratch.get(rt, 3, DType::F32, &[p.batch, p.kv_heads, p.clusters])?;
        let tiles = Self::tiles(p.clusters);
        let part = [p.batch, p.kv_heads, tiles, self.params.group];
        let (pm, pl) = (scratch.get(rt, 4, DType::F32, &part)?, scratch.get(rt, 5, DType::F32, &part)?);
        let tg = [tiles as u32, h, b];
        let raw = scratch.get(rt, 6, DType::F32, &[p.batch, p.kv_heads, self.params.group, p.clusters])?;
        self.tile_lse.launch(st, tg, q, centroids, counts, &pm, &pl, &raw, sc)?;
        self.scores.launch(st, Self::score_grid(p.clusters, h, b), &raw, counts, &pm, &pl, &scores)?;
        self.select.launch(st, [h, b, 1], &scores, starts, keep_start, keep_len, keep_count, threshold)?;
        let kept = [keep_start, keep_len, keep_count];
        self.attention.launch_with(rt, scratch, &p, q, k, v, kept, sc, fixed_len, seq_len, out, lse)?;
        Ok(p)
    }
}
