//! Centroid lookup decode B8: the clustered cache and the one-level lookup.

use super::*;

/// Initial centroids `[B, Hkv, C, D]` f32: `C` distinct L2-normalized keys of the fixed
/// context per (batch, KV head), chosen as [`tessera_kernels::centroid::init_centroids`]
/// does (seed `seed ^ bh`), read from the bf16 host copy.
pub(super) fn init_centroids(x: &HostKv, fixed: usize, c: usize, seed: u64) -> HostTensor {
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
pub(super) fn cluster(cx: &Ctx, x: &Inputs, setup_iters: usize) -> Result<Clustered> {
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

/// A centroid decode config of the bench: (packing programs, BLOCK_N, WARPS, attention
/// splits per head, STAGES).
pub(super) type CentroidKnobs = (usize, usize, usize, usize, usize);

pub(super) fn centroid_label(p: &CentroidKnobs) -> String {
    format!("PACK={} BLOCK_N={} WARPS={} splits={} STAGES={}", p.0, p.1, p.2, p.3, p.4)
}

/// The attention's decode params of a config (with `--min-blocks`).
pub(super) fn centroid_params(args: &BenchArgs, p: &CentroidKnobs) -> DecodeParams {
    sparse_decode_params(args, &(p.1, p.2, p.3, p.4))
}

/// The centroid decode row: `centroid_B8` on the k-means' f32 centroids, or
/// `centroid_B8_bf16c` on a bf16 copy of them (`centroid_dtype`; the selection checked
/// against the rounded centroids).
pub(super) fn centroid(
    cx: &Ctx,
    x: &Inputs,
    cl: &Clustered,
    dense_us: Option<f64>,
    centroid_dtype: DType,
) -> Result<Row> {
    let b = x.batch;
    let fixed = N - CENTROID_RECENT;
    let (c, keep) = centroid_sizes(fixed, CENTROID_KEEP_FRACTION);
    let setup_iters = cl.setup_iters;
    let bf16 = centroid_dtype == DType::BF16;
    let mut row = Row::new(
        if bf16 { "centroid_B8_bf16c" } else { "centroid_B8" },
        format!(
            "centroid decode B{b} N={N}: {fixed} fixed keys in {c} clusters (5%, k-means {setup_iters} it., centroids \
             read as {centroid_dtype:?}), top {keep} clusters kept (~10% of keys), last {CENTROID_RECENT} tokens recent; \
             scores + select + packed-row attention + LSE combine"
        ),
        0,
        dense_us.map(|d| d / 4.0),
    );
    let st = cx.rt.stream();
    let perm = cl.perm.to_f64();
    let counts_h = cl.counts.download()?.to_f64();
    let cent_f32 = cl.centroids.download()?;
    let cent_typed = HostTensor::from_f64(centroid_dtype, &cent_f32.shape, &cent_f32.to_f64());
    let cent_h = cent_typed.to_f64();
    let uploaded = if bf16 { Some(DeviceTensor::upload(st, &cent_typed)?) } else { None };
    let centroids = uploaded.as_ref().unwrap_or(&cl.centroids);
    let starts = cl.starts_h.to_f64();
    let keep_shape = [b, HKV, keep];
    let ks = DeviceTensor::poisoned(st, DType::I32, &keep_shape)?;
    let kl = DeviceTensor::poisoned(st, DType::I32, &keep_shape)?;
    let kc = DeviceTensor::poisoned(st, DType::I32, &[b, HKV])?;
    let out = DeviceTensor::poisoned(st, DType::BF16, &[b, HQ, D])?;
    let host_shape = |s: &[usize], dt| HostTensor::full(dt, s, 0.0);
    // (pack programs, BLOCK_N, WARPS, attention splits per head, STAGES)
    let configs: Vec<CentroidKnobs> = vec![
        (16, 32, 4, 8, 2),
        (64, 32, 4, 8, 2),
        (16, 32, 4, 8, 3),
        (16, 32, 4, 16, 2),
        (16, 32, 4, 4, 2),
        (16, 32, 8, 8, 2),
        (16, 64, 4, 16, 2),
    ];
    let label = centroid_label;
    let mut kept_rows = None;
    cx.sweep(&mut row, &configs, label, |p| {
        let params = centroid_params(cx.args, p);
        let mut op = CentroidDecode::new(cx.rt, params, keep, c, p.0)?;
        if bf16 {
            op = op.with_centroid_dtype(Some(cx.rt), centroid_dtype)?;
        }
        op.check_args(
            &x.hq,
            &x.hk,
            &x.hv,
            &host_shape(&[b, HKV, c, D], centroid_dtype),
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
                centroids,
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
    row.bytes =
        kv_bytes(b * HKV, kept as usize + CENTROID_RECENT) + (b * HKV * c * D * centroid_dtype.size_bytes()) as u64;
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

/// Selection valid (ranges are whole clusters, none twice, at most `keep`) and its
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
        let (st, slots) = (&starts[bh * (c + 1)..(bh + 1) * (c + 1)], bh * keep..(bh + 1) * keep);
        let ids = kept_clusters(st, &ks[slots.clone()], &kl[slots], kc[bh]).map_err(|e| format!("(b,h) {bh}: {e}"))?;
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
