//! The `centroid2_B8` workload of `tessera bench-selection`: the two-level centroid lookup
//! ([`CentroidTwoLevelDecode`]) over the clustering of `centroid_B8`, with its coarse level
//! ([`TwoLevelLayout`]: ~16 fine clusters per coarse cluster, built on the host) and the
//! re-permuted cache as untimed setup. Same keep budget as `centroid_B8` (10 % of the
//! fine clusters), a quarter of the coarse clusters explored.

use std::fmt::Write as _;
use std::time::Instant;

use anyhow::Result;
use serde_json::json;
use tessera_codegen::host::HostTensor;
use tessera_codegen::ir::DType;
use tessera_dsl_support::KernelConfig;
use tessera_kernels::centroid::CentroidPermute;
use tessera_kernels::centroid_two_level::{
    select_two_level, CentroidTwoLevelDecode, KeptRanges, TwoLevelInputs, TwoLevelLayout,
};
use tessera_kernels::Scratch;
use tessera_runtime::DeviceTensor;

use super::{
    centroid_label, centroid_params, centroid_sizes, check_centroid, median, CentroidKnobs, Clustered,
    CENTROID_KEEP_FRACTION, CENTROID_RECENT,
};
use crate::commands::bench_common::{kv_bytes, round2, scale_log2, Ctx, Inputs, Row, Trial, D, HKV, HQ, N};

/// Fine clusters per coarse cluster (the recall study's `centroid2 T/64/16`).
const FINE_PER_COARSE: usize = 16;
/// Share of the coarse clusters explored.
const EXPLORE: usize = 4;
/// Lloyd iterations of the coarse level.
const COARSE_ITERS: usize = 2;

/// The untimed setup shared by the two-level rows: the coarse level (host k-means) and the
/// cache re-permuted by it.
pub(super) struct TwoLevelSetup {
    layout: TwoLevelLayout,
    coarse: usize,
    keep_coarse: usize,
    kp: DeviceTensor,
    vp: DeviceTensor,
}

impl TwoLevelSetup {
    pub(super) fn build(cx: &Ctx, x: &Inputs, cl: &Clustered) -> Result<Self> {
        let b = x.batch;
        let fixed = N - CENTROID_RECENT;
        let (c, _) = centroid_sizes(fixed, CENTROID_KEEP_FRACTION);
        let coarse = (c / FINE_PER_COARSE).max(1);
        let st = cx.rt.stream();
        let t0 = Instant::now();
        let layout = TwoLevelLayout::build(
            &cl.centroids.download()?,
            &cl.counts.download()?,
            &cl.perm,
            &cl.starts_h,
            coarse,
            COARSE_ITERS,
            29,
        )?;
        let perm_d = DeviceTensor::upload(st, &layout.perm)?;
        let kp = DeviceTensor::poisoned(st, DType::BF16, &[b, HKV, N, D])?;
        let vp = DeviceTensor::poisoned(st, DType::BF16, &[b, HKV, N, D])?;
        let permute = KernelConfig::from_pairs(&[("HEAD_DIM", D as i64), ("ROWS", 64), ("WARPS", 4)]);
        let grid = [N.div_ceil(64) as u32, HKV as u32, b as u32];
        CentroidPermute::new(cx.rt, &permute)?.launch(
            st,
            grid,
            &x.k,
            &x.v,
            &perm_d,
            &kp,
            &vp,
            fixed as i32,
            N as i32,
        )?;
        cx.rt.synchronize()?;
        eprintln!(
            "centroid2_B8: coarse level + re-permuted cache {:.1} s (max {} fine per coarse)",
            t0.elapsed().as_secs_f64(),
            layout.max_fine
        );
        Ok(TwoLevelSetup { layout, coarse, keep_coarse: coarse.div_ceil(EXPLORE), kp, vp })
    }
}

/// The two-level row: `centroid2_B8` on f32 centroids, `centroid2_B8_bf16c` on bf16 copies
/// of the fine and coarse centroids (the selection checked against the rounded values).
pub(super) fn centroid2(
    cx: &Ctx,
    x: &Inputs,
    setup: &TwoLevelSetup,
    dense_us: Option<f64>,
    centroid_dtype: DType,
) -> Result<Row> {
    let b = x.batch;
    let fixed = N - CENTROID_RECENT;
    let (c, keep) = centroid_sizes(fixed, CENTROID_KEEP_FRACTION);
    let TwoLevelSetup { layout, coarse, keep_coarse, kp, vp } = setup;
    let (coarse, keep_coarse) = (*coarse, *keep_coarse);
    let bf16 = centroid_dtype == DType::BF16;
    let mut row = Row::new(
        if bf16 { "centroid2_B8_bf16c" } else { "centroid2_B8" },
        format!(
            "two-level centroid decode B{b} N={N}: {c} fine clusters in {coarse} coarse ({COARSE_ITERS} it., host), \
             {keep_coarse} coarse explored, top {keep} fine kept, last {CENTROID_RECENT} recent, centroids read as \
             {centroid_dtype:?}; coarse scores + select + fine scores + select + packed-row attention + combine"
        ),
        0,
        dense_us.map(|d| d / 4.0),
    );
    let st = cx.rt.stream();
    let typed = |t: &HostTensor| HostTensor::from_f64(centroid_dtype, &t.shape, &t.to_f64());
    let (fine_cen, coarse_cen) = (typed(&layout.fine_centroids), typed(&layout.coarse_centroids));
    let up = |t| DeviceTensor::upload(st, t);
    let (fc, fcnt, fst) = (up(&fine_cen)?, up(&layout.fine_counts)?, up(&layout.fine_starts)?);
    let (cc, ccnt, cst) = (up(&coarse_cen)?, up(&layout.coarse_counts)?, up(&layout.coarse_starts)?);
    let inputs = TwoLevelInputs {
        fine_centroids: &fc,
        fine_counts: &fcnt,
        fine_starts: &fst,
        coarse_centroids: &cc,
        coarse_counts: &ccnt,
        coarse_starts: &cst,
    };
    let (perm_h, starts_h) = (layout.perm.to_f64(), layout.fine_starts.to_f64());
    let host =
        [&fine_cen, &layout.fine_counts, &coarse_cen, &layout.coarse_counts, &layout.coarse_starts].map(|t| t.to_f64());
    let [f_cen, f_cnt, c_cen, c_cnt, c_st] = host;
    let keep_shape = [b, HKV, keep];
    let ks = DeviceTensor::poisoned(st, DType::I32, &keep_shape)?;
    let kl = DeviceTensor::poisoned(st, DType::I32, &keep_shape)?;
    let kc = DeviceTensor::poisoned(st, DType::I32, &[b, HKV])?;
    let out = DeviceTensor::poisoned(st, DType::BF16, &[b, HQ, D])?;
    let kept_ranges = KeptRanges { keep_start: &ks, keep_len: &kl, keep_count: &kc };
    // (pack programs, BLOCK_N, WARPS, attention splits per head, STAGES): the one-level lookup's
    // best first.
    let configs: Vec<CentroidKnobs> = vec![(16, 32, 4, 8, 2), (16, 32, 4, 8, 3), (16, 32, 4, 16, 2)];
    let label = centroid_label;
    let us = |v: &[f64]| v.iter().map(|&x| x as usize).collect::<Vec<usize>>();
    let mut kept_rows = None;
    cx.sweep(&mut row, &configs, label, |p| {
        let params = centroid_params(cx.args, p);
        let mut op = CentroidTwoLevelDecode::new(cx.rt, params, keep_coarse, coarse, keep, layout.max_fine, p.0)?;
        if bf16 {
            op = op.with_centroid_dtype(Some(cx.rt), centroid_dtype)?;
        }
        let scratch = Scratch::new();
        for t in [&ks, &kl, &kc, &out] {
            t.poison()?;
        }
        let launch = |_: usize| {
            op.launch_with(
                cx.rt,
                &scratch,
                &x.q,
                kp,
                vp,
                &inputs,
                fixed,
                N,
                f32::NEG_INFINITY,
                &kept_ranges,
                &out,
                None,
            )
            .map(|_| ())
        };
        launch(0)?;
        cx.rt.synchronize()?;
        let (kst, kln, kct) = (ks.download()?.to_f64(), kl.download()?.to_f64(), kc.download()?.to_f64());
        kept_rows = Some(kln.iter().filter(|v| **v > 0.0).sum::<f64>() / (b * HKV) as f64);
        let reference = |bh: usize, qs: &[f64]| {
            select_two_level(
                qs,
                &f_cen[bh * c * D..(bh + 1) * c * D],
                &us(&f_cnt[bh * c..(bh + 1) * c]),
                &c_cen[bh * coarse * D..(bh + 1) * coarse * D],
                &us(&c_cnt[bh * coarse..(bh + 1) * coarse]),
                &us(&c_st[bh * (coarse + 1)..(bh + 1) * (coarse + 1)]),
                D,
                keep_coarse,
                keep,
                f64::NEG_INFINITY,
                scale_log2() as f64,
            )
        };
        let check = check_centroid(cx, x, &perm_h, &starts_h, (&kst, &kln, &kct), c, keep, fixed, &out, reference);
        let stats = cx.time(launch)?;
        Ok(Trial { config: label(p), stats, check })
    });
    let kept = kept_rows.unwrap_or(0.0);
    let scored = coarse + keep_coarse * layout.max_fine;
    row.bytes = kv_bytes(b * HKV, kept as usize + CENTROID_RECENT)
        + (b * HKV * scored * D * centroid_dtype.size_bytes()) as u64;
    let m = median(&row);
    let e = &mut row.extra;
    e.insert("fine_clusters".into(), json!(c));
    e.insert("coarse_clusters".into(), json!(coarse));
    e.insert("explored_coarse".into(), json!(keep_coarse));
    e.insert("max_fine_per_coarse".into(), json!(layout.max_fine));
    e.insert("kept_rows_per_head".into(), json!(kept.round()));
    e.insert("dense_us".into(), json!(dense_us.map(round2)));
    e.insert("speedup_vs_dense".into(), json!(m.zip(dense_us).map(|(m, d)| round2(d / m))));
    let _ = write!(
        row.note,
        "at most {scored} of {c} fine centroids scored ({coarse} coarse + {keep_coarse} x {} fine); kept {kept:.0} \
         fixed rows per (batch, KV head); dense {}; speed-up {}. ",
        layout.max_fine,
        dense_us.map_or("-".into(), |d| format!("{d:.1} µs")),
        m.zip(dense_us).map_or("-".into(), |(m, d)| format!("{:.2}x", d / m)),
    );
    Ok(row)
}
