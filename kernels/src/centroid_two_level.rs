//! Two-level (hierarchical) centroid lookup (Squeezed Attention's hierarchical lookup,
//! algorithms.md §3): the fine clusters of [`crate::KMeansCluster`] are grouped by a
//! k-means of their centroids into coarse clusters, so a decode step scores the coarse
//! centroids and only the fine centroids inside the best coarse clusters.
//!
//! **Offline** ([`TwoLevelLayout::build`], host: the coarse level clusters the fine
//! centroids — 5 % of the keys — which is small next to the keys the GPU k-means
//! clusters): a k-means of the fine centroids (normalized, as the keys are), the fine
//! clusters reordered so each coarse cluster's fine clusters are consecutive, the cache
//! rows re-permuted to match (every fine cluster stays one contiguous range), coarse
//! centroids = mean key of the coarse cluster, coarse counts = its keys.
//!
//! **Decode** ([`CentroidTwoLevelDecode`]):
//!
//! 1. [`centroid_tile_lse`](crate::centroid::CentroidTileLse) over the coarse centroids, and
//!    [`centroid_lse`](CentroidLse): the per-query normalizer `lse_g = log2 Σ_C n_C 2^{s_gC}`;
//! 2. [`centroid_select`](crate::centroid::CentroidSelect) (the coarse scores and their top-k)
//!    with the coarse clusters' fine-id ranges as `starts`: the top-`keep_coarse` coarse
//!    clusters as ranges of fine ids;
//! 3. [`centroid_fine_scores`](CentroidFineScores): `max_g (s_gf − lse_g)` for the fine clusters of those
//!    ranges only (the coarse normalizer estimates the one-level one, so a threshold keeps
//!    its meaning: log2 of the estimated per-key probability);
//! 4. [`centroid_select_ids`](CentroidSelectIds): the top-`keep` fine clusters above `threshold`
//!    as row ranges (in no particular order);
//! 5. the packed-row attention + [`crate::LseCombine`] of the one-level
//!    [`crate::CentroidDecode`].

use tessera_codegen::host::HostTensor;
use tessera_codegen::ir::DType;
use tessera_dsl_support::prelude::*;
use tessera_runtime::DeviceTensor;

use crate::centroid::{
    cluster_layout, init_centroids, kmeans_reference, score_clusters, select_clusters, CentroidDecode, CentroidPlan,
    CentroidSelect, CentroidSelectKernel, CentroidTileLse, CentroidTileLseKernel, KeptRangeAttention,
};
use crate::dense::DecodeParams;
use crate::error::{expect, invalid, KernelError, TensorMeta};
use crate::scratch::Scratch;

// ---- offline layout (host) ---------------------------------------------------------------

/// A two-level clustering of a cache (host tensors, the inputs of
/// [`CentroidTwoLevelDecode`] once uploaded).
#[derive(Clone, Debug)]
pub struct TwoLevelLayout {
    /// `[B, Hkv, C, D] f32`: fine centroids, grouped by coarse cluster.
    pub fine_centroids: HostTensor,
    /// `[B, Hkv, C] i32`.
    pub fine_counts: HostTensor,
    /// `[B, Hkv, C + 1] i32`: fine cluster `f` = cache rows `[starts[f], starts[f + 1])`.
    pub fine_starts: HostTensor,
    /// `[B, Hkv, CC, D] f32`: the mean key of each coarse cluster.
    pub coarse_centroids: HostTensor,
    /// `[B, Hkv, CC] i32`: keys per coarse cluster.
    pub coarse_counts: HostTensor,
    /// `[B, Hkv, CC + 1] i32`: coarse cluster `j` = fine ids `[s[j], s[j + 1])`.
    pub coarse_starts: HostTensor,
    /// `[B, Hkv, T_f] i32`: the original row of each fixed row of the re-permuted cache.
    pub perm: HostTensor,
    /// The most fine clusters in one coarse cluster (at least 1).
    pub max_fine: usize,
}

impl TwoLevelLayout {
    /// From a fine clustering as [`crate::KMeansCluster`] returns it (host copies:
    /// `centroids [B, Hkv, C, D]`, `counts [B, Hkv, C]`, `perm [B, Hkv, T_f]`, `starts [B,
    /// Hkv, C + 1]`): `coarse` clusters by `iters` Lloyd iterations from seeded fine
    /// centroids (`seed ^ (b·Hkv + h)`).
    pub fn build(
        centroids: &HostTensor,
        counts: &HostTensor,
        perm: &HostTensor,
        starts: &HostTensor,
        coarse: usize,
        iters: usize,
        seed: u64,
    ) -> Result<Self, KernelError> {
        const NAME: &str = "centroid_two_level_layout";
        let cs = &centroids.shape;
        let (b, h, c, d) = (cs[0], cs[1], cs[2], cs[3]);
        let tf = perm.shape[2];
        if coarse == 0 || coarse > c || iters == 0 {
            return Err(invalid(NAME, format!("need 0 < coarse {coarse} <= fine clusters {c} and iters > 0")));
        }
        expect(NAME, "counts", counts, DType::I32, &[Some(b), Some(h), Some(c)])?;
        expect(NAME, "starts", starts, DType::I32, &[Some(b), Some(h), Some(c + 1)])?;
        expect(NAME, "perm", perm, DType::I32, &[Some(b), Some(h), Some(tf)])?;
        let (cen, cnt, pm, st) = (centroids.to_f64(), counts.to_f64(), perm.to_f64(), starts.to_f64());
        // One head at a time per CPU thread: the coarse k-means is the cost (at 128K, B8:
        // 64 heads × 6.5K fine centroids × ~400 coarse × d 128 per iteration).
        let heads: Vec<std::sync::Mutex<Option<HeadLayout>>> = (0..b * h).map(|_| Default::default()).collect();
        let next = std::sync::atomic::AtomicUsize::new(0);
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(b * h);
        std::thread::scope(|sc| {
            for _ in 0..threads {
                sc.spawn(|| loop {
                    let bh = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if bh >= b * h {
                        break;
                    }
                    let head = HeadLayout::build(
                        &cen[bh * c * d..(bh + 1) * c * d],
                        &cnt[bh * c..(bh + 1) * c],
                        &pm[bh * tf..(bh + 1) * tf],
                        &st[bh * (c + 1)..(bh + 1) * (c + 1)],
                        d,
                        coarse,
                        iters,
                        seed ^ bh as u64,
                    );
                    *heads[bh].lock().expect("no poisoning") = Some(head);
                });
            }
        });
        let mut out = [Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new()];
        let mut max_fine = 1;
        for (bh, m) in heads.into_iter().enumerate() {
            let head = m.into_inner().expect("no poisoning").expect("every head built");
            let rows = *head.fine_starts.last().unwrap_or(&0.0) as usize;
            if rows != tf {
                return Err(invalid(NAME, format!("(b,h) {bh}: the fine counts sum to {rows}, not T_f = {tf}")));
            }
            max_fine = max_fine.max(head.max_fine);
            for (o, part) in out.iter_mut().zip([
                head.fine_centroids,
                head.fine_counts,
                head.fine_starts,
                head.coarse_centroids,
                head.coarse_counts,
                head.coarse_starts,
                head.perm,
            ]) {
                o.extend(part);
            }
        }
        let [f_cen, f_cnt, f_st, c_cen, c_cnt, c_st, new_perm] = out;
        Ok(TwoLevelLayout {
            fine_centroids: HostTensor::from_f64(DType::F32, &[b, h, c, d], &f_cen),
            fine_counts: HostTensor::from_f64(DType::I32, &[b, h, c], &f_cnt),
            fine_starts: HostTensor::from_f64(DType::I32, &[b, h, c + 1], &f_st),
            coarse_centroids: HostTensor::from_f64(DType::F32, &[b, h, coarse, d], &c_cen),
            coarse_counts: HostTensor::from_f64(DType::I32, &[b, h, coarse], &c_cnt),
            coarse_starts: HostTensor::from_f64(DType::I32, &[b, h, coarse + 1], &c_st),
            perm: HostTensor::from_f64(DType::I32, &[b, h, tf], &new_perm),
            max_fine,
        })
    }
}

/// [`TwoLevelLayout`] of one (batch, KV head), as flat f64 rows.
struct HeadLayout {
    fine_centroids: Vec<f64>,
    fine_counts: Vec<f64>,
    fine_starts: Vec<f64>,
    coarse_centroids: Vec<f64>,
    coarse_counts: Vec<f64>,
    coarse_starts: Vec<f64>,
    perm: Vec<f64>,
    max_fine: usize,
}

impl HeadLayout {
    /// `fc [C, D]` fine centroids, `n [C]` counts, `pm [T_f]` / `st [C + 1]` the fine
    /// layout of this head.
    #[allow(clippy::too_many_arguments)]
    fn build(fc: &[f64], n: &[f64], pm: &[f64], st: &[f64], d: usize, coarse: usize, iters: usize, seed: u64) -> Self {
        let c = n.len();
        let n: Vec<usize> = n.iter().map(|&x| x as usize).collect();
        let init = init_centroids(fc, c, d, coarse, true, seed);
        let labels = kmeans_reference(fc, c, d, &init, iters, true).labels;
        let (order, cstarts) = cluster_layout(&labels, coarse);
        let mut h = HeadLayout {
            fine_centroids: Vec::with_capacity(c * d),
            fine_counts: Vec::with_capacity(c),
            fine_starts: vec![0.0],
            coarse_centroids: Vec::with_capacity(coarse * d),
            coarse_counts: Vec::with_capacity(coarse),
            coarse_starts: cstarts.iter().map(|&x| x as f64).collect(),
            perm: Vec::with_capacity(pm.len()),
            max_fine: cstarts.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0).max(1),
        };
        let mut row = 0;
        for &f in &order {
            h.fine_centroids.extend_from_slice(&fc[f * d..(f + 1) * d]);
            h.fine_counts.push(n[f] as f64);
            h.perm.extend_from_slice(&pm[st[f] as usize..st[f + 1] as usize]);
            row += n[f];
            h.fine_starts.push(row as f64);
        }
        for j in 0..coarse {
            let members = &order[cstarts[j]..cstarts[j + 1]];
            let keys: usize = members.iter().map(|&f| n[f]).sum();
            for e in 0..d {
                let s: f64 = members.iter().map(|&f| n[f] as f64 * fc[f * d + e]).sum();
                h.coarse_centroids.push(if keys > 0 { s / keys as f64 } else { 0.0 });
            }
            h.coarse_counts.push(keys as f64);
        }
        h
    }
}

/// The fine clusters the lookup keeps for one (batch, KV head) (f64, the algorithm of
/// [`CentroidTwoLevelDecode`]): `qs` the group's queries `[G, D]`, the layout's slices of
/// this head. Returns the kept fine ids, ascending, and each fine cluster's score (`-inf`
/// where not scored).
#[allow(clippy::too_many_arguments)]
pub fn select_two_level(
    qs: &[f64],
    fine_centroids: &[f64],
    fine_counts: &[usize],
    coarse_centroids: &[f64],
    coarse_counts: &[usize],
    coarse_starts: &[usize],
    d: usize,
    keep_coarse: usize,
    keep: usize,
    threshold: f64,
    scale_log2: f64,
) -> (Vec<usize>, Vec<f64>) {
    let coarse_scores = score_clusters(qs, coarse_centroids, coarse_counts, d, scale_log2);
    let kept_coarse = select_clusters(&coarse_scores, keep_coarse, f64::NEG_INFINITY);
    // Per query: the coarse normalizer.
    let lse: Vec<f64> = qs
        .chunks_exact(d)
        .map(|q| {
            let s: Vec<f64> = coarse_centroids
                .chunks_exact(d)
                .map(|c| scale_log2 * q.iter().zip(c).map(|(a, b)| a * b).sum::<f64>())
                .collect();
            let m = s.iter().zip(coarse_counts).filter(|x| *x.1 > 0).map(|x| *x.0).fold(f64::NEG_INFINITY, f64::max);
            m + s.iter().zip(coarse_counts).map(|(x, &n)| n as f64 * (x - m).exp2()).sum::<f64>().log2()
        })
        .collect();
    let mut scores = vec![f64::NEG_INFINITY; fine_counts.len()];
    for &j in &kept_coarse {
        for f in coarse_starts[j]..coarse_starts[j + 1] {
            if fine_counts[f] == 0 {
                continue;
            }
            let c = &fine_centroids[f * d..(f + 1) * d];
            for (q, l) in qs.chunks_exact(d).zip(&lse) {
                let s = scale_log2 * q.iter().zip(c).map(|(a, b)| a * b).sum::<f64>() - l;
                scores[f] = scores[f].max(s);
            }
        }
    }
    (select_clusters(&scores, keep, threshold), scores)
}

// ---- decode kernels -----------------------------------------------------------------------

/// The per-query normalizer `lse_g = log2 Σ_c n_c 2^{s_gc}` merged from the `≤ MAX_TILES`
/// partials of [`centroid_tile_lse`](crate::centroid::CentroidTileLse). Grid `[Hkv, B]`.
#[kernel(example(GROUP = 4, MAX_TILES = 16))]
pub fn centroid_lse<const GROUP: usize, const MAX_TILES: usize, const WARPS: usize>(
    part_m: Tensor<f32, 4>,   // [B, Hkv, T, GROUP]
    part_l: Tensor<f32, 4>,   // [B, Hkv, T, GROUP]
    lse: &mut Tensor<f32, 3>, // [B, Hkv, GROUP]
) {
    let kv_head = program_id(0);
    let batch = program_id(1);
    let pm = part_m.load_or([at(batch), at(kv_head), range(0, MAX_TILES), range(0, GROUP)], f32::NEG_INFINITY);
    let pl = part_l.load_or([at(batch), at(kv_head), range(0, MAX_TILES), range(0, GROUP)], 0.0);
    let m = pm.max(0);
    let m_use = where_(m == f32::NEG_INFINITY, 0.0, m);
    let l = (pl * exp2(pm - m_use.expand_dims(0))).sum(0);
    lse.store([at(batch), at(kv_head), range(0, GROUP)], m_use + log2(where_(l > 0.0, l, 1.0)));
}

/// Scores of the fine clusters of kept coarse cluster `program_id(0)` (fine ids
/// `[keep_start, keep_start + keep_len)`, at most `MAX_FINE`): `max_g (s_gf − lse_g)` with
/// the coarse normalizer, into candidate slots `[j·MAX_FINE, (j + 1)·MAX_FINE)` with their
/// fine ids (`-inf` / `-1` for empty clusters and unused slots). Grid `[keep_coarse, Hkv,
/// B]`.
/// `CT`: the centroids' element type, f32 or bf16 (as [`centroid_tile_lse`](CentroidTileLse)).
#[kernel(tune(WARPS = [4, 8]), example(GROUP = 4, HEAD_DIM = 128, MAX_FINE = 32, CT = 2))]
pub fn centroid_fine_scores<
    CT,
    const GROUP: usize,
    const HEAD_DIM: usize,
    const MAX_FINE: usize,
    const WARPS: usize,
>(
    q: Tensor<bf16, 3>,              // [B, Hq, D]
    centroids: Tensor<CT, 4>,        // [B, Hkv, C, D] fine
    counts: Tensor<i32, 3>,          // [B, Hkv, C]
    lse: Tensor<f32, 3>,             // [B, Hkv, GROUP]
    keep_start: Tensor<i32, 3>,      // [B, Hkv, KC]
    keep_len: Tensor<i32, 3>,        // [B, Hkv, KC]
    keep_count: Tensor<i32, 2>,      // [B, Hkv]
    cand_score: &mut Tensor<f32, 3>, // [B, Hkv, KC·MAX_FINE]
    cand_id: &mut Tensor<i32, 3>,    // [B, Hkv, KC·MAX_FINE]
    scale_log2: f32,
) {
    let j = program_id(0);
    let kv_head = program_id(1);
    let batch = program_id(2);
    let slot0 = j * MAX_FINE as i32;
    if j >= keep_count.load([at(batch), at(kv_head)]) {
        cand_score.store([at(batch), at(kv_head), range(slot0, MAX_FINE)], full([MAX_FINE], f32::NEG_INFINITY));
        cand_id.store([at(batch), at(kv_head), range(slot0, MAX_FINE)], full([MAX_FINE], -1));
        return;
    }
    let fs = keep_start.load([at(batch), at(kv_head), at(j)]);
    let fl = min(keep_len.load([at(batch), at(kv_head), at(j)]), MAX_FINE as i32);
    let inr = arange(0, MAX_FINE) < fl;
    let ct = centroids.load_masked(
        [at(batch), at(kv_head), range(fs, MAX_FINE), range(0, HEAD_DIM)],
        inr.expand_dims(1),
        0.0,
    );
    let n = counts.load_masked([at(batch), at(kv_head), range(fs, MAX_FINE)], inr, 0);
    let qt = q.load([at(batch), range(kv_head * GROUP as i32, GROUP), range(0, HEAD_DIM)]).cast::<CT>();
    let l = lse.load([at(batch), at(kv_head), range(0, GROUP)]);
    let s = (dot_t(qt, ct) * scale_log2 - l.expand_dims(1)).max(0);
    let live = inr && n > 0;
    cand_score.store([at(batch), at(kv_head), range(slot0, MAX_FINE)], where_(live, s, f32::NEG_INFINITY));
    cand_id.store([at(batch), at(kv_head), range(slot0, MAX_FINE)], where_(live, arange(0, MAX_FINE) + fs, -1));
}

/// The top-`KEEP` candidates (ties: the earlier slot) with score `> threshold`, as row
/// ranges `keep_start`/`keep_len [B, Hkv, KEEP]` in no particular order (the first
/// `keep_count` slots; unused slots 0/0), as [`centroid_select`](crate::centroid::CentroidSelect).
/// Grid `[Hkv, B]`.
#[kernel(example(KEEP = 64, CAND = 1024))]
pub fn centroid_select_ids<const KEEP: usize, const CAND: usize, const WARPS: usize>(
    cand_score: Tensor<f32, 3>,      // [B, Hkv, ≤ CAND]
    cand_id: Tensor<i32, 3>,         // [B, Hkv, ≤ CAND]
    starts: Tensor<i32, 3>,          // [B, Hkv, C + 1]
    keep_start: &mut Tensor<i32, 3>, // [B, Hkv, KEEP]
    keep_len: &mut Tensor<i32, 3>,   // [B, Hkv, KEEP]
    keep_count: &mut Tensor<i32, 2>, // [B, Hkv]
    threshold: f32,
) {
    let kv_head = program_id(0);
    let batch = program_id(1);
    let s = cand_score.load_or([at(batch), at(kv_head), range(0, CAND)], f32::NEG_INFINITY);
    let (v, slot) = topk_unsorted(where_(s > threshold, s, f32::NEG_INFINITY), KEEP);
    let live = v > f32::NEG_INFINITY;
    let fid = where_(live, cand_id.load([at(batch), at(kv_head), gather(slot)]), 0);
    let st = starts.load([at(batch), at(kv_head), gather(fid)]);
    let en = starts.load([at(batch), at(kv_head), gather(fid + 1)]);
    keep_start.store([at(batch), at(kv_head), range(0, KEEP)], where_(live, st, 0));
    keep_len.store([at(batch), at(kv_head), range(0, KEEP)], where_(live, en - st, 0));
    keep_count.store([at(batch), at(kv_head)], live.cast::<i32>().sum(0));
}

// ---- host op ------------------------------------------------------------------------------

/// The fine-level inputs of [`CentroidTwoLevelDecode`] (the [`TwoLevelLayout`] tensors).
pub struct TwoLevelInputs<'a, T: ?Sized> {
    pub fine_centroids: &'a T,
    pub fine_counts: &'a T,
    pub fine_starts: &'a T,
    pub coarse_centroids: &'a T,
    pub coarse_counts: &'a T,
    pub coarse_starts: &'a T,
}

/// The selection outputs (`keep_start`/`keep_len [B, Hkv, keep]`, `keep_count [B, Hkv]`).
pub struct KeptRanges<'a, T: ?Sized> {
    pub keep_start: &'a T,
    pub keep_len: &'a T,
    pub keep_count: &'a T,
}

impl<'a, T: TensorMeta + 'a> TwoLevelInputs<'a, T> {
    /// The same tensors as shape/dtype descriptors (for `check_args`).
    pub fn meta(&self) -> TwoLevelInputs<'a, dyn TensorMeta + 'a> {
        TwoLevelInputs {
            fine_centroids: self.fine_centroids,
            fine_counts: self.fine_counts,
            fine_starts: self.fine_starts,
            coarse_centroids: self.coarse_centroids,
            coarse_counts: self.coarse_counts,
            coarse_starts: self.coarse_starts,
        }
    }
}

struct TwoLevelKernels {
    tile_lse: CentroidTileLseKernel,
    lse: CentroidLseKernel,
    coarse_select: CentroidSelectKernel,
    fine_scores: CentroidFineScoresKernel,
    select: CentroidSelectIdsKernel,
    attention: KeptRangeAttention,
}

/// Host op: the two-level centroid lookup decode (see the module docs). `keep_coarse`
/// coarse clusters are explored, at most `keep` fine clusters kept; `max_fine` bounds the
/// fine clusters of one coarse cluster ([`TwoLevelLayout::max_fine`]); `coarse_clusters`
/// bounds the coarse level.
pub struct CentroidTwoLevelDecode {
    pub params: DecodeParams,
    pub keep_coarse: usize,
    pub keep: usize,
    pub max_fine: usize,
    pub pack_programs: usize,
    /// Element type of the fine and coarse centroids: f32 (default) or bf16
    /// ([`Self::with_centroid_dtype`]).
    pub centroid_dtype: DType,
    coarse_cand: usize,
    kernels: TwoLevelKernels,
}

impl CentroidTwoLevelDecode {
    const NAME: &'static str = "centroid_two_level_decode";

    /// Candidate slots of the fine selection.
    /// Candidate slots per kept coarse cluster: `max_fine` rounded up to a multiple of 8, so
    /// bf16 fine centroids take the tensor-core product (an `[G, 33]` score tile fell back
    /// to the CUDA cores and made the bf16 two-level lookup slower than the f32 one).
    pub fn fine_slots(max_fine: usize) -> usize {
        max_fine.next_multiple_of(8)
    }

    fn fine_cand(keep_coarse: usize, max_fine: usize) -> usize {
        (keep_coarse * Self::fine_slots(max_fine)).next_power_of_two()
    }

    /// Configs: `[tile LSE, coarse scores + select, row packing, attention]` (those of
    /// [`CentroidDecode::configs`] at the coarse level, the packing sized for the fine
    /// `keep`), then `[normalizer, fine scores, fine select]`.
    pub fn configs(
        p: &DecodeParams,
        keep_coarse: usize,
        coarse_cand: usize,
        keep: usize,
        max_fine: usize,
        pack_programs: usize,
    ) -> ([KernelConfig; 4], [KernelConfig; 3]) {
        Self::configs_typed(p, keep_coarse, coarse_cand, keep, max_fine, pack_programs, DType::F32)
    }

    /// [`Self::configs`] for centroids of element type `centroid_dtype` (f32 or bf16).
    pub fn configs_typed(
        p: &DecodeParams,
        keep_coarse: usize,
        coarse_cand: usize,
        keep: usize,
        max_fine: usize,
        pack_programs: usize,
        centroid_dtype: DType,
    ) -> ([KernelConfig; 4], [KernelConfig; 3]) {
        let mut one = CentroidDecode::configs_typed(p, keep_coarse, coarse_cand, pack_programs, centroid_dtype);
        // The packing expands the fine selection's `keep` slots.
        one[2] = CentroidDecode::pack_config(keep, pack_programs);
        let g = p.group as i64;
        let max_tiles = one[1].get("MAX_TILES").unwrap_or(1);
        (
            one,
            [
                KernelConfig::from_pairs(&[("GROUP", g), ("MAX_TILES", max_tiles), ("WARPS", 4)]),
                KernelConfig::from_pairs(&[
                    ("GROUP", g),
                    ("HEAD_DIM", p.head_dim as i64),
                    ("MAX_FINE", Self::fine_slots(max_fine) as i64),
                    ("WARPS", 4),
                    ("CT", tessera_dsl_support::elem_code(centroid_dtype).unwrap_or(-1)),
                ]),
                KernelConfig::from_pairs(&[
                    ("KEEP", keep as i64),
                    ("CAND", Self::fine_cand(keep_coarse, max_fine) as i64),
                    ("WARPS", CentroidDecode::SELECT_WARPS),
                ]),
            ],
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn make(
        params: DecodeParams,
        keep_coarse: usize,
        coarse_clusters: usize,
        keep: usize,
        max_fine: usize,
        pack_programs: usize,
        centroid_dtype: DType,
        rt: Option<&Runtime>,
    ) -> Result<Self, KernelError> {
        let coarse_cand = coarse_clusters.next_power_of_two();
        if !matches!(centroid_dtype, DType::F32 | DType::BF16) {
            return Err(invalid(Self::NAME, format!("centroids must be f32 or bf16, not {centroid_dtype:?}")));
        }
        let fine_cand = Self::fine_cand(keep_coarse, max_fine);
        if keep_coarse == 0
            || keep_coarse > coarse_cand
            || max_fine == 0
            || keep == 0
            || keep > fine_cand
            || pack_programs == 0
        {
            return Err(invalid(
                Self::NAME,
                format!(
                    "need 0 < keep_coarse {keep_coarse} <= coarse clusters (rounded up to {coarse_cand}), max_fine > \
                     0, 0 < keep {keep} <= keep_coarse · max_fine (rounded up to {fine_cand}), pack_programs > 0"
                ),
            ));
        }
        let ([t, cs, pack, a], [l, f, sel]) =
            Self::configs_typed(&params, keep_coarse, coarse_cand, keep, max_fine, pack_programs, centroid_dtype);
        let splits = CentroidDecode::combine_splits(&params);
        let kernels = match rt {
            None => TwoLevelKernels {
                tile_lse: CentroidTileLse::cpu(&t)?,
                lse: CentroidLse::cpu(&l)?,
                coarse_select: CentroidSelect::cpu(&cs)?,
                fine_scores: CentroidFineScores::cpu(&f)?,
                select: CentroidSelectIds::cpu(&sel)?,
                attention: KeptRangeAttention::new(None, &pack, &a, &params, splits)?,
            },
            Some(rt) => TwoLevelKernels {
                tile_lse: CentroidTileLse::new(rt, &t)?,
                lse: CentroidLse::new(rt, &l)?,
                coarse_select: CentroidSelect::new(rt, &cs)?,
                fine_scores: CentroidFineScores::new(rt, &f)?,
                select: CentroidSelectIds::new(rt, &sel)?,
                attention: KeptRangeAttention::new(Some(rt), &pack, &a, &params, splits)?,
            },
        };
        Ok(CentroidTwoLevelDecode {
            params,
            keep_coarse,
            keep,
            max_fine,
            pack_programs,
            centroid_dtype,
            coarse_cand,
            kernels,
        })
    }

    /// Interpreter op.
    pub fn cpu(
        params: DecodeParams,
        keep_coarse: usize,
        coarse_clusters: usize,
        keep: usize,
        max_fine: usize,
        pack_programs: usize,
    ) -> Result<Self, KernelError> {
        Self::make(params, keep_coarse, coarse_clusters, keep, max_fine, pack_programs, DType::F32, None)
    }

    /// GPU op.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        rt: &Runtime,
        params: DecodeParams,
        keep_coarse: usize,
        coarse_clusters: usize,
        keep: usize,
        max_fine: usize,
        pack_programs: usize,
    ) -> Result<Self, KernelError> {
        Self::make(params, keep_coarse, coarse_clusters, keep, max_fine, pack_programs, DType::F32, Some(rt))
    }

    /// The same op for fine and coarse centroids stored as `dtype` (f32 or bf16; on the
    /// interpreter when `rt` is `None`), as [`CentroidDecode::with_centroid_dtype`].
    pub fn with_centroid_dtype(self, rt: Option<&Runtime>, dtype: DType) -> Result<Self, KernelError> {
        let (p, kc, cc, k, mf, ps) =
            (self.params, self.keep_coarse, self.coarse_cand, self.keep, self.max_fine, self.pack_programs);
        Self::make(p, kc, cc, k, mf, ps, dtype, rt)
    }

    /// Checks `q`/`k`/`v`/`out`/`lse` as [`CentroidDecode::check_args`], the layout tensors
    /// (`fine_*` over `C` fine clusters, `coarse_*` over `CC ≤` the op's coarse bound; host
    /// copies: fine starts rising from 0 to `fixed_len`, coarse starts from 0 to `C` in
    /// steps of at most `max_fine`) and the kept ranges (`keep` slots).
    #[allow(clippy::too_many_arguments)]
    pub fn check_args(
        &self,
        q: &dyn TensorMeta,
        k: &dyn TensorMeta,
        v: &dyn TensorMeta,
        x: &TwoLevelInputs<'_, dyn TensorMeta + '_>,
        fixed_len: usize,
        seq_len: usize,
        kept: &KeptRanges<'_, dyn TensorMeta + '_>,
        out: &dyn TensorMeta,
        lse: Option<&dyn TensorMeta>,
    ) -> Result<CentroidPlan, KernelError> {
        let n = Self::NAME;
        let p = &self.params;
        let (b, h, _) = p.check_qkv(n, q, k, v, seq_len, out, lse)?;
        let (ct, dims) = (self.centroid_dtype, [Some(b), Some(h), None, Some(p.head_dim)]);
        expect(n, "fine_centroids", x.fine_centroids, ct, &dims)?;
        expect(n, "coarse_centroids", x.coarse_centroids, ct, &dims)?;
        let (c, cc) = (x.fine_centroids.shape()[2], x.coarse_centroids.shape()[2]);
        if c == 0 || cc == 0 || cc > self.coarse_cand || fixed_len > seq_len {
            return Err(invalid(
                n,
                format!(
                    "fine clusters {c} > 0, coarse {cc} in 1..={}, fixed_len {fixed_len} <= seq_len",
                    self.coarse_cand
                ),
            ));
        }
        expect(n, "fine_counts", x.fine_counts, DType::I32, &[Some(b), Some(h), Some(c)])?;
        expect(n, "fine_starts", x.fine_starts, DType::I32, &[Some(b), Some(h), Some(c + 1)])?;
        expect(n, "coarse_counts", x.coarse_counts, DType::I32, &[Some(b), Some(h), Some(cc)])?;
        expect(n, "coarse_starts", x.coarse_starts, DType::I32, &[Some(b), Some(h), Some(cc + 1)])?;
        for (name, t) in [("keep_start", kept.keep_start), ("keep_len", kept.keep_len)] {
            expect(n, name, t, DType::I32, &[Some(b), Some(h), Some(self.keep)])?;
        }
        expect(n, "keep_count", kept.keep_count, DType::I32, &[Some(b), Some(h)])?;
        let rising = |t: &dyn TensorMeta, len: usize, end: usize, step: usize| {
            t.host().is_none_or(|host| {
                host.to_f64().chunks_exact(len + 1).all(|r| {
                    r[0] == 0.0
                        && r[len] == end as f64
                        && r.windows(2).all(|w| w[1] >= w[0] && w[1] - w[0] <= step as f64)
                })
            })
        };
        if !rising(x.fine_starts, c, fixed_len, usize::MAX) || !rising(x.coarse_starts, cc, c, self.max_fine) {
            return Err(invalid(
                n,
                format!(
                    "fine_starts must rise from 0 to fixed_len {fixed_len}; coarse_starts from 0 to {c} in steps of at \
                     most max_fine {}",
                    self.max_fine
                ),
            ));
        }
        Ok(CentroidPlan::new(b, h, c, p))
    }

    /// Grids: `[tiles, Hkv, B]` of the coarse scoring, `[Hkv, B, 1]` per head, `[keep_coarse,
    /// Hkv, B]` of the fine scores.
    fn grids(&self, p: &CentroidPlan, coarse: usize) -> ([u32; 3], [u32; 3], [u32; 3]) {
        let (b, h) = (p.batch as u32, p.kv_heads as u32);
        let tiles = coarse.div_ceil(CentroidDecode::C_TILE).max(1) as u32;
        ([tiles, h, b], [h, b, 1], [self.keep_coarse as u32, h, b])
    }

    /// The whole lookup + attention on the interpreter (`kept` are outputs).
    #[allow(clippy::too_many_arguments)]
    pub fn run_cpu(
        &self,
        q: &HostTensor,
        k: &HostTensor,
        v: &HostTensor,
        x: &TwoLevelInputs<HostTensor>,
        fixed_len: usize,
        seq_len: usize,
        threshold: f32,
        keep_start: &mut HostTensor,
        keep_len: &mut HostTensor,
        keep_count: &mut HostTensor,
        out: &mut HostTensor,
        lse: Option<&mut HostTensor>,
    ) -> Result<CentroidPlan, KernelError> {
        let xm = x.meta();
        let km =
            KeptRanges::<dyn TensorMeta> { keep_start: &*keep_start, keep_len: &*keep_len, keep_count: &*keep_count };
        let lm = lse.as_deref().map(|l| l as &dyn TensorMeta);
        let p = self.check_args(q, k, v, &xm, fixed_len, seq_len, &km, out, lm)?;
        let kn = &self.kernels;
        let g = self.params.group;
        let cc = x.coarse_centroids.shape[2];
        let (tg, hg, fg) = self.grids(&p, cc);
        let sc = self.params.scale_log2;
        let (b, h) = (p.batch, p.kv_heads);
        let f32t = |shape: &[usize]| HostTensor::full(DType::F32, shape, f64::NAN);
        let i32t = |shape: &[usize]| HostTensor::full(DType::I32, shape, -7.0);
        let part = [b, h, tg[0] as usize, g];
        let (mut pm, mut pl, mut nl) = (f32t(&part), f32t(&part), f32t(&[b, h, g]));
        let mut raw = f32t(&[b, h, g, cc]);
        kn.tile_lse.run_cpu(tg, q, x.coarse_centroids, x.coarse_counts, &mut pm, &mut pl, &mut raw, sc)?;
        kn.lse.run_cpu(hg, &pm, &pl, &mut nl)?;
        let kc_shape = [b, h, self.keep_coarse];
        let (mut cks, mut ckl, mut ckc) = (i32t(&kc_shape), i32t(&kc_shape), i32t(&[b, h]));
        let (cn, cst, inf) = (x.coarse_counts, x.coarse_starts, f32::NEG_INFINITY);
        kn.coarse_select.run_cpu(hg, &raw, cn, &pm, &pl, cst, &mut cks, &mut ckl, &mut ckc, inf)?;
        let slots = [b, h, self.keep_coarse * Self::fine_slots(self.max_fine)];
        let (mut cand_s, mut cand_i) = (f32t(&slots), i32t(&slots));
        kn.fine_scores.run_cpu(
            fg,
            q,
            x.fine_centroids,
            x.fine_counts,
            &nl,
            &cks,
            &ckl,
            &ckc,
            &mut cand_s,
            &mut cand_i,
            sc,
        )?;
        kn.select.run_cpu(hg, &cand_s, &cand_i, x.fine_starts, keep_start, keep_len, keep_count, threshold)?;
        let kept = [&*keep_start, &*keep_len, &*keep_count];
        kn.attention.run_cpu(&p, q, k, v, kept, sc, fixed_len, seq_len, out, lse)?;
        Ok(p)
    }

    /// The same launches on the GPU with every intermediate in `scratch` (nothing
    /// allocated or synchronized once it holds the shapes).
    #[allow(clippy::too_many_arguments)]
    pub fn launch_with(
        &self,
        rt: &Runtime,
        scratch: &Scratch,
        q: &DeviceTensor,
        k: &DeviceTensor,
        v: &DeviceTensor,
        x: &TwoLevelInputs<DeviceTensor>,
        fixed_len: usize,
        seq_len: usize,
        threshold: f32,
        kept: &KeptRanges<DeviceTensor>,
        out: &DeviceTensor,
        lse: Option<&DeviceTensor>,
    ) -> Result<CentroidPlan, KernelError> {
        let xm = x.meta();
        let km = KeptRanges::<dyn TensorMeta> {
            keep_start: kept.keep_start,
            keep_len: kept.keep_len,
            keep_count: kept.keep_count,
        };
        let p = self.check_args(q, k, v, &xm, fixed_len, seq_len, &km, out, lse.map(|l| l as &dyn TensorMeta))?;
        let kn = &self.kernels;
        let st = rt.stream();
        let g = self.params.group;
        let cc = x.coarse_centroids.shape()[2];
        let (tg, hg, fg) = self.grids(&p, cc);
        let sc = self.params.scale_log2;
        let (b, h) = (p.batch, p.kv_heads);
        // Slots 0–2 hold the split partials (`split_combine_gpu_with`).
        let part = [b, h, tg[0] as usize, g];
        let (pm, pl) = (scratch.get(rt, 3, DType::F32, &part)?, scratch.get(rt, 4, DType::F32, &part)?);
        let nl = scratch.get(rt, 6, DType::F32, &[b, h, g])?;
        let kc_shape = [b, h, self.keep_coarse];
        let cks = scratch.get(rt, 7, DType::I32, &kc_shape)?;
        let ckl = scratch.get(rt, 8, DType::I32, &kc_shape)?;
        let ckc = scratch.get(rt, 9, DType::I32, &[b, h])?;
        let slots = [b, h, self.keep_coarse * Self::fine_slots(self.max_fine)];
        let (cand_s, cand_i) = (scratch.get(rt, 10, DType::F32, &slots)?, scratch.get(rt, 11, DType::I32, &slots)?);
        let raw = scratch.get(rt, 12, DType::F32, &[b, h, g, cc])?;
        kn.tile_lse.launch(st, tg, q, x.coarse_centroids, x.coarse_counts, &pm, &pl, &raw, sc)?;
        kn.lse.launch(st, hg, &pm, &pl, &nl)?;
        let inf = f32::NEG_INFINITY;
        kn.coarse_select.launch(st, hg, &raw, x.coarse_counts, &pm, &pl, x.coarse_starts, &cks, &ckl, &ckc, inf)?;
        kn.fine_scores.launch(
            st,
            fg,
            q,
            x.fine_centroids,
            x.fine_counts,
            &nl,
            &cks,
            &ckl,
            &ckc,
            &cand_s,
            &cand_i,
            sc,
        )?;
        kn.select.launch(
            st,
            hg,
            &cand_s,
            &cand_i,
            x.fine_starts,
            kept.keep_start,
            kept.keep_len,
            kept.keep_count,
            threshold,
        )?;
        let ranges = [kept.keep_start, kept.keep_len, kept.keep_count];
        kn.attention.launch_with(rt, scratch, &p, q, k, v, ranges, sc, fixed_len, seq_len, out, lse)?;
        Ok(p)
    }
}
