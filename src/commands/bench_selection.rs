//! `tessera bench-selection`: the speed figures of the selection methods of issue 5 (HiP
//! tree-pruned attention, Squeezed-Attention centroid lookup, SnapKV, the k-means behind
//! the centroids) on the GPU at the shapes of `../shared/PEERS.md` (32 query heads, 8 KV
//! heads, d=128, bf16, N=131072), beside dense decode in the same run.
//!
//! Same machinery as `tessera bench-kernels` ([`super::bench_common`]): random bf16 inputs
//! uploaded once, outputs poisoned, every configuration run once and checked against an
//! f64 reference on the first and last (batch, KV head) before it is timed with CUDA
//! events (median of `--iters` after warm-up). Unlike bench-kernels, the L2 is flushed
//! (a write of 2x its size, outside the timed events) before every timed iteration: the
//! sparse reads here are a few MB, which a warm L2 would hold between launches but a real
//! decode step (other layers in between) would not find there.
//!
//! Workloads (see [`Args`] for the knobs):
//!
//! * `hip_B1`, `hip_B8`: HiP decode, k=512 tokens as `k/bk` blocks of `bk` (default 2,
//!   the paper's), sink 16, window 256, mask refresh every 8 steps. Rows `hip_B*_select`
//!   (HipSelect: init, 8 x (score, select), finalize), `hip_B*_attn` (BlockSparseDecode
//!   over the selected blocks + sink + window), `dense_B*`, and the summary `hip_B*`:
//!   amortized step = attention + selection / 8, with the full (refresh) step and the
//!   cached-mask step, the targets and HiP's own Triton figures beside them.
//! * `centroid_B8`: centroid decode (scores, select, packed kept rows + recent rows attended, LSE
//!   combine) over a cache clustered by [`KMeansCluster`] (5% clusters), top 10% of the
//!   clusters kept, the last 1024 tokens recent; speed-up over dense decode B8.
//! * `centroid2_B8`: the two-level lookup over the same clustering
//!   ([`super::bench_centroid2`]): coarse clusters of ~16 fine ones, a quarter of them
//!   explored, the same number of fine clusters kept.
//! * `snapkv_128K`: SnapKV selection + compression of a 128K prompt, B1, window 32,
//!   capacity 4096, max pooling kernel 7 (the LongBench setting of algorithms.md §4);
//!   `snapkv_128K_C2048` the same at capacity 2048.
//! * `kmeans_128K`: k-means of 128K keys x 8 KV heads into 5% clusters, `--kmeans-iters`
//!   Lloyd iterations + the permuted cache (one layer).
//!
//! A workload whose op cannot be built or run at its shape gets a row with the error text
//! instead of a figure.

use std::fmt::Write as _;
use std::time::Instant;

use anyhow::{anyhow, bail, ensure, Context, Result};
use serde_json::json;
use tessera::inputs::{random_bf16, rows_f64};
use tessera_codegen::host::HostTensor;
use tessera_codegen::ir::DType;
use tessera_kernels::centroid::{init_indices, layout_tensors, score_clusters, select_clusters};
use tessera_kernels::hip::{refine_steps, tree_search, HipSelect};
use tessera_kernels::reference::{block_sparse_positions, DecodeDims};
use tessera_kernels::sink_window::union_len;
use tessera_kernels::snapkv::{self, Pool, SnapKvCompress, SnapTiles};
use tessera_kernels::{BlockSparseDecode, CentroidDecode, DecodeParams, KMeansCluster, Scratch};
use tessera_runtime::{DeviceTensor, Runtime, TimingStats};

use super::bench_common::{
    check_out, check_pairs, decode_label, decode_params, decode_refs, dense, guarded, kv_bytes, print_table, round2,
    scale_log2, BenchArgs, Ctx, DecodeKnobs, HostKv, Inputs, Row, Rows, Trial, CEILING_TB_S, D, G, HKV, HQ, N,
};

/// HiP: selected tokens (`mask_k`).
const HIP_K: usize = 512;
/// HiP: sink tokens.
const HIP_SINK: usize = 16;
/// HiP: sliding window.
const HIP_WINDOW: usize = 256;
/// HiP: decode steps per mask refresh.
const HIP_REFRESH: usize = 8;

/// HiP v1.1's own Triton figures on the H200 (issue 5), µs: (amortized, full, cached,
/// dense SDPA) at B1 and B8.
const HIP_TRITON_B1: [f64; 4] = [126.7, 515.0, 71.0, 136.0];
/// See [`HIP_TRITON_B1`].
const HIP_TRITON_B8: [f64; 4] = [150.5, 632.0, 82.0, 936.0];

/// Centroid decode: recent (non-clustered) tokens at the end of the context.
pub(super) const CENTROID_RECENT: usize = 1024;
/// Clusters per fixed-context key (the paper's 5%).
pub(super) const CLUSTER_FRACTION: f64 = 0.05;
/// Centroid decode: fraction of the fixed keys kept (as a top-k of clusters).
pub(super) const CENTROID_KEEP_FRACTION: f64 = 0.10;

/// SnapKV: observation window, capacity, pooling kernel (max pooling).
const SNAP_WINDOW: usize = 32;
const SNAP_CAPACITY: usize = 4096;
const SNAP_KERNEL: usize = 7;
/// SnapKV: the second capacity measured (`snapkv_128K_C2048`, SnapKV's code default):
/// the one-program merge of `ceil(prefix / POOL_TILE) · (C − w)` candidates needs ~5.25
/// B of shared memory per candidate, so C = 4096 (>= 8 tiles of >= 4096) does not fit in
/// 227 KB while C = 2048 with POOL_TILE 8192 (32K candidates) does.
const SNAP_CAPACITY_SMALL: usize = 2048;

/// The flags of `tessera bench-selection`.
#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    #[command(flatten)]
    common: BenchArgs,
    /// HiP block sizes `bk` (k = 512 tokens = 512/bk blocks); the first gives rows
    /// `hip_B*`, others `hip_B*_bk<bk>`. 2 is the paper's.
    #[arg(long, value_delimiter = ',', default_values_t = [2usize])]
    hip_bk: Vec<usize>,
    /// Lloyd iterations of the `kmeans_128K` workload.
    #[arg(long, default_value_t = 10)]
    kmeans_iters: usize,
    /// Lloyd iterations of the clustering behind `centroid_B8` (setup, not timed: at B8
    /// one iteration is 64 (batch, KV head) x 130K keys x 6.5K centroids).
    #[arg(long, default_value_t = 1)]
    centroid_setup_iters: usize,
}

/// HiP step times (µs) from a selection and an attention time: `(amortized, full,
/// cached)` = (attention + selection / refresh, attention + selection, attention).
pub fn hip_step_times(select_us: f64, attn_us: f64, refresh: usize) -> (f64, f64, f64) {
    (attn_us + select_us / refresh.max(1) as f64, attn_us + select_us, attn_us)
}

/// Clusters for `fixed` keys at the paper's 5% (at least 1), and the clusters kept so
/// that about `keep_fraction` of the keys are (at least 1).
pub fn centroid_sizes(fixed: usize, keep_fraction: f64) -> (usize, usize) {
    let c = ((fixed as f64 * CLUSTER_FRACTION).round() as usize).clamp(1, fixed.max(1));
    let keep = ((c as f64 * keep_fraction).round() as usize).clamp(1, c);
    (c, keep)
}

/// SnapKV: the candidates of the merge (`ceil(prefix / pool_tile) * (capacity - window)`).
pub fn snapkv_max_cand(t: usize, window: usize, capacity: usize, pool_tile: usize) -> usize {
    (t - window).div_ceil(pool_tile) * (capacity - window)
}

/// A row whose figure is derived from other rows' medians (no sweep of its own).
fn derived_row(workload: &'static str, desc: String, bytes: u64, target: Option<f64>, us: f64, config: String) -> Row {
    let mut row = Row::new(workload, desc, bytes, target);
    let stats = TimingStats::from_samples(vec![us]).expect("one sample");
    row.best = Some(Trial { config, stats, check: Ok("components checked".into()) });
    row
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

pub(super) fn median(row: &Row) -> Option<f64> {
    row.best.as_ref().filter(|t| t.check.is_ok()).map(|t| t.stats.median_us)
}

// ---------------------------------------------------------------------------------------
// HiP

/// A check's summary, or why the output is wrong.
type Check = std::result::Result<String, String>;

/// Checks a device HiP selection against the f64 tree search on the checked slices:
/// counts, ascending distinct in-range ids everywhere; on the checked slices at most 1%
/// of the blocks may differ (a near-tie flip between f32 and f64 scores swaps one
/// subtree, i.e. one block). Returns the summary and the host copies `(idx, count)`.
#[allow(clippy::too_many_arguments)]
fn check_hip(
    x: &HostKv,
    bi: &DeviceTensor,
    bc: &DeviceTensor,
    bk: usize,
    k_nodes: usize,
    reference: bool,
) -> Result<(Check, Vec<f64>, Vec<f64>)> {
    let (idx, cnt) = (bi.download()?.to_f64(), bc.download()?.to_f64());
    let nb = (N - HIP_WINDOW).div_ceil(bk);
    let want_n = k_nodes.min(nb);
    for bh in 0..x.batch * HKV {
        let row = &idx[bh * k_nodes..(bh + 1) * k_nodes];
        if cnt[bh] as usize != want_n {
            return Ok((Err(format!("(b,h) {bh}: count {} want {want_n}", cnt[bh])), idx, cnt));
        }
        let live = &row[..want_n];
        if live.iter().any(|&b| b < 0.0 || b as usize >= nb) || !live.windows(2).all(|w| w[0] < w[1]) {
            return Ok((Err(format!("(b,h) {bh}: ids not ascending / in [0, {nb})")), idx, cnt));
        }
    }
    if !reference {
        return Ok((Ok("valid selection".into()), idx, cnt));
    }
    let pairs = check_pairs(x.batch);
    let diffs: Vec<usize> = std::thread::scope(|s| {
        let hs: Vec<_> = pairs
            .iter()
            .map(|&(b, h)| {
                let idx = &idx;
                s.spawn(move || {
                    let (kf, _) = x.slab(b, h);
                    let qs: Vec<Vec<f64>> = (0..G).map(|g| rows_f64(&x.hq, b * HQ + h * G + g, 1, D)).collect();
                    let want = tree_search(nb, k_nodes, |blk| {
                        let mut best = f64::NEG_INFINITY;
                        for j in blk * bk..((blk + 1) * bk).min(N) {
                            let kr = &kf[j * D..(j + 1) * D];
                            for q in &qs {
                                best = best.max(q.iter().zip(kr).map(|(a, c)| a * c).sum());
                            }
                        }
                        best
                    });
                    let bh = b * HKV + h;
                    let got: std::collections::HashSet<i64> =
                        idx[bh * k_nodes..bh * k_nodes + want.len()].iter().map(|&v| v as i64).collect();
                    want.iter().filter(|&&w| !got.contains(&(w as i64))).count()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().expect("reference thread")).collect()
    });
    let worst = diffs.iter().copied().max().unwrap_or(0);
    let allowed = want_n / 100;
    let check = if worst > allowed {
        Err(format!("{worst} of {want_n} blocks differ from the f64 tree search (allowed {allowed})"))
    } else if worst == 0 {
        Ok(format!("= f64 tree search on {} slices", pairs.len()))
    } else {
        Ok(format!("f64 tree search: {worst} of {want_n} blocks differ (near-ties)"))
    };
    Ok((check, idx, cnt))
}

/// The HiP rows of one batch size and block size: selection, attention, summary (dense
/// is passed in: the same run's `dense_B*`).
fn hip(cx: &Ctx, x: &Inputs, bk: usize, first: bool, dense_us: Option<f64>) -> Vec<Row> {
    let b = x.batch;
    let name = |suffix: &str| {
        let bks = if first { String::new() } else { format!("_bk{bk}") };
        leak(format!("hip_B{b}{bks}{suffix}"))
    };
    let k_nodes = HIP_K / bk;
    let nb = (N - HIP_WINDOW).div_ceil(bk);
    let steps = refine_steps(nb, k_nodes);
    let sel_desc = format!(
        "HiP selection B{b} N={N}: k={HIP_K} as {k_nodes} blocks of bk={bk} over {nb} blocks, {steps} refinement steps \
         (init + {steps} x (score, select) + finalize, max over the GQA group)"
    );
    let sel_bytes = (steps * b * HKV * 2 * k_nodes * bk * D * 2) as u64;
    let mut sel_row = Row::new(name("_select"), sel_desc.clone(), sel_bytes, None);
    let bi = DeviceTensor::poisoned(cx.rt.stream(), DType::I32, &[b, HKV, k_nodes]);
    let bc = DeviceTensor::poisoned(cx.rt.stream(), DType::I32, &[b, HKV]);
    let (bi, bc) = match (bi, bc) {
        (Ok(i), Ok(c)) => (i, c),
        (Err(e), _) | (_, Err(e)) => return vec![guarded(name("_select"), &sel_desc, Err(e.into()))],
    };
    let mut host_sel: Option<(Vec<f64>, Vec<f64>)> = None;
    let label = |ct: &usize| format!("bk={bk} K={k_nodes} CHILD_TILE={ct}");
    let best_ct = cx.sweep(&mut sel_row, &[64usize, 128, 32], label, |&ct| {
        let op = HipSelect::new(cx.rt, G, D, bk, k_nodes, ct)?;
        let plan = op.check_args(&x.q, &x.k, N, HIP_WINDOW, &bi, &bc)?;
        let scratch = Scratch::new();
        bi.poison()?;
        bc.poison()?;
        op.launch_with(cx.rt, &scratch, &x.q, &x.k, N, HIP_WINDOW, &bi, &bc)?;
        cx.rt.synchronize()?;
        let (check, idx, cnt) = check_hip(x, &bi, &bc, bk, k_nodes, !cx.args.no_reference)?;
        if check.is_ok() && host_sel.is_none() {
            host_sel = Some((idx, cnt));
        }
        let stats = cx.time(|_| op.launch_with(cx.rt, &scratch, &x.q, &x.k, N, HIP_WINDOW, &bi, &bc).map(|_| ()))?;
        Ok(Trial { config: format!("{} ({} launches)", label(&ct), 2 * plan.steps + 2), stats, check })
    });
    let mut rows = vec![sel_row];
    // The attention runs over the first checked selection (every checked configuration
    // selects the same blocks up to near-ties).
    let Some((idx, cnt)) = host_sel else {
        let mut r = Row::new(name("_attn"), "HiP attention".into(), 0, None);
        r.note = "error: no checked selection to attend over".into();
        rows.push(r);
        return rows;
    };
    let keys = union_len(N, HIP_SINK, HIP_WINDOW) + HIP_K;
    let attn_desc = format!(
        "HiP attention B{b} N={N}: BlockSparseDecode over the {k_nodes} selected blocks of {bk} + sink {HIP_SINK} + \
         window {HIP_WINDOW} (~{keys} keys per (batch, KV head))"
    );
    let attn = (|| -> Result<Row> {
        let mut row = Row::new(name("_attn"), attn_desc.clone(), kv_bytes(b * HKV, keys), None);
        let (di, dc) = (
            DeviceTensor::upload(cx.rt.stream(), &HostTensor::from_f64(DType::I32, &[b, HKV, k_nodes], &idx))?,
            DeviceTensor::upload(cx.rt.stream(), &HostTensor::from_f64(DType::I32, &[b, HKV], &cnt))?,
        );
        let hidx = HostTensor::from_f64(DType::I32, &[b, HKV, k_nodes], &idx);
        let hcnt = HostTensor::from_f64(DType::I32, &[b, HKV], &cnt);
        let refs = decode_refs(x, !cx.args.no_reference, |bb, h| {
            let bh = bb * HKV + h;
            let blocks: Vec<i64> =
                idx[bh * k_nodes..bh * k_nodes + cnt[bh] as usize].iter().map(|&v| v as i64).collect();
            block_sparse_positions(N, HIP_SINK, HIP_WINDOW, &blocks, bk)
        });
        let out = DeviceTensor::poisoned(cx.rt.stream(), DType::BF16, &[b, HQ, D])?;
        // ~800 keys per (batch, KV head): few splits, small tiles.
        let configs: Vec<DecodeKnobs> =
            [(32, 4, 8, 2), (64, 4, 8, 2), (32, 4, 4, 2), (32, 4, 16, 2), (64, 4, 4, 2), (32, 8, 8, 2)].to_vec();
        cx.sweep(&mut row, &configs, decode_label, |c| {
            let op = BlockSparseDecode::new(cx.rt, decode_params(c), bk)?;
            op.check_args(&x.hq, &x.hk, &x.hv, &hidx, &hcnt, N, HIP_SINK, HIP_WINDOW, &x.hq, None)?;
            let (grid, split_len) = op.check_args(&x.q, &x.k, &x.v, &di, &dc, N, HIP_SINK, HIP_WINDOW, &out, None)?;
            let scratch = Scratch::new();
            out.poison()?;
            op.launch_with(cx.rt, &scratch, &x.q, &x.k, &x.v, &di, &dc, N, HIP_SINK, HIP_WINDOW, &out, None)?;
            cx.rt.synchronize()?;
            let check = check_out(&out, &refs);
            let stats = cx.time(|_| {
                op.launch_with(cx.rt, &scratch, &x.q, &x.k, &x.v, &di, &dc, N, HIP_SINK, HIP_WINDOW, &out, None)
            })?;
            Ok(Trial {
                config: format!("{} (splits={}, split_len={split_len})", decode_label(c), grid[0]),
                stats,
                check,
            })
        });
        Ok(row)
    })();
    let attn = guarded(name("_attn"), &attn_desc, attn);
    let (sel_us, attn_us) = (median(&rows[0]), median(&attn));
    let attn_cfg = attn.best.as_ref().map(|t| t.config.clone()).unwrap_or_default();
    rows.push(attn);
    let (target, triton) = if b == 1 { (60.0, HIP_TRITON_B1) } else { (115.0, HIP_TRITON_B8) };
    let sum_desc = format!(
        "HiP decode B{b} N={N}, k={HIP_K} (bk={bk}), sink {HIP_SINK}, window {HIP_WINDOW}, refresh every {HIP_REFRESH} \
         steps: amortized step = attention + selection/{HIP_REFRESH}"
    );
    match (sel_us, attn_us) {
        (Some(s), Some(a)) => {
            let (amortized, full, cached) = hip_step_times(s, a, HIP_REFRESH);
            let bytes = kv_bytes(b * HKV, keys) + sel_bytes / HIP_REFRESH as u64;
            let cfg =
                format!("derived; CHILD_TILE={} + {attn_cfg}", best_ct.map_or("-".to_string(), |c| c.to_string()));
            let mut row = derived_row(name(""), sum_desc, bytes, Some(target), amortized, cfg);
            let e = &mut row.extra;
            e.insert("selection_us".into(), json!(round2(s)));
            e.insert("attention_us".into(), json!(round2(a)));
            e.insert("amortized_step_us".into(), json!(round2(amortized)));
            e.insert("full_step_us".into(), json!(round2(full)));
            e.insert("cached_step_us".into(), json!(round2(cached)));
            e.insert("dense_us".into(), json!(dense_us.map(round2)));
            e.insert("speedup_vs_dense".into(), json!(dense_us.map(|d| round2(d / amortized))));
            e.insert("bk".into(), json!(bk));
            e.insert("refresh".into(), json!(HIP_REFRESH));
            e.insert(
                "hip_triton_h200_us".into(),
                json!({"amortized": triton[0], "full": triton[1], "cached": triton[2], "dense_sdpa": triton[3]}),
            );
            row.note = format!(
                "amortized {amortized:.1} µs, full step {full:.1}, cached step {cached:.1} (selection {s:.1}, attention \
                 {a:.1}); dense {}; HiP Triton on the H200: {} amortized / {} full / {} cached, SDPA dense {}.",
                dense_us.map_or("-".into(), |d| format!("{d:.1} µs ({:.1}x)", d / amortized)),
                triton[0],
                triton[1],
                triton[2],
                triton[3]
            );
            rows.push(row);
        }
        _ => {
            let mut row = Row::new(name(""), sum_desc, 0, Some(target));
            row.note = "error: the selection or the attention has no checked figure".into();
            rows.push(row);
        }
    }
    rows
}

// ---------------------------------------------------------------------------------------
// Centroid lookup

/// Initial centroids `[B, Hkv, C, D]` f32: `C` distinct L2-normalized keys of the fixed
/// context per (batch, KV head), chosen as [`tessera_kernels::centroid::init_centroids`]
/// does (seed `seed ^ bh`), read from the bf16 host copy.
fn init_centroids(x: &HostKv, fixed: usize, c: usize, seed: u64) -> HostTensor {
    let mut out = Vec::with_capacity(x.batch * HKV * c * D);
    for bh in 0..x.batch * HKV {
        for j in init_indices(fixed, c, seed ^ bh as u64) {
            let row = rows_f64(&x.hk, bh * x.cap + j, 1, D);
            let n = row.iter().map(|v| v * v).sum::<f64>().sqrt();
            let inv = if n > 0.0 { 1.0 / n } else { 1.0 };
            out.extend(row.iter().map(|v| v * inv));
        }
    }
    HostTensor::from_f64(DType::F32, &[x.batch, HKV, c, D], &out)
}

/// Clustering + permuted caches (setup of `centroid_B8` and `centroid2_B8`, not timed).
pub(super) struct Clustered {
    pub(super) k: DeviceTensor,
    pub(super) v: DeviceTensor,
    pub(super) centroids: DeviceTensor,
    pub(super) counts: DeviceTensor,
    pub(super) starts: DeviceTensor,
    pub(super) starts_h: HostTensor,
    pub(super) perm: HostTensor,
    pub(super) setup_iters: usize,
}

/// The fine clustering of the fixed context (5 % clusters, `setup_iters` Lloyd iterations)
/// and the cache permuted by it.
fn cluster(cx: &Ctx, x: &Inputs, setup_iters: usize) -> Result<Clustered> {
    let b = x.batch;
    let fixed = N - CENTROID_RECENT;
    let (c, _) = centroid_sizes(fixed, CENTROID_KEEP_FRACTION);
    let st = cx.rt.stream();
    let t0 = Instant::now();
    let km = KMeansCluster::new(cx.rt, D, true, 64, 64)?;
    let init = init_centroids(x, fixed, c, 17);
    let init_d = DeviceTensor::upload(st, &init)?;
    let kp = DeviceTensor::poisoned(st, DType::BF16, &[b, HKV, N, D])?;
    let vp = DeviceTensor::poisoned(st, DType::BF16, &[b, HKV, N, D])?;
    let dc = km.launch(cx.rt, &x.k, &x.v, fixed, N, &init_d, setup_iters, &kp, &vp)?;
    let (_, starts_h) = layout_tensors(&dc.labels, c);
    eprintln!("centroid_B8: clustering setup {:.1} s", t0.elapsed().as_secs_f64());
    Ok(Clustered {
        k: kp.read_only(),
        v: vp.read_only(),
        centroids: dc.centroids,
        counts: dc.counts,
        starts: dc.starts,
        starts_h,
        perm: dc.perm,
        setup_iters,
    })
}

fn centroid(cx: &Ctx, x: &Inputs, cl: &Clustered, dense_us: Option<f64>) -> Result<Row> {
    let b = x.batch;
    let fixed = N - CENTROID_RECENT;
    let (c, keep) = centroid_sizes(fixed, CENTROID_KEEP_FRACTION);
    let setup_iters = cl.setup_iters;
    let mut row = Row::new(
        "centroid_B8",
        format!(
            "centroid decode B{b} N={N}: {fixed} fixed keys in {c} clusters (5%, k-means {setup_iters} it.), top {keep} \
             clusters kept (~10% of keys), last {CENTROID_RECENT} tokens recent; scores + select + packed-row attention + LSE \
             combine"
        ),
        0,
        dense_us.map(|d| d / 4.0),
    );
    let st = cx.rt.stream();
    let perm = cl.perm.to_f64();
    let counts_h = cl.counts.download()?.to_f64();
    let cent_h = cl.centroids.download()?.to_f64();
    let starts = cl.starts_h.to_f64();
    let keep_shape = [b, HKV, keep];
    let ks = DeviceTensor::poisoned(st, DType::I32, &keep_shape)?;
    let kl = DeviceTensor::poisoned(st, DType::I32, &keep_shape)?;
    let kc = DeviceTensor::poisoned(st, DType::I32, &[b, HKV])?;
    let out = DeviceTensor::poisoned(st, DType::BF16, &[b, HQ, D])?;
    let host_shape = |s: &[usize], dt| HostTensor::full(dt, s, 0.0);
    // (SLOTS, BLOCK_N, WARPS, attention splits per head, STAGES)
    let configs: Vec<(usize, usize, usize, usize, usize)> = vec![
        (16, 32, 4, 8, 2),
        (16, 32, 4, 8, 3),
        (16, 32, 4, 16, 2),
        (16, 32, 4, 4, 2),
        (16, 32, 8, 8, 2),
        (16, 64, 4, 16, 2),
    ];
    let label = |p: &(usize, usize, usize, usize, usize)| {
        format!("SLOTS={} BLOCK_N={} WARPS={} splits={} STAGES={}", p.0, p.1, p.2, p.3, p.4)
    };
    let mut kept_rows = None;
    cx.sweep(&mut row, &configs, label, |p| {
        let params = DecodeParams { block_n: p.1, warps: p.2, max_splits: p.3, stages: p.4, ..DecodeParams::new(G, D) };
        let op = CentroidDecode::new(cx.rt, params, keep, c, p.0)?;
        op.check_args(
            &x.hq,
            &x.hk,
            &x.hv,
            &host_shape(&[b, HKV, c, D], DType::F32),
            &host_shape(&[b, HKV, c], DType::I32),
            &cl.starts_h,
            fixed,
            N,
            &host_shape(&keep_shape, DType::I32),
            &host_shape(&keep_shape, DType::I32),
            &host_shape(&[b, HKV], DType::I32),
            &host_shape(&[b, HQ, D], DType::BF16),
            None,
        )?;
        let scratch = Scratch::new();
        for t in [&ks, &kl, &kc, &out] {
            t.poison()?;
        }
        let launch = |_: usize| {
            op.launch_with(
                cx.rt,
                &scratch,
                &x.q,
                &cl.k,
                &cl.v,
                &cl.centroids,
                &cl.counts,
                &cl.starts,
                fixed,
                N,
                f32::NEG_INFINITY,
                &ks,
                &kl,
                &kc,
                &out,
                None,
            )
            .map(|_| ())
        };
        launch(0)?;
        cx.rt.synchronize()?;
        let (kst, kln, kct) = (ks.download()?.to_f64(), kl.download()?.to_f64(), kc.download()?.to_f64());
        kept_rows = Some(kln.iter().filter(|v| **v > 0.0).sum::<f64>() / (b * HKV) as f64);
        let one_level = |bh: usize, qs: &[f64]| {
            let cnt: Vec<usize> = counts_h[bh * c..(bh + 1) * c].iter().map(|&v| v as usize).collect();
            let scores = score_clusters(qs, &cent_h[bh * c * D..(bh + 1) * c * D], &cnt, D, scale_log2() as f64);
            (select_clusters(&scores, keep, f64::NEG_INFINITY), scores)
        };
        let check = check_centroid(cx, x, &perm, &starts, (&kst, &kln, &kct), c, keep, fixed, &out, one_level);
        let stats = cx.time(launch)?;
        Ok(Trial { config: label(p), stats, check })
    });
    let kept = kept_rows.unwrap_or(0.0);
    row.bytes = kv_bytes(b * HKV, kept as usize + CENTROID_RECENT) + (b * HKV * c * D * 4) as u64;
    let m = median(&row);
    let e = &mut row.extra;
    e.insert("clusters".into(), json!(c));
    e.insert("keep_clusters".into(), json!(keep));
    e.insert("kept_rows_per_head".into(), json!(kept.round()));
    e.insert("kept_fraction".into(), json!((kept / fixed as f64 * 1e4).round() / 1e4));
    e.insert("recent".into(), json!(CENTROID_RECENT));
    e.insert("kmeans_setup_iters".into(), json!(setup_iters));
    e.insert("dense_us".into(), json!(dense_us.map(round2)));
    e.insert("speedup_vs_dense".into(), json!(m.zip(dense_us).map(|(m, d)| round2(d / m))));
    let _ = write!(
        row.note,
        "kept {kept:.0} fixed rows per (batch, KV head) = {:.1}% of {fixed}; dense {}; speed-up {} (target >= 4x). ",
        100.0 * kept / fixed as f64,
        dense_us.map_or("-".into(), |d| format!("{d:.1} µs")),
        m.zip(dense_us).map_or("-".into(), |(m, d)| format!("{:.2}x", d / m)),
    );
    Ok(row)
}

/// Selection valid (ranges are whole clusters, ascending, at most `keep`) and its
/// scores the top-`keep` of the f64 cluster scores up to near-ties (1e-3 in log2 units)
/// on the checked slices; output vs f64 attention over the kept clusters' original
/// positions + the recent rows.
#[allow(clippy::too_many_arguments)]
pub(super) fn check_centroid(
    cx: &Ctx,
    x: &Inputs,
    perm: &[f64],
    starts: &[f64],
    (ks, kl, kc): (&[f64], &[f64], &[f64]),
    c: usize,
    keep: usize,
    fixed: usize,
    out: &DeviceTensor,
    reference: impl Fn(usize, &[f64]) -> (Vec<usize>, Vec<f64>),
) -> std::result::Result<String, String> {
    let mut kept: Vec<Vec<usize>> = Vec::new();
    for bh in 0..x.batch * HKV {
        let n = kc[bh] as usize;
        if kc[bh] < 0.0 || n > keep {
            return Err(format!("(b,h) {bh}: keep_count {} not in 0..={keep}", kc[bh]));
        }
        let st = &starts[bh * (c + 1)..(bh + 1) * (c + 1)];
        let mut ids = Vec::new();
        for i in 0..n {
            let (s0, len) = (ks[bh * keep + i], kl[bh * keep + i]);
            let id = st.partition_point(|&v| v < s0);
            if id >= c || st[id] != s0 || st[id + 1] - st[id] != len || len <= 0.0 {
                return Err(format!("(b,h) {bh}: slot {i} range ({s0}, {len}) is no cluster"));
            }
            ids.push(id);
        }
        if !ids.windows(2).all(|w| w[0] < w[1]) {
            return Err(format!("(b,h) {bh}: kept clusters not ascending"));
        }
        kept.push(ids);
    }
    if cx.args.no_reference {
        return check_out(out, &Vec::new()).map(|s| format!("{s}, valid selection"));
    }
    let mut worst: f64 = 0.0;
    for (b, h) in check_pairs(x.batch) {
        let bh = b * HKV + h;
        let qs: Vec<f64> = (0..G).flat_map(|g| rows_f64(&x.hq, b * HQ + h * G + g, 1, D)).collect();
        let (want, scores) = reference(bh, &qs);
        let mut gs: Vec<f64> = kept[bh].iter().map(|&i| scores[i]).collect();
        let mut ws: Vec<f64> = want.iter().map(|&i| scores[i]).collect();
        if gs.len() != ws.len() {
            return Err(format!("(b,h) {bh}: kept {} clusters, reference {}", gs.len(), ws.len()));
        }
        gs.sort_by(|a, b| b.total_cmp(a));
        ws.sort_by(|a, b| b.total_cmp(a));
        for (g, w) in gs.iter().zip(&ws) {
            worst = worst.max((g - w).abs());
            if (g - w).abs() > 1e-3 {
                return Err(format!("(b,h) {bh}: kept cluster score {g} vs reference {w}"));
            }
        }
    }
    let refs = decode_refs(x, true, |b, h| {
        let bh = b * HKV + h;
        let mut pos: Vec<usize> = Vec::new();
        for &ci in &kept[bh] {
            let (s0, s1) = (starts[bh * (c + 1) + ci] as usize, starts[bh * (c + 1) + ci + 1] as usize);
            pos.extend(perm[bh * fixed + s0..bh * fixed + s1].iter().map(|&p| p as usize));
        }
        pos.sort_unstable();
        pos.extend(fixed..N);
        pos
    });
    check_out(out, &refs).map(|s| format!("{s}; top-{keep} clusters within {worst:.0e}"))
}

// ---------------------------------------------------------------------------------------
// SnapKV

fn snapkv(cx: &Ctx, x: &Inputs, workload: &'static str, capacity: usize, tiles: &[usize]) -> Result<Row> {
    let b = x.batch;
    let keep = capacity - SNAP_WINDOW;
    let mut row = Row::new(
        workload,
        format!(
            "SnapKV selection B{b} t={N}, {HKV} KV heads x G{G}: window {SNAP_WINDOW}, capacity {capacity}, max \
             pooling {SNAP_KERNEL}; row stats + votes + pool/top-k + merge + compressed cache"
        ),
        (b * HKV * (2 * N + 2 * capacity) * D * 2) as u64,
        Some(1000.0),
    );
    row.note = "bytes = two passes over K + the C kept rows of K and V. ".into();
    let st = cx.rt.stream();
    let hq_obs = random_bf16(&[b, HKV, G * SNAP_WINDOW, D], 31);
    let q_obs = DeviceTensor::upload(st, &hq_obs)?.read_only();
    let votes = DeviceTensor::poisoned(st, DType::F32, &[b, HKV, N])?;
    let ki = DeviceTensor::poisoned(st, DType::I32, &[b, HKV, keep])?;
    let kc = DeviceTensor::poisoned(st, DType::I32, &[b, HKV])?;
    let ko = DeviceTensor::poisoned(st, DType::BF16, &[b, HKV, capacity, D])?;
    let vo = DeviceTensor::poisoned(st, DType::BF16, &[b, HKV, capacity, D])?;
    let want = if cx.args.no_reference { Vec::new() } else { snapkv_reference(x, &hq_obs, capacity) };
    // POOL_TILE × key tiles of the passes over the keys (stats / votes BLOCK_N).
    let d = SnapTiles::default();
    let key_tiles = [d, SnapTiles { block_n: 64, votes_block_n: 64 }, SnapTiles { block_n: 32, votes_block_n: 128 }];
    let configs: Vec<(usize, SnapTiles)> = tiles.iter().flat_map(|&pt| key_tiles.map(|t| (pt, t))).collect();
    let label = |(pt, t): &(usize, SnapTiles)| {
        format!(
            "POOL_TILE={pt} stats/votes BLOCK_N={}/{} (max_cand={})",
            t.block_n,
            t.votes_block_n,
            snapkv_max_cand(N, SNAP_WINDOW, capacity, *pt)
        )
    };
    cx.sweep(&mut row, &configs, label, |&(pt, t)| {
        let max_cand = snapkv_max_cand(N, SNAP_WINDOW, capacity, pt);
        let op = SnapKvCompress::new(cx.rt, G, SNAP_WINDOW, D, capacity, SNAP_KERNEL, Pool::Max, pt, max_cand)?
            .with_tiles(Some(cx.rt), t)?;
        let scratch = Scratch::new();
        for t in [&votes, &ki, &kc, &ko, &vo] {
            t.poison()?;
        }
        let launch =
            |_: usize| op.launch_with(cx.rt, &scratch, &q_obs, &x.k, &x.v, N, &votes, &ki, &kc, &ko, &vo).map(|_| ());
        launch(0)?;
        cx.rt.synchronize()?;
        let check = check_snapkv(x, capacity, &want, &votes, &ki, &kc, &ko, &vo)?;
        let stats = cx.time(launch)?;
        Ok(Trial { config: label(&(pt, t)), stats, check })
    });
    Ok(row)
}

/// `(b, h, pooled votes, kept positions)` of the f64 reference on the checked slices.
type SnapRef = Vec<(usize, usize, Vec<f64>, Vec<usize>)>;

fn snapkv_reference(x: &HostKv, hq_obs: &HostTensor, capacity: usize) -> SnapRef {
    let rows = G * SNAP_WINDOW;
    std::thread::scope(|s| {
        let hs: Vec<_> = check_pairs(x.batch)
            .into_iter()
            .map(|(b, h)| {
                s.spawn(move || {
                    let (kf, _) = x.slab(b, h);
                    let q = rows_f64(hq_obs, (b * HKV + h) * rows, rows, D);
                    let dims = DecodeDims { batch: 1, kv_heads: 1, group: G, cap: x.cap, head_dim: D };
                    let sc = scale_log2() as f64;
                    let r = snapkv::reference(dims, SNAP_WINDOW, &q, &kf, N, capacity, SNAP_KERNEL, Pool::Max, sc);
                    let (pooled, kept) = r.into_iter().next().expect("one slice");
                    (b, h, pooled, kept)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().expect("reference thread")).collect()
    })
}

/// As `SnapKvCase::check` on the checked slices: pooled votes within 1e-4, the kept set
/// the top scores up to near-ties, the compressed rows exact; everywhere: counts and
/// ascending in-range ids.
#[allow(clippy::too_many_arguments)]
fn check_snapkv(
    x: &Inputs,
    capacity: usize,
    want: &SnapRef,
    votes: &DeviceTensor,
    ki: &DeviceTensor,
    kc: &DeviceTensor,
    ko: &DeviceTensor,
    vo: &DeviceTensor,
) -> Result<std::result::Result<String, String>> {
    let keep = capacity - SNAP_WINDOW;
    let prefix = N - SNAP_WINDOW;
    let (it, ct) = (ki.download()?.to_f64(), kc.download()?.to_f64());
    for bh in 0..x.batch * HKV {
        let sel = &it[bh * keep..(bh + 1) * keep];
        if ct[bh] as usize != keep || !sel.windows(2).all(|p| p[0] < p[1]) || sel[keep - 1] >= prefix as f64 {
            return Ok(Err(format!("(b,h) {bh}: count {} or ids not ascending in the prefix", ct[bh])));
        }
    }
    if want.is_empty() {
        return Ok(Ok("valid selection".into()));
    }
    let (vt, kof, vof) = (votes.download()?.to_f64(), ko.download()?, vo.download()?);
    let mut worst: f64 = 0.0;
    for (b, h, pooled, kept) in want {
        let bh = b * HKV + h;
        let got: Vec<f32> = vt[bh * N..bh * N + prefix].iter().map(|&v| v as f32).collect();
        let gp = snapkv::pool(&got, SNAP_KERNEL, Pool::Max);
        let mag = pooled.iter().fold(1e-30f64, |m, v| m.max(v.abs()));
        for (j, (a, r)) in gp.iter().zip(pooled).enumerate() {
            let e = (*a as f64 - r).abs() / mag;
            if e.is_nan() || e > 1e-4 {
                return Ok(Err(format!("(b,h) {bh} pooled vote {j}: {a} vs {r}")));
            }
            worst = worst.max(e);
        }
        let sel: Vec<usize> = it[bh * keep..(bh + 1) * keep].iter().map(|&v| v as usize).collect();
        let mut top: Vec<f64> = kept.iter().map(|&j| pooled[j]).collect();
        let mut got_s: Vec<f64> = sel.iter().map(|&j| pooled[j]).collect();
        top.sort_by(|a, b| b.total_cmp(a));
        got_s.sort_by(|a, b| b.total_cmp(a));
        if let Some((g, w)) = got_s.iter().zip(&top).find(|(g, w)| (*g - *w).abs() > 1e-4 * mag) {
            return Ok(Err(format!("(b,h) {bh}: kept score {g} vs top {w}")));
        }
        let rows: Vec<usize> = sel.iter().copied().chain(N - SNAP_WINDOW..N).collect();
        for (r, &pos) in rows.iter().enumerate() {
            let src = bh * x.cap + pos;
            let dst = bh * capacity + r;
            if rows_f64(&kof, dst, 1, D) != rows_f64(&x.hk, src, 1, D)
                || rows_f64(&vof, dst, 1, D) != rows_f64(&x.hv, src, 1, D)
            {
                return Ok(Err(format!("(b,h) {bh}: compressed row {r} is not position {pos}")));
            }
        }
    }
    Ok(Ok(format!("= f64 reference on {} slices (votes within {worst:.0e}), rows exact", want.len())))
}

// ---------------------------------------------------------------------------------------
// k-means

fn kmeans(cx: &Ctx, x: &Inputs, iters: usize) -> Result<Row> {
    ensure!(iters > 0, "--kmeans-iters must be > 0");
    let b = x.batch;
    let (c, _) = centroid_sizes(N, CENTROID_KEEP_FRACTION);
    let mut row = Row::new(
        "kmeans_128K",
        format!(
            "k-means B{b} x {HKV} KV heads, {N} keys -> {c} clusters (5%), {iters} Lloyd iterations on normalized keys \
             (assign + accumulate + finalize) + raw-key means + host counting sort + permuted K/V cache"
        ),
        0,
        None,
    );
    row.flops = Some((iters * b * HKV * N * c * D * 2) as f64);
    row.note = "per layer; includes the label download + host counting sort + upload (no scan in the DSL). ".into();
    let st = cx.rt.stream();
    let init = init_centroids(x, N, c, 23);
    let init_d = DeviceTensor::upload(st, &init)?.read_only();
    let kp = DeviceTensor::poisoned(st, DType::BF16, &[b, HKV, N, D])?;
    let vp = DeviceTensor::poisoned(st, DType::BF16, &[b, HKV, N, D])?;
    let label = |t: &(usize, usize)| format!("KEY_TILE={} C_TILE={} (iters={iters})", t.0, t.1);
    let timed = cx.args.iters.clamp(1, 3);
    cx.sweep(&mut row, &[(64usize, 64usize), (128, 64), (64, 128)], label, |t| {
        let km = KMeansCluster::new(cx.rt, D, true, t.0, t.1)?;
        km.check_args(&x.k, &x.v, N, N, &init_d, &kp, &vp)?;
        kp.poison()?;
        vp.poison()?;
        let w0 = Instant::now();
        let dc = km.launch(cx.rt, &x.k, &x.v, N, N, &init_d, iters, &kp, &vp)?;
        let first_s = w0.elapsed().as_secs_f64();
        let check = check_kmeans(x, &dc, &kp, c)?;
        let stats =
            cx.time_n(0, timed, |_| km.launch(cx.rt, &x.k, &x.v, N, N, &init_d, iters, &kp, &vp).map(|_| ()))?;
        Ok(Trial { config: format!("{} (first call {first_s:.2} s wall)", label(t)), stats, check })
    });
    Ok(row)
}

/// k-means outputs on the checked slices: labels of 1024 sampled keys are the nearest
/// of the last assignment's centroids (up to 1e-4), counts / starts / perm the stable
/// counting sort of the labels, 32 sampled centroids the raw-key means (1e-4 of the
/// largest |key|), 1024 sampled permuted rows exact.
fn check_kmeans(
    x: &Inputs,
    dc: &tessera_kernels::centroid::DeviceClusters,
    kp: &DeviceTensor,
    c: usize,
) -> Result<std::result::Result<String, String>> {
    let (lab, acen, cen, cnt) = (
        dc.labels.to_f64(),
        dc.assign_centroids.download()?.to_f64(),
        dc.centroids.download()?.to_f64(),
        dc.counts.download()?.to_f64(),
    );
    let (st, perm) = (dc.starts.download()?.to_f64(), dc.perm.to_f64());
    let kph = kp.download()?;
    let mut worst: f64 = 0.0;
    let outcome = std::thread::scope(|s| {
        let hs: Vec<_> = check_pairs(x.batch)
            .into_iter()
            .map(|(b, h)| {
                let (lab, acen, cen, cnt, st, perm, kph) = (&lab, &acen, &cen, &cnt, &st, &perm, &kph);
                s.spawn(move || -> std::result::Result<f64, String> {
                    let bh = b * HKV + h;
                    let labels: Vec<usize> = lab[bh * N..(bh + 1) * N].iter().map(|&v| v as usize).collect();
                    if labels.iter().any(|&l| l >= c) {
                        return Err(format!("(b,h) {bh}: label out of range"));
                    }
                    let (wp, ws) = tessera_kernels::centroid::cluster_layout(&labels, c);
                    let got_st: Vec<usize> = st[bh * (c + 1)..(bh + 1) * (c + 1)].iter().map(|&v| v as usize).collect();
                    let got_p: Vec<usize> = perm[bh * N..(bh + 1) * N].iter().map(|&v| v as usize).collect();
                    if got_st != ws || got_p != wp {
                        return Err(format!("(b,h) {bh}: starts/perm are not the counting sort of the labels"));
                    }
                    if (0..c).any(|ci| cnt[bh * c + ci] as usize != ws[ci + 1] - ws[ci]) {
                        return Err(format!("(b,h) {bh}: counts are not the label histogram"));
                    }
                    let ac = &acen[bh * c * D..(bh + 1) * c * D];
                    let cs: Vec<f64> = ac.chunks_exact(D).map(|r| 0.5 * r.iter().map(|v| v * v).sum::<f64>()).collect();
                    let step = N / 1024;
                    for j in (0..N).step_by(step) {
                        let row = rows_f64(&x.hk, bh * x.cap + j, 1, D);
                        let n = row.iter().map(|v| v * v).sum::<f64>().sqrt();
                        let xr: Vec<f64> = row.iter().map(|v| if n > 0.0 { v / n } else { *v }).collect();
                        let sc = |ci: usize| {
                            xr.iter().zip(&ac[ci * D..(ci + 1) * D]).map(|(a, b)| a * b).sum::<f64>() - cs[ci]
                        };
                        let best = (0..c).map(sc).fold(f64::NEG_INFINITY, f64::max);
                        let l = labels[j];
                        if sc(l) < best - 1e-4 * (1.0 + best.abs()) {
                            return Err(format!("(b,h) {bh} key {j}: label {l} scores {} < best {best}", sc(l)));
                        }
                        // Permuted row `j` is original row `perm[j]`.
                        if rows_f64(kph, bh * x.cap + j, 1, D) != rows_f64(&x.hk, bh * x.cap + wp[j], 1, D) {
                            return Err(format!("(b,h) {bh}: permuted row {j} is not row {}", wp[j]));
                        }
                    }
                    let kmax = 1.0; // keys are uniform in [-1, 1]
                    let mut worst: f64 = 0.0;
                    for ci in (0..c).step_by((c / 32).max(1)) {
                        let n = ws[ci + 1] - ws[ci];
                        if n == 0 {
                            continue;
                        }
                        let mut mean = vec![0.0; D];
                        for &j in &wp[ws[ci]..ws[ci + 1]] {
                            for (m, v) in mean.iter_mut().zip(rows_f64(&x.hk, bh * x.cap + j, 1, D)) {
                                *m += v / n as f64;
                            }
                        }
                        for (e, m) in mean.iter().enumerate() {
                            let err = (cen[(bh * c + ci) * D + e] - m).abs() / kmax;
                            if err.is_nan() || err > 1e-4 {
                                return Err(format!("(b,h) {bh}: centroid {ci}[{e}] is not the mean of its keys"));
                            }
                            worst = worst.max(err);
                        }
                    }
                    Ok(worst)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().expect("check thread")).collect::<std::result::Result<Vec<f64>, String>>()
    });
    Ok(outcome.map(|w| {
        worst = w.into_iter().fold(worst, f64::max);
        format!("labels/layout/means consistent on {} slices (centroid err {worst:.0e})", check_pairs(x.batch).len())
    }))
}

// ---------------------------------------------------------------------------------------

/// Every workload name, in run order.
pub const WORKLOADS: [&str; 9] = [
    "dense_B1",
    "hip_B1",
    "snapkv_128K",
    "snapkv_128K_C2048",
    "kmeans_128K",
    "dense_B8",
    "hip_B8",
    "centroid_B8",
    "centroid2_B8",
];

pub fn run(a: Args) -> Result<()> {
    ensure!(
        !a.hip_bk.is_empty() && a.hip_bk.iter().all(|&bk| bk > 0 && HIP_K.is_multiple_of(bk)),
        "--hip-bk must divide 512"
    );
    let rt = Runtime::new(0).context("bench-selection needs a CUDA GPU")?;
    println!(
        "device {} ({}), {} SMs, L2 {} MB",
        rt.info().name,
        rt.arch(),
        rt.info().sm_count,
        rt.info().l2_bytes >> 20
    );
    let cx = Ctx::cold(&rt, &a.common)?;
    let mut rows = Rows { rows: Vec::new(), json: a.common.json.clone() };
    let push_all = |rows: &mut Rows, v: Vec<Row>| v.into_iter().for_each(|r| rows.push(r));
    // B1: HiP B1 + dense B1, SnapKV, k-means (one cache).
    let b1 = ["hip_B1", "dense_B1", "snapkv_128K", "snapkv_128K_C2048", "kmeans_128K"];
    if b1.iter().any(|w| cx.wanted(w)) {
        let x = Inputs::new(&rt, 1, HQ, N, 41)?;
        let mut dense_us = None;
        if cx.wanted("hip_B1") || cx.wanted("dense_B1") {
            let row = guarded("dense_B1", "dense", dense(&cx, &x, "dense_B1", HIP_TRITON_B1[3]));
            dense_us = median(&row);
            rows.push(row);
        }
        if cx.wanted("hip_B1") {
            for (i, &bk) in a.hip_bk.iter().enumerate() {
                push_all(&mut rows, hip(&cx, &x, bk, i == 0, dense_us));
            }
        }
        if cx.wanted("snapkv_128K") {
            let r = snapkv(&cx, &x, "snapkv_128K", SNAP_CAPACITY, &[16384, 8192]);
            rows.push(guarded("snapkv_128K", "snapkv", r));
        }
        if cx.wanted("snapkv_128K_C2048") {
            let r = snapkv(&cx, &x, "snapkv_128K_C2048", SNAP_CAPACITY_SMALL, &[8192, 4096]);
            rows.push(guarded("snapkv_128K_C2048", "snapkv", r));
        }
        if cx.wanted("kmeans_128K") {
            rows.push(guarded("kmeans_128K", "kmeans", kmeans(&cx, &x, a.kmeans_iters)));
        }
    }
    let b8 = ["hip_B8", "dense_B8", "centroid_B8", "centroid2_B8"];
    if b8.iter().any(|w| cx.wanted(w)) {
        let x = Inputs::new(&rt, 8, HQ, N, 43)?;
        let row = guarded("dense_B8", "dense", dense(&cx, &x, "dense_B8", HIP_TRITON_B8[3]));
        let dense_us = median(&row);
        rows.push(row);
        if cx.wanted("hip_B8") {
            for (i, &bk) in a.hip_bk.iter().enumerate() {
                push_all(&mut rows, hip(&cx, &x, bk, i == 0, dense_us));
            }
        }
        if cx.wanted("centroid_B8") || cx.wanted("centroid2_B8") {
            match cluster(&cx, &x, a.centroid_setup_iters.max(1)) {
                Ok(cl) => {
                    if cx.wanted("centroid_B8") {
                        rows.push(guarded("centroid_B8", "centroid decode", centroid(&cx, &x, &cl, dense_us)));
                    }
                    if cx.wanted("centroid2_B8") {
                        let r = super::bench_centroid2::centroid2(&cx, &x, &cl, dense_us);
                        rows.push(guarded("centroid2_B8", "two-level centroid decode", r));
                    }
                }
                Err(e) => rows.push(guarded("centroid_B8", "centroid clustering", Err(e))),
            }
        }
    }
    let rows = rows.rows;
    if rows.is_empty() {
        bail!("no workload matches --only {:?} (workloads: {WORKLOADS:?})", a.common.only);
    }
    print_table(
        &rows,
        &format!(
            "(L2 flushed before every timed iteration. bytes: KV rows attended / keys scored, once; dense targets = PyTorch \
             SDPA on the H200 from issue 5; hip_B* rows are derived from their _select/_attn rows. Ceiling \
             {CEILING_TB_S} TB/s.)"
        ),
    );
    println!("(total {:.1} s including NVRTC compiles)", cx.start.elapsed().as_secs_f64());
    if let Some(p) = &a.common.json {
        println!("wrote {}", p.display());
    }
    if rows.iter().any(|r| r.best.as_ref().is_none_or(|t| t.check.is_err())) {
        return Err(anyhow!("some workloads have no checked figure (see the table)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! What runs without a GPU: the flags, the step arithmetic, the derived sizes, and
    //! every kernel configuration the benchmark launches first built, emitted and (where
    //! NVRTC loads) compiled to PTX for sm_90a.
    use super::*;
    use clap::Parser;
    use tessera_codegen::emit::{emit_cuda, EmittedKernel};
    use tessera_dsl_support::KernelConfig;
    use tessera_kernels::centroid::{
        CentroidPackRows, CentroidPermute, CentroidScores, CentroidSelect, CentroidTileLse, KmeansAccumulate,
        KmeansAssign, KmeansFinalize,
    };
    use tessera_kernels::hip::{HipFinalize, HipInitNodes, HipScoreChildren, HipSelectChildren};
    use tessera_kernels::snapkv::{
        SnapkvCompress, SnapkvMerge, SnapkvPoolTopk, SnapkvRowMerge, SnapkvRowStats, SnapkvVotes,
    };
    use tessera_kernels::SinkWindowDecode;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    #[test]
    fn flags_parse() {
        let a = Cli::try_parse_from(["t"]).unwrap().args;
        assert_eq!((a.common.iters, a.common.warmup, a.common.quick), (50, 10, false));
        assert_eq!((a.hip_bk.clone(), a.kmeans_iters, a.centroid_setup_iters), (vec![2], 10, 1));
        assert!(a.common.only.is_none() && a.common.json.is_none());
        let a = Cli::try_parse_from([
            "t",
            "--only",
            "hip,snapkv",
            "--iters",
            "7",
            "--quick",
            "--json",
            "x.json",
            "--hip-bk",
            "2,16",
            "--kmeans-iters",
            "3",
        ])
        .unwrap()
        .args;
        assert_eq!(a.common.only, Some(vec!["hip".to_string(), "snapkv".to_string()]));
        assert_eq!((a.common.iters, a.common.quick, a.hip_bk, a.kmeans_iters), (7, true, vec![2, 16], 3));
        assert_eq!(a.common.json.unwrap().to_str(), Some("x.json"));
        assert!(Cli::try_parse_from(["t", "--hip-bk", "x"]).is_err());
    }

    #[test]
    fn hip_step_arithmetic_reproduces_the_papers_figures() {
        assert_eq!(hip_step_times(80.0, 10.0, 8), (20.0, 90.0, 10.0));
        assert_eq!(hip_step_times(80.0, 10.0, 0), (90.0, 90.0, 10.0));
        // HiP's Triton figures (issue 5): amortized = cached + (full - cached) / 8 within 0.5 µs.
        for t in [HIP_TRITON_B1, HIP_TRITON_B8] {
            let (am, full, cached) = hip_step_times(t[1] - t[2], t[2], HIP_REFRESH);
            assert_eq!((full, cached), (t[1], t[2]));
            assert!((am - t[0]).abs() < 0.5, "{am} vs {}", t[0]);
        }
    }

    #[test]
    fn derived_sizes() {
        assert_eq!(centroid_sizes(N - CENTROID_RECENT, CENTROID_KEEP_FRACTION), (6502, 650));
        assert_eq!(centroid_sizes(N, CENTROID_KEEP_FRACTION).0, 6554);
        assert_eq!(centroid_sizes(3, 0.1), (1, 1));
        assert_eq!(snapkv_max_cand(N, SNAP_WINDOW, SNAP_CAPACITY, 4096), 32 * 4064);
        assert_eq!(refine_steps((N - HIP_WINDOW).div_ceil(2), HIP_K / 2), 8);
        assert_eq!(refine_steps((N - HIP_WINDOW).div_ceil(16), HIP_K / 16), 8);
        let r = derived_row("w", "d".into(), 0, Some(1.0), 2.5, "c".into());
        assert_eq!(r.json()["median_us"], json!(2.5));
        assert_eq!(r.json()["ok"], json!(true));
        assert!(WORKLOADS.iter().all(|w| !w.is_empty()));
    }

    /// Emits, and compiles where NVRTC loads; returns the shared bytes. A compile error
    /// (not a missing NVRTC) fails the test.
    fn ptx(name: &str, e: EmittedKernel) -> usize {
        match tessera_runtime::compile_ptx(&e.source, &e.entry, "sm_90a") {
            Ok(p) => {
                eprintln!("{name}: PTX ok ({} B), {} threads, {} B shared", p.ptx.len(), e.threads, e.shared_bytes)
            }
            Err(err) if !format!("{err}").contains("error:") => eprintln!("{name}: not compiled here ({err})"),
            Err(err) => panic!("{name}: {err}"),
        }
        e.shared_bytes as usize
    }

    /// The first configuration of every workload: the host ops build (interpreter) and
    /// every kernel they launch emits CUDA (and compiles where NVRTC loads).
    #[test]
    fn benchmark_configs_build_and_emit() {
        let c = |p: &[(&str, i64)]| KernelConfig::from_pairs(p);
        let (g, d) = (G as i64, D as i64);
        let mut smem = Vec::new();
        // HiP, bk = 2 (and 16), CHILD_TILE 64, then block-sparse attention at BLOCK_N 32.
        for bk in [2usize, 16] {
            let kn = HIP_K / bk;
            HipSelect::cpu(G, D, bk, kn, 64).unwrap();
            let a = c(&[("TOPK", kn as i64), ("WARPS", 4)]);
            let s = c(&[("GROUP", g), ("HEAD_DIM", d), ("BK", bk as i64), ("CHILD_TILE", 64), ("WARPS", 4)]);
            smem.push(("hip_init_nodes", ptx("hip_init_nodes", emit_cuda(&HipInitNodes::build(&a).unwrap()))));
            smem.push(("hip_score", ptx("hip_score_children", emit_cuda(&HipScoreChildren::build(&s).unwrap()))));
            smem.push(("hip_select", ptx("hip_select_children", emit_cuda(&HipSelectChildren::build(&a).unwrap()))));
            smem.push(("hip_finalize", ptx("hip_finalize", emit_cuda(&HipFinalize::build(&a).unwrap()))));
            let p = DecodeParams { block_n: 32, warps: 4, max_splits: 8, ..DecodeParams::new(G, D) };
            BlockSparseDecode::cpu(p.clone(), bk).unwrap();
            SinkWindowDecode::cpu(p).unwrap();
        }
        // SnapKV at 128K, capacity 4096, POOL_TILE 4096.
        let max_cand = snapkv_max_cand(N, SNAP_WINDOW, SNAP_CAPACITY, 4096);
        let op = SnapKvCompress::cpu(G, SNAP_WINDOW, D, SNAP_CAPACITY, SNAP_KERNEL, Pool::Max, 4096, max_cand).unwrap();
        let [a, r, b, p, m, k] = op.configs();
        smem.push(("snapkv_row_stats", ptx("snapkv_row_stats", emit_cuda(&SnapkvRowStats::build(&a).unwrap()))));
        smem.push(("snapkv_row_merge", ptx("snapkv_row_merge", emit_cuda(&SnapkvRowMerge::build(&r).unwrap()))));
        smem.push(("snapkv_votes", ptx("snapkv_votes", emit_cuda(&SnapkvVotes::build(&b).unwrap()))));
        smem.push(("snapkv_pool_topk", ptx("snapkv_pool_topk", emit_cuda(&SnapkvPoolTopk::build(&p).unwrap()))));
        smem.push(("snapkv_merge", ptx("snapkv_merge", emit_cuda(&SnapkvMerge::build(&m).unwrap()))));
        smem.push(("snapkv_compress", ptx("snapkv_compress", emit_cuda(&SnapkvCompress::build(&k).unwrap()))));
        // At C = 4096 the merge does not fit in shared memory (the row reports the error);
        // at C = 2048, POOL_TILE 8192 it does.
        const SMEM: usize = 227 * 1024;
        assert!(smem.iter().any(|(n, b)| *n == "snapkv_merge" && *b > SMEM));
        let max_cand = snapkv_max_cand(N, SNAP_WINDOW, SNAP_CAPACITY_SMALL, 8192);
        let op = SnapKvCompress::cpu(G, SNAP_WINDOW, D, SNAP_CAPACITY_SMALL, SNAP_KERNEL, Pool::Max, 8192, max_cand)
            .unwrap();
        let [_, _, _, p, m, _] = op.configs();
        let pool = ptx("snapkv_pool_topk", emit_cuda(&SnapkvPoolTopk::build(&p).unwrap()));
        let merge = ptx("snapkv_merge", emit_cuda(&SnapkvMerge::build(&m).unwrap()));
        assert!(pool <= SMEM && merge <= SMEM, "C2048: pool_topk {pool} B, merge {merge} B shared");
        // Centroid decode: 6502 clusters (CAND 8192), KEEP 650, SLOTS 16, BLOCK_N 32.
        let (cl, keep) = centroid_sizes(N - CENTROID_RECENT, CENTROID_KEEP_FRACTION);
        let p = DecodeParams { block_n: 32, warps: 4, max_splits: 4, ..DecodeParams::new(G, D) };
        CentroidDecode::cpu(p, keep, cl, 16).unwrap();
        let s = c(&[("GROUP", g), ("HEAD_DIM", d), ("C_TILE", 64), ("WARPS", 4)]);
        smem.push(("centroid_tile_lse", ptx("centroid_tile_lse", emit_cuda(&CentroidTileLse::build(&s).unwrap()))));
        let max_tiles = cl.next_power_of_two().div_ceil(64).next_power_of_two() as i64;
        let s =
            c(&[("GROUP", g), ("C_TILE", CentroidDecode::SCORE_TILE as i64), ("MAX_TILES", max_tiles), ("WARPS", 4)]);
        smem.push(("centroid_scores", ptx("centroid_scores", emit_cuda(&CentroidScores::build(&s).unwrap()))));
        let sel = c(&[
            ("KEEP", keep as i64),
            ("CAND", cl.next_power_of_two() as i64),
            ("WARPS", CentroidDecode::SELECT_WARPS),
        ]);
        smem.push(("centroid_select", ptx("centroid_select", emit_cuda(&CentroidSelect::build(&sel).unwrap()))));
        let r = CentroidDecode::pack_config(keep, 16);
        smem.push(("centroid_pack_rows", ptx("centroid_pack_rows", emit_cuda(&CentroidPackRows::build(&r).unwrap()))));
        // k-means: KEY_TILE 64, C_TILE 64, normalized keys, + the raw-key accumulate.
        KMeansCluster::cpu(D, true, 64, 64).unwrap();
        for n in [1, 0] {
            let a = [("HEAD_DIM", d), ("NORMALIZE", n), ("KEY_TILE", 64), ("C_TILE", 64), ("WARPS", 4)];
            smem.push(("kmeans_assign", ptx("kmeans_assign", emit_cuda(&KmeansAssign::build(&c(&a)).unwrap()))));
            let b = [("HEAD_DIM", d), ("NORMALIZE", n), ("KEY_TILE", 64), ("WARPS", 4)];
            smem.push(("kmeans_acc", ptx("kmeans_accumulate", emit_cuda(&KmeansAccumulate::build(&c(&b)).unwrap()))));
        }
        let f = c(&[("HEAD_DIM", d), ("C_TILE", 32), ("WARPS", 4)]);
        smem.push(("kmeans_finalize", ptx("kmeans_finalize", emit_cuda(&KmeansFinalize::build(&f).unwrap()))));
        let p = c(&[("HEAD_DIM", d), ("ROWS", 64), ("WARPS", 4)]);
        smem.push(("centroid_permute", ptx("centroid_permute", emit_cuda(&CentroidPermute::build(&p).unwrap()))));
        for (name, bytes) in &smem {
            eprintln!("{name}: {bytes} B shared");
        }
    }
}
