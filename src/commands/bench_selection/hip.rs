//! HiP tree-pruned attention at B1/B8: selection, attention, amortized step.

use super::*;

/// A check's summary, or why the output is wrong.
type Check = std::result::Result<String, String>;

/// Checks a device HiP selection against the f64 tree search on the checked slices:
/// counts, ascending distinct in-range ids everywhere; on the checked slices at most 1%
/// of the blocks may differ (a near-tie flip between f32 and f64 scores swaps one
/// subtree, i.e. one block). Returns the summary and the host copies `(idx, count)`.
#[allow(clippy::too_many_arguments)]
pub(super) fn check_hip(
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
pub(super) fn hip(cx: &Ctx, x: &Inputs, bk: usize, first: bool, dense_us: Option<f64>) -> Vec<Row> {
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
            let op = BlockSparseDecode::new(cx.rt, sparse_decode_params(cx.args, c), bk)?;
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
