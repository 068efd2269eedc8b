//! `centroid_decode`: centroid lookup decode ([`CentroidDecode`]) over a cache clustered
//! by one Lloyd iteration of [`KMeansCluster`].

use crate::autotune::decode_bucket_dims;
use std::fmt;

use anyhow::Result;
use serde::{Deserialize, Serialize};
use tessera_codegen::host::HostTensor;
use tessera_codegen::ir::{DType, Kernel};
use tessera_kernels::block_sparse::BlockSparseDecodeSplit;
use tessera_kernels::centroid::{
    init_indices, kept_clusters, layout_tensors, score_clusters, select_clusters, CentroidPackRows, CentroidSelect,
    CentroidTileLse,
};
use tessera_kernels::{CentroidDecode, DecodeParams, KMeansCluster, Scratch};
use tessera_runtime::{DeviceTensor, Runtime, TimingStats};

use super::io;
use crate::autotune::common::{
    bxn_list, check_out, check_pairs, combine_kernel, decode_refs, kerr, tile_knobs, time, Qkv, RefRows, D, G, HKV,
};
use crate::autotune::target::{Failure, TuneTarget};
use crate::inputs::rows_f64;

/// A centroid-lookup decode: the fixed context `[0, N − recent)` clustered into
/// `clusters`, the top `keep` clusters attended with the recent rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CentroidShape {
    pub batch: usize,
    pub kv_heads: usize,
    pub group: usize,
    pub seq_len: usize,
    pub head_dim: usize,
    /// Tokens at the end of the context attended densely (not clustered).
    pub recent: usize,
    pub clusters: usize,
    /// Clusters kept (the select kernel's KEEP).
    pub keep: usize,
}

impl CentroidShape {
    fn fixed(&self) -> usize {
        self.seq_len - self.recent
    }
}

impl fmt::Display for CentroidShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "B={} N={} C={} keep={}", self.batch, self.seq_len, self.clusters, self.keep)
    }
}

/// Knobs of centroid decode: kept clusters expanded per packing program, the attention
/// kernel's (a block-sparse split with one-row blocks) BLOCK_N and WARPS, and its splits
/// per (batch, KV head) (they share the kept + recent rows evenly).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CentroidConfig {
    /// Programs per (batch, KV head) of the row packing (`pack_slots` in databases written
    /// before it became a program count; such entries are stale by their source hash).
    #[serde(alias = "pack_slots")]
    pub pack_programs: usize,
    pub block_n: usize,
    pub warps: usize,
    pub max_splits: usize,
}

impl fmt::Display for CentroidConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PACK={} BLOCK_N={} WARPS={} splits={}",
            self.pack_programs, self.block_n, self.warps, self.max_splits
        )
    }
}

impl CentroidConfig {
    fn params(&self, s: &CentroidShape) -> DecodeParams {
        DecodeParams {
            block_n: self.block_n,
            warps: self.warps,
            max_splits: self.max_splits,
            ..DecodeParams::new(s.group, s.head_dim)
        }
    }
}

/// Centroid lookup decode ([`CentroidDecode`], top-k without threshold).
pub struct CentroidDecodeTarget;

/// Tokens of the preset's recent window.
const CENTROID_RECENT: usize = 1024;

/// The clustering of a job (device tensors for the op, host copies for the checks).
pub struct CentroidBench {
    shape: CentroidShape,
    x: Qkv,
    /// The cache with the fixed rows permuted by cluster.
    k: DeviceTensor,
    v: DeviceTensor,
    centroids: DeviceTensor,
    counts: DeviceTensor,
    starts: DeviceTensor,
    /// `[B, Hkv, C + 1]` and `[B, Hkv, T_f]` (permuted row → original position).
    starts_h: Vec<f64>,
    perm: Vec<f64>,
    /// f64 cluster scores on the checked slices: `(b·Hkv + h, scores [C])`.
    scores: Vec<(usize, Vec<f64>)>,
    ks: DeviceTensor,
    kl: DeviceTensor,
    kc: DeviceTensor,
    out: DeviceTensor,
}

impl TuneTarget for CentroidDecodeTarget {
    type Shape = CentroidShape;
    type Config = CentroidConfig;
    type Bench = CentroidBench;

    fn name(&self) -> &'static str {
        "centroid_decode"
    }

    /// `decode`: B ∈ {1, 8}, N = 32K (the last 1024 recent; 5% clusters of the rest,
    /// 10% of them kept); a `BxN` list derives the clusters the same way.
    fn shapes(&self, spec: &str) -> Result<Vec<CentroidShape>> {
        bxn_list(spec, &[(1, 32768), (8, 32768)])?
            .into_iter()
            .map(|(batch, seq_len)| {
                anyhow::ensure!(seq_len > CENTROID_RECENT, "centroid_decode needs N > {CENTROID_RECENT}");
                let fixed = seq_len - CENTROID_RECENT;
                let clusters = ((fixed as f64 * 0.05).round() as usize).clamp(1, fixed);
                let keep = ((clusters as f64 * 0.10).round() as usize).clamp(1, clusters);
                Ok(CentroidShape {
                    batch,
                    kv_heads: HKV,
                    group: G,
                    seq_len,
                    head_dim: D,
                    recent: CENTROID_RECENT,
                    clusters,
                    keep,
                })
            })
            .collect()
    }

    /// Clusters by powers of two (the select kernel's CAND), `keep` exact (its KEEP).
    fn bucket(&self, s: &CentroidShape) -> String {
        decode_bucket_dims(s.batch, s.seq_len, s.kv_heads, s.group, s.head_dim)
            .exact("recent", s.recent as u64)
            .pow2("c", s.clusters as u64)
            .exact("keep", s.keep as u64)
            .build()
    }

    /// The attention kernel's tile space (BLOCK_N × WARPS) × splits {4, 8, 16, 32}, 16
    /// packing programs (64 measured the same on the H200).
    fn candidates(&self, _s: &CentroidShape) -> Vec<CentroidConfig> {
        let mut out = Vec::new();
        for (block_n, warps, _) in tile_knobs(BlockSparseDecodeSplit::tune_space()) {
            for max_splits in [4, 8, 16, 32] {
                let c = CentroidConfig { pack_programs: 16, block_n, warps, max_splits };
                if !out.contains(&c) {
                    out.push(c);
                }
            }
        }
        out
    }

    /// SLOTS 16, BLOCK_N 32, 4 warps (H200, B8 N128K: 388 µs against 439–479 at BLOCK_N
    /// 64: 119 registers and 36 KB of staged tiles fit 4 programs per SM, 64 only 3), and
    /// enough splits for about two programs per SM (4 to 32): the packed rows are whole
    /// tiles, so the split count only spreads them.
    fn heuristic(&self, s: &CentroidShape, sm_count: usize) -> CentroidConfig {
        let heads = (s.batch * s.kv_heads).max(1);
        let max_splits = (2 * sm_count).div_ceil(heads).next_power_of_two().clamp(4, 32);
        CentroidConfig { pack_programs: 16, block_n: 32, warps: 4, max_splits }
    }

    /// The attention (the tuned knobs) and the combine its split count sizes, the row
    /// packing, then the scoring and select kernels, configured as the op configures them.
    fn kernels(&self, s: &CentroidShape, c: &CentroidConfig) -> Result<Vec<Kernel>> {
        let cand = s.clusters.next_power_of_two();
        let p = c.params(s);
        let [tile, select, pack, attn] = CentroidDecode::configs(&p, s.keep, cand, c.pack_programs);
        let max_splits = CentroidDecode::combine_splits(&p);
        Ok(vec![
            BlockSparseDecodeSplit::build(&attn)?,
            combine_kernel(s.head_dim, max_splits)?,
            CentroidPackRows::build(&pack)?,
            CentroidTileLse::build(&tile)?,
            CentroidSelect::build(&select)?,
        ])
    }

    fn prepare(&self, rt: &Runtime, s: &CentroidShape, seed: u64) -> Result<CentroidBench> {
        let st = rt.stream();
        let (hq, c, fixed) = (s.kv_heads * s.group, s.clusters, s.fixed());
        let kv = [s.batch, s.kv_heads, s.seq_len, s.head_dim];
        let x = Qkv::new(rt, &[s.batch, hq, s.head_dim], kv, seed)?;
        // One Lloyd iteration from seeded distinct keys (normalized, as the paper clusters).
        let init = init_centroids(&x.hk, s, seed);
        let init = DeviceTensor::upload(st, &init)?.read_only();
        let km = KMeansCluster::new(rt, s.head_dim, true, 64, 64)?;
        let k = DeviceTensor::poisoned(st, DType::BF16, &kv)?;
        let v = DeviceTensor::poisoned(st, DType::BF16, &kv)?;
        let dc = km.launch(rt, &x.k, &x.v, fixed, s.seq_len, &init, 1, &k, &v)?;
        let (_, starts_h) = layout_tensors(&dc.labels, c);
        let (starts_h, perm) = (starts_h.to_f64(), dc.perm.to_f64());
        let (cent, counts) = (dc.centroids.download()?.to_f64(), dc.counts.download()?.to_f64());
        let scores = cluster_scores(s, &x.hq, &cent, &counts);
        let keep = [s.batch, s.kv_heads, s.keep];
        Ok(CentroidBench {
            shape: *s,
            k: k.read_only(),
            v: v.read_only(),
            centroids: dc.centroids.read_only(),
            counts: dc.counts.read_only(),
            starts: dc.starts.read_only(),
            starts_h,
            perm,
            scores,
            ks: DeviceTensor::poisoned(st, DType::I32, &keep)?,
            kl: DeviceTensor::poisoned(st, DType::I32, &keep)?,
            kc: DeviceTensor::poisoned(st, DType::I32, &[s.batch, s.kv_heads])?,
            out: DeviceTensor::poisoned(st, DType::BF16, &[s.batch, hq, s.head_dim])?,
            x,
        })
    }

    fn run_candidate(
        &self,
        rt: &Runtime,
        b: &mut CentroidBench,
        c: &CentroidConfig,
        warmup: usize,
        iters: usize,
    ) -> Result<TimingStats, Failure> {
        let s = b.shape;
        let op = CentroidDecode::new(rt, c.params(&s), s.keep, s.clusters, c.pack_programs).map_err(kerr)?;
        let scratch = Scratch::new();
        let b = &*b;
        let launch = || {
            let r = op.launch_with(
                rt,
                &scratch,
                &b.x.q,
                &b.k,
                &b.v,
                &b.centroids,
                &b.counts,
                &b.starts,
                s.fixed(),
                s.seq_len,
                f32::NEG_INFINITY,
                &b.ks,
                &b.kl,
                &b.kc,
                &b.out,
                None,
            );
            r.map(|_| ())
        };
        for t in [&b.ks, &b.kl, &b.kc, &b.out] {
            t.poison().map_err(io)?;
        }
        launch().map_err(kerr)?;
        rt.synchronize().map_err(io)?;
        let host = |t: &DeviceTensor| t.download().map(|h| h.to_f64()).map_err(io);
        let (ks, kl, kc) = (host(&b.ks)?, host(&b.kl)?, host(&b.kc)?);
        let kept = check_centroid(&s, (&ks, &kl, &kc), &b.starts_h, &b.scores).map_err(Failure::wrong)?;
        let refs = centroid_refs(&b.x, &s, &kept, &b.starts_h, &b.perm);
        check_out(&b.out, &refs, s.head_dim)?;
        time(rt, warmup, iters, |_| launch())
    }
}

/// Initial centroids `[B, Hkv, C, D]` f32: `C` distinct L2-normalized keys of the fixed
/// context of each (batch, KV head), chosen by [`init_indices`] (seed `seed ^ bh`).
fn init_centroids(k: &HostTensor, s: &CentroidShape, seed: u64) -> HostTensor {
    let (c, d) = (s.clusters, s.head_dim);
    let mut out = Vec::with_capacity(s.batch * s.kv_heads * c * d);
    for bh in 0..s.batch * s.kv_heads {
        for j in init_indices(s.fixed(), c, seed ^ bh as u64) {
            let row = rows_f64(k, bh * s.seq_len + j, 1, d);
            let n = row.iter().map(|v| v * v).sum::<f64>().sqrt();
            let inv = if n > 0.0 { 1.0 / n } else { 1.0 };
            out.extend(row.iter().map(|v| v * inv));
        }
    }
    HostTensor::from_f64(DType::F32, &[s.batch, s.kv_heads, c, d], &out)
}

/// The f64 cluster scores ([`score_clusters`]) of the checked slices: `(b·Hkv + h,
/// scores [C])` from the host copies of `q`, the centroids and the counts.
fn cluster_scores(s: &CentroidShape, q: &HostTensor, cent: &[f64], counts: &[f64]) -> Vec<(usize, Vec<f64>)> {
    let (c, d, hq) = (s.clusters, s.head_dim, s.kv_heads * s.group);
    let sl2 = tessera_kernels::default_scale_log2(d) as f64;
    check_pairs(s.batch, s.kv_heads)
        .into_iter()
        .map(|(b, h)| {
            let bh = b * s.kv_heads + h;
            let qs = rows_f64(q, b * hq + h * s.group, s.group, d);
            let n: Vec<usize> = counts[bh * c..(bh + 1) * c].iter().map(|&v| v as usize).collect();
            (bh, score_clusters(&qs, &cent[bh * c * d..(bh + 1) * c * d], &n, d, sl2))
        })
        .collect()
}

/// The kept clusters of every (batch, KV head) from the op's `keep_start` / `keep_len` /
/// `keep_count`: whole clusters (a range is one cluster's rows), none twice, at most
/// `keep`; on the checked slices (`scores`: the f64 cluster scores) their scores are the
/// top-`keep` within 1e-3 (log2 units: near-ties may swap). Returns the kept ids.
fn check_centroid(
    s: &CentroidShape,
    (ks, kl, kc): (&[f64], &[f64], &[f64]),
    starts: &[f64],
    scores: &[(usize, Vec<f64>)],
) -> Result<Vec<Vec<usize>>, String> {
    let (c, keep) = (s.clusters, s.keep);
    let mut kept = Vec::new();
    for bh in 0..s.batch * s.kv_heads {
        let (st, slots) = (&starts[bh * (c + 1)..(bh + 1) * (c + 1)], bh * keep..(bh + 1) * keep);
        let ids = kept_clusters(st, &ks[slots.clone()], &kl[slots], kc[bh]).map_err(|e| format!("(b,h) {bh}: {e}"))?;
        kept.push(ids);
    }
    for (bh, sc) in scores {
        let want = select_clusters(sc, keep, f64::NEG_INFINITY);
        let mut got: Vec<f64> = kept[*bh].iter().map(|&i| sc[i]).collect();
        let mut top: Vec<f64> = want.iter().map(|&i| sc[i]).collect();
        if got.len() != top.len() {
            return Err(format!("(b,h) {bh}: kept {} clusters, reference {}", got.len(), top.len()));
        }
        got.sort_by(|a, b| b.total_cmp(a));
        top.sort_by(|a, b| b.total_cmp(a));
        if let Some((g, w)) = got.iter().zip(&top).find(|(g, w)| (*g - *w).abs() > 1e-3) {
            return Err(format!("(b,h) {bh}: kept cluster score {g} vs reference {w}"));
        }
    }
    Ok(kept)
}

/// The original positions of the rows centroid decode attends for (batch, KV head) `bh`:
/// the kept clusters' rows (permuted rows mapped back through `perm`), then the recent
/// rows.
fn centroid_positions(s: &CentroidShape, bh: usize, kept: &[usize], starts: &[f64], perm: &[f64]) -> Vec<usize> {
    let (c, fixed) = (s.clusters, s.fixed());
    let mut pos: Vec<usize> = Vec::new();
    for &ci in kept {
        let (r0, r1) = (starts[bh * (c + 1) + ci] as usize, starts[bh * (c + 1) + ci + 1] as usize);
        pos.extend(perm[bh * fixed + r0..bh * fixed + r1].iter().map(|&p| p as usize));
    }
    pos.extend(fixed..s.seq_len);
    pos
}

/// Reference rows of the checked slices: attention (f64, original cache) over
/// [`centroid_positions`].
fn centroid_refs(x: &Qkv, s: &CentroidShape, kept: &[Vec<usize>], starts: &[f64], perm: &[f64]) -> RefRows {
    decode_refs(x, s.batch, s.group, |b, h| {
        let bh = b * s.kv_heads + h;
        centroid_positions(s, bh, &kept[bh], starts, perm)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autotune::common::contract;
    use crate::inputs::random_bf16;
    use tessera_kernels::reference::attend;

    #[test]
    fn centroid_decode_keeps_the_contract() {
        let counts = contract(&CentroidDecodeTarget, |s| CentroidShape { seq_len: s.seq_len - 1000, ..*s });
        // BLOCK_N {64, 32, 128} × WARPS {4, 8} × splits {4, 8, 16, 32}.
        assert_eq!(counts, vec![24, 24]);
        let s = CentroidDecodeTarget.shapes("decode").unwrap();
        // bench-selection's sizes at 32K: 5% of 31744 fixed keys, 10% of those clusters.
        assert_eq!((s[0].batch, s[1].batch, s[0].seq_len), (1, 8, 32768));
        assert_eq!((s[0].recent, s[0].clusters, s[0].keep), (1024, 1587, 159));
        assert!(CentroidDecodeTarget.shapes("1x1024").is_err());
        // Another keep is another key (the select kernel's KEEP is comptime).
        let other = CentroidShape { keep: 160, ..s[0] };
        assert_ne!(CentroidDecodeTarget.bucket(&other), CentroidDecodeTarget.bucket(&s[0]));
    }

    /// A cache clustered and decoded by the interpreter ops passes the check, and its
    /// output matches the f64 attention over the positions the check derives; a range
    /// that is no cluster, an unsorted list or a low-scoring cluster do not pass.
    #[test]
    fn the_centroid_check_takes_the_ops_result_and_refuses_bad_ones() {
        let s = CentroidShape {
            batch: 1,
            kv_heads: 2,
            group: 2,
            seq_len: 700,
            head_dim: 16,
            recent: 100,
            clusters: 30,
            keep: 5,
        };
        let (d, hq, kv) = (16, 4, [1, 2, 700, 16]);
        let q = random_bf16(&[1, hq, d], 1);
        let (k, v) = (random_bf16(&kv, 2), random_bf16(&kv, 3));
        let km = KMeansCluster::cpu(d, true, 64, 64).unwrap();
        let (mut kp, mut vp) = (HostTensor::full(DType::BF16, &kv, 0.0), HostTensor::full(DType::BF16, &kv, 0.0));
        let co = km.run_cpu(&k, &v, s.fixed(), s.seq_len, &init_centroids(&k, &s, 9), 1, &mut kp, &mut vp).unwrap();
        let c = CentroidDecodeTarget.heuristic(&s, 132);
        let op = CentroidDecode::cpu(c.params(&s), s.keep, s.clusters, c.pack_programs).unwrap();
        let keep = [1, 2, s.keep];
        let mut ks = HostTensor::full(DType::I32, &keep, -1.0);
        let (mut kl, mut kc) = (ks.clone(), HostTensor::full(DType::I32, &[1, 2], -1.0));
        let mut out = HostTensor::full(DType::BF16, &[1, hq, d], f64::NAN);
        op.run_cpu(
            &q,
            &kp,
            &vp,
            &co.centroids,
            &co.counts,
            &co.starts,
            s.fixed(),
            s.seq_len,
            f32::NEG_INFINITY,
            &mut ks,
            &mut kl,
            &mut kc,
            &mut out,
            None,
        )
        .unwrap();
        let (starts, perm) = (co.starts.to_f64(), co.perm.to_f64());
        let scores = cluster_scores(&s, &q, &co.centroids.to_f64(), &co.counts.to_f64());
        let (ksf, klf, kcf) = (ks.to_f64(), kl.to_f64(), kc.to_f64());
        let kept = check_centroid(&s, (&ksf, &klf, &kcf), &starts, &scores).unwrap();
        assert_eq!(kept.iter().map(|k| k.len()).collect::<Vec<_>>(), [5, 5]);
        let got = out.to_f64();
        let sl2 = tessera_kernels::default_scale_log2(d) as f64;
        for h in 0..2 {
            let pos = centroid_positions(&s, h, &kept[h], &starts, &perm);
            assert_eq!(pos.len(), klf[h * 5..h * 5 + 5].iter().sum::<f64>() as usize + 100);
            let (kh, vh) = (rows_f64(&k, h * 700, 700, d), rows_f64(&v, h * 700, 700, d));
            for g in 0..2 {
                let row = h * 2 + g;
                let (want, _) = attend(&rows_f64(&q, row, 1, d), &kh, &vh, 0, &pos, d, sl2);
                for (a, w) in got[row * d..(row + 1) * d].iter().zip(&want) {
                    assert!((a - w).abs() < 1e-2, "row {row}: {a} vs {w}");
                }
            }
        }
        // A range one row too long is no cluster.
        let mut bad = klf.clone();
        bad[0] += 1.0;
        assert!(check_centroid(&s, (&ksf, &bad, &kcf), &starts, &scores).unwrap_err().contains("no cluster"));
        // Two slots swapped: any order is fine; the same cluster twice is not.
        let (mut s2, mut l2) = (ksf.clone(), klf.clone());
        s2.swap(5, 6);
        l2.swap(5, 6);
        assert!(check_centroid(&s, (&s2, &l2, &kcf), &starts, &scores).is_ok());
        (s2[6], l2[6]) = (s2[5], l2[5]);
        assert!(check_centroid(&s, (&s2, &l2, &kcf), &starts, &scores).unwrap_err().contains("kept twice"));
        // The last slice's best cluster replaced by its worst non-empty one.
        let sc = &scores[1].1;
        let best = *kept[1].iter().max_by(|&&a, &&b| sc[a].total_cmp(&sc[b])).unwrap();
        let worst = (0..s.clusters).filter(|i| sc[*i].is_finite()).min_by(|&a, &b| sc[a].total_cmp(&sc[b])).unwrap();
        let mut ids: Vec<usize> = kept[1].iter().copied().filter(|&i| i != best).chain([worst]).collect();
        ids.sort_unstable();
        let (mut s3, mut l3) = (ksf.clone(), klf.clone());
        let st1 = &starts[31..62];
        for (j, &i) in ids.iter().enumerate() {
            s3[5 + j] = st1[i];
            l3[5 + j] = st1[i + 1] - st1[i];
        }
        let err = check_centroid(&s, (&s3, &l3, &kcf), &starts, &scores).unwrap_err();
        assert!(err.contains("kept cluster score"), "{err}");
        assert!(check_centroid(&s, (&ksf, &klf, &[5.0, 6.0]), &starts, &scores).is_err());
    }
}
