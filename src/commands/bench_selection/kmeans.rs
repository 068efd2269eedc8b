//! k-means of 128K keys x 8 KV heads into 5 % clusters.

use super::*;

pub(super) fn kmeans(cx: &Ctx, x: &Inputs, iters: usize) -> Result<Row> {
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
pub(super) fn check_kmeans(
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
