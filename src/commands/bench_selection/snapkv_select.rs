//! SnapKV selection at a 128K prompt.

use super::*;

pub(super) fn snapkv(cx: &Ctx, x: &Inputs, workload: &'static str, capacity: usize, tiles: &[usize]) -> Result<Row> {
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

pub(super) fn snapkv_reference(x: &HostKv, hq_obs: &HostTensor, capacity: usize) -> SnapRef {
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
pub(super) fn check_snapkv(
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
