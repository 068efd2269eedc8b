//! `tessera bench-kernels`: the `tessera-kernels` decode ops on the GPU at the shapes of
//! `../shared/PEERS.md` (32 query heads, 8 KV heads, d=128, bf16, N=131072), each over a
//! small sweep of its build knobs (BLOCK_N, WARPS, split count), reporting the best.
//!
//! For every workload: inputs are generated on the host with a parallel xorshift and
//! uploaded once; every configuration first runs once with poisoned outputs and scratch,
//! its output must be finite and match an f64 reference on a few (batch, KV head)
//! slices; then it is timed with CUDA events (median of `--iters` after warm-up) through
//! the ops' `launch_with` (scratch kept between launches, so nothing but the kernels is
//! timed). Bandwidth is the bytes that must be read (the KV rows attended, once) / time,
//! against the 4.58 TB/s read ceiling. A configuration that fails to build, run or check
//! is reported and the sweep goes on, so one run gives every figure.

use std::fmt::Write as _;

use anyhow::{anyhow, bail, Context, Result};
use rand::rngs::StdRng;
use rand::SeedableRng;
use tessera::inputs::{bf16s, random_bf16, random_f32};
use tessera_codegen::host::{HostData, HostTensor};
use tessera_codegen::ir::DType;
use tessera_kernels::cases::{random_selection, random_trees};
use tessera_kernels::reference::{block_sparse_positions, sink_window_positions};
use tessera_kernels::sink_window::union_len;
use tessera_kernels::{
    BlockSparseDecode, KernelError, Scratch, SinkWindowDecode, TopkBlockSelect, TreeParams, TreeVerify,
};
use tessera_runtime::{DeviceTensor, Runtime};

use super::bench_common::{
    attend_rows, check_out, check_pairs, decode_configs, decode_label, decode_params, decode_refs, dense, guarded,
    kv_bytes, print_table, scale_log2, sparse_decode_params, Ctx, DecodeKnobs, HostKv, Inputs, RefRows, Row, Rows,
    Trial, CEILING_TB_S, D, G, HKV, HQ, N,
};

/// The flags of `tessera bench-kernels` (shared with `tessera bench-selection`).
pub type Args = super::bench_common::BenchArgs;

// ---------------------------------------------------------------------------------------
// Workloads

const SINK: usize = 64;
const WINDOW: usize = 4096;

fn sink_window(cx: &Ctx, x: &Inputs) -> Result<Row> {
    let b = x.batch;
    let keys = union_len(N, SINK, WINDOW);
    let mut row = Row::new(
        "sink_window_B8",
        format!("sink {SINK} + window {WINDOW}, B{b} N={N} (SinkWindowDecode)"),
        kv_bytes(b * HKV, keys),
        Some(35.0),
    );
    let pos = sink_window_positions(N, SINK, WINDOW);
    let refs = decode_refs(x, !cx.args.no_reference, |_, _| pos.clone());
    let out = DeviceTensor::poisoned(cx.rt.stream(), DType::BF16, &[b, HQ, D])?;
    cx.sweep(&mut row, &decode_configs(cx.args, &[4, 2, 8, 16]), decode_label, |c| {
        let op = SinkWindowDecode::new(cx.rt, decode_params(c))?;
        let (grid, split_len) = op.check_args(&x.q, &x.k, &x.v, N, SINK, WINDOW, &out, None)?;
        let scratch = Scratch::new();
        out.poison()?;
        op.launch_with(cx.rt, &scratch, &x.q, &x.k, &x.v, N, SINK, WINDOW, &out, None)?;
        cx.rt.synchronize()?;
        let check = check_out(&out, &refs);
        let stats = cx.time(|_| op.launch_with(cx.rt, &scratch, &x.q, &x.k, &x.v, N, SINK, WINDOW, &out, None))?;
        Ok(Trial { config: format!("{} (splits={}, split_len={split_len})", decode_label(c), grid[0]), stats, check })
    });
    Ok(row)
}

const BS: usize = 128;
const NBLK: usize = 64;

/// The block-sparse op and its config from the sweep, for the top-k pipeline.
struct BlockSparseBest {
    config: DecodeKnobs,
}

fn block_sparse(cx: &Ctx, x: &Inputs) -> Result<(Row, Option<BlockSparseBest>)> {
    let b = x.batch;
    let mut row = Row::new(
        "block_sparse_B8",
        format!("block-sparse {NBLK} blocks x {BS} tokens per (batch, KV head), random distinct, B{b} N={N}"),
        kv_bytes(b * HKV, NBLK * BS),
        Some(65.0),
    );
    let mut rng = StdRng::seed_from_u64(11);
    let (idx, cnt) = random_selection(&mut rng, b, HKV, N / BS, NBLK, false, true);
    let refs = if cx.args.no_reference {
        Vec::new()
    } else {
        let iv = idx.to_f64();
        decode_refs(x, true, |bb, h| {
            let bh = bb * HKV + h;
            let blocks: Vec<i64> = iv[bh * NBLK..(bh + 1) * NBLK].iter().map(|&v| v as i64).collect();
            block_sparse_positions(N, 0, 0, &blocks, BS)
        })
    };
    let out = DeviceTensor::poisoned(cx.rt.stream(), DType::BF16, &[b, HQ, D])?;
    let (di, dc) = (DeviceTensor::upload(cx.rt.stream(), &idx)?, DeviceTensor::upload(cx.rt.stream(), &cnt)?);
    let best = cx.sweep(&mut row, &decode_configs(cx.args, &[8, 4, 16, 32]), decode_label, |c| {
        let op = BlockSparseDecode::new(cx.rt, sparse_decode_params(cx.args, c), BS)?;
        block_sparse_trial(cx, x, &op, [&idx, &cnt], [&di, &dc], &out, &refs, decode_label(c))
    });
    Ok((row, best.map(|config| BlockSparseBest { config })))
}

/// Block-sparse decode with one list of `NBLK` blocks per **query head** (PEERS.md's
/// FlexAttention row: 418 µs): each program serves one query head and reads its KV
/// head's rows (`BlockSparseDecode::per_query_head`). Bytes: every query head's selected
/// rows (the lists of a group are drawn independently, so they overlap little).
fn block_sparse_per_query_head(cx: &Ctx, x: &Inputs) -> Result<Row> {
    let b = x.batch;
    let mut row = Row::new(
        "block_sparse_qh_B8",
        format!("block-sparse {NBLK} blocks x {BS} tokens per (batch, query head), random distinct, B{b} N={N}"),
        kv_bytes(b * HQ, NBLK * BS),
        Some(260.0),
    );
    let mut rng = StdRng::seed_from_u64(12);
    let (idx, cnt) = random_selection(&mut rng, b, HQ, N / BS, NBLK, false, true);
    let mut refs = Vec::new();
    if !cx.args.no_reference {
        let iv = idx.to_f64();
        for (bb, h) in check_pairs(b) {
            let slab = x.slab(bb, h);
            let jobs = (0..G)
                .map(|g| {
                    let qr = bb * HQ + h * G + g;
                    let blocks: Vec<i64> = iv[qr * NBLK..(qr + 1) * NBLK].iter().map(|&v| v as i64).collect();
                    (qr, qr, block_sparse_positions(N, 0, 0, &blocks, BS))
                })
                .collect();
            refs.extend(attend_rows(&x.hq, &slab, jobs, scale_log2() as f64));
        }
    }
    let out = DeviceTensor::poisoned(cx.rt.stream(), DType::BF16, &[b, HQ, D])?;
    let (di, dc) = (DeviceTensor::upload(cx.rt.stream(), &idx)?, DeviceTensor::upload(cx.rt.stream(), &cnt)?);
    cx.sweep(&mut row, &decode_configs(cx.args, &[4, 2, 8]), decode_label, |c| {
        let op = BlockSparseDecode::per_query_head(Some(cx.rt), sparse_decode_params(cx.args, c), BS)?;
        block_sparse_trial(cx, x, &op, [&idx, &cnt], [&di, &dc], &out, &refs, decode_label(c))
    });
    Ok(row)
}

/// One block-sparse configuration: index ranges checked on the host copies (`host`), one
/// run on poisoned outputs checked against `refs`, then the timed launches.
#[allow(clippy::too_many_arguments)]
fn block_sparse_trial(
    cx: &Ctx,
    x: &Inputs,
    op: &BlockSparseDecode,
    [idx, cnt]: [&HostTensor; 2],
    [di, dc]: [&DeviceTensor; 2],
    out: &DeviceTensor,
    refs: &RefRows,
    label: String,
) -> Result<Trial> {
    op.check_args(&x.hq, &x.hk, &x.hv, idx, cnt, N, 0, 0, out, None)?;
    let (grid, split_len) = op.check_args(&x.q, &x.k, &x.v, di, dc, N, 0, 0, out, None)?;
    let scratch = Scratch::new();
    out.poison()?;
    op.launch_with(cx.rt, &scratch, &x.q, &x.k, &x.v, di, dc, N, 0, 0, out, None)?;
    cx.rt.synchronize()?;
    let check = check_out(out, refs);
    let stats = cx.time(|_| op.launch_with(cx.rt, &scratch, &x.q, &x.k, &x.v, di, dc, N, 0, 0, out, None))?;
    Ok(Trial { config: format!("{label} (splits={}, split_len={split_len})", grid[0]), stats, check })
}

/// Landmark sets (`dtype`: f32 or bf16) rotated through while timing (together > 2x the
/// L2), so each launch reads its landmarks from HBM as a decode step would.
fn landmark_sets(rt: &Runtime, b: usize, nb: usize, dtype: DType) -> Result<(Vec<DeviceTensor>, HostTensor)> {
    let one = (b * HKV * nb * D * dtype.size_bytes()) as f64;
    let l2 = rt.info().l2_bytes.max(1) as f64;
    let sets = ((2.0 * l2 / one).ceil() as usize).clamp(1, 8);
    let mut dev = Vec::new();
    let mut first = None;
    for s in 0..sets {
        let f = random_f32(&[b, HKV, nb, D], 100 + s as u64);
        let h = if dtype == DType::F32 { f } else { HostTensor::from_f64(dtype, &f.shape, &f.to_f64()) };
        dev.push(DeviceTensor::upload(rt.stream(), &h)?.read_only());
        if s == 0 {
            first = Some(h);
        }
    }
    Ok((dev, first.expect("one set")))
}

/// Checks a top-k selection: `count = k`, indices distinct and in range, and on the
/// checked slices the selected scores are the k largest (max over the group) within 1e-3.
#[allow(clippy::too_many_arguments)]
fn check_topk(
    idx: &[f64],
    cnt: &[f64],
    q: &HostTensor,
    lm: &HostTensor,
    b: usize,
    nb: usize,
    k: usize,
    reference: bool,
) -> std::result::Result<String, String> {
    for bh in 0..b * HKV {
        if cnt[bh] as usize != k {
            return Err(format!("(b,h) {bh}: count {} != {k}", cnt[bh]));
        }
        let sel = &idx[bh * k..(bh + 1) * k];
        let mut seen = std::collections::HashSet::new();
        for &x in sel {
            if x < 0.0 || x as usize >= nb || !seen.insert(x as i64) {
                return Err(format!("(b,h) {bh}: index {x} out of range or repeated"));
            }
        }
    }
    if !reference {
        return Ok("valid selection".into());
    }
    let (qs, ls) = (bf16s(q), lm.to_f64());
    let mut worst: f64 = 0.0;
    for (bb, h) in check_pairs(b) {
        let bh = bb * HKV + h;
        let scores: Vec<f64> = (0..nb)
            .map(|j| {
                let l = &ls[(bh * nb + j) * D..(bh * nb + j + 1) * D];
                (0..G)
                    .map(|g| {
                        let qr = &qs[(bb * HQ + h * G + g) * D..(bb * HQ + h * G + g + 1) * D];
                        qr.iter().zip(l).map(|(a, c)| a.to_f64() * c).sum::<f64>()
                    })
                    .fold(f64::NEG_INFINITY, f64::max)
            })
            .collect();
        let mut sorted = scores.clone();
        sorted.sort_by(|a, c| c.total_cmp(a));
        let kth = sorted[k - 1];
        let mag = sorted[0].abs().max(1.0);
        for &x in &idx[bh * k..(bh + 1) * k] {
            let short = (kth - scores[x as usize]) / mag;
            worst = worst.max(short);
            if short > 1e-3 {
                return Err(format!("(b,h) {bh}: block {x} scores {} below the k-th best {kth}", scores[x as usize]));
            }
        }
    }
    Ok(format!("valid selection, top-{k} exact within {worst:.0e}"))
}

struct TopkBest {
    lm_tile: usize,
}

/// Top-k selection over `N / bs` landmarks stored as `lm` (f32 or bf16).
fn topk(cx: &Ctx, x: &Inputs, workload: &'static str, bs: usize, lm: DType) -> Result<(Row, Option<TopkBest>)> {
    let (b, k) = (x.batch, NBLK);
    let nb = N / bs;
    let name = if lm == DType::F32 { "f32" } else { "bf16" };
    let mut row = Row::new(
        workload,
        format!("top-{k} block selection over {nb} blocks of {bs} (landmarks precomputed, {name}), B{b} N={N}"),
        (b * HKV * nb * D * lm.size_bytes()) as u64,
        Some(30.0),
    );
    let (sets, lm0) = landmark_sets(cx.rt, b, nb, lm)?;
    let _ = write!(row.note, "bytes = landmarks read ({name}); {} landmark sets rotated (cold L2). ", sets.len());
    let bi = DeviceTensor::poisoned(cx.rt.stream(), DType::I32, &[b, HKV, k])?;
    let bc = DeviceTensor::poisoned(cx.rt.stream(), DType::I32, &[b, HKV])?;
    let label = |t: &usize| format!("LM_TILE={t} WARPS=4 max over group");
    let best = cx.sweep(&mut row, &[64usize, 32, 128, 256], label, |&lm_tile| {
        let max_cand = TopkBlockSelect::candidates(nb, lm_tile, k).max(k).next_power_of_two();
        let op = TopkBlockSelect::typed(Some(cx.rt), G, D, k, lm_tile, false, max_cand, 4, lm)?;
        let scratch = Scratch::new();
        bi.poison()?;
        bc.poison()?;
        op.launch_with(cx.rt, &scratch, &x.q, &sets[0], nb, &bi, &bc)?;
        cx.rt.synchronize()?;
        let (idx, cnt) = (bi.download()?.to_f64(), bc.download()?.to_f64());
        let check = check_topk(&idx, &cnt, &x.hq, &lm0, b, nb, k, !cx.args.no_reference);
        let stats = cx.time(|i| op.launch_with(cx.rt, &scratch, &x.q, &sets[i % sets.len()], nb, &bi, &bc))?;
        Ok(Trial { config: format!("{} (CAND={max_cand})", label(&lm_tile)), stats, check })
    });
    Ok((row, best.map(|lm_tile| TopkBest { lm_tile })))
}

/// Top-k selection (block 128) feeding block-sparse decode, back to back, best configs.
fn topk_pipeline(cx: &Ctx, x: &Inputs, tk: &TopkBest, bsp: &BlockSparseBest) -> Result<Row> {
    let (b, k, nb) = (x.batch, NBLK, N / BS);
    let mut row = Row::new(
        "topk_then_block_sparse_B8",
        format!("top-{k} selection (block {BS}) then block-sparse decode on its output, B{b} N={N}"),
        kv_bytes(b * HKV, NBLK * BS) + (b * HKV * nb * D * 4) as u64,
        None,
    );
    row.note = "bytes = selected KV + landmarks. ".into();
    let (sets, _) = landmark_sets(cx.rt, b, nb, DType::F32)?;
    let bi = DeviceTensor::poisoned(cx.rt.stream(), DType::I32, &[b, HKV, k])?;
    let bc = DeviceTensor::poisoned(cx.rt.stream(), DType::I32, &[b, HKV])?;
    let out = DeviceTensor::poisoned(cx.rt.stream(), DType::BF16, &[b, HQ, D])?;
    let max_cand = TopkBlockSelect::candidates(nb, tk.lm_tile, k).max(k).next_power_of_two();
    let sel = TopkBlockSelect::new(cx.rt, G, D, k, tk.lm_tile, false, max_cand, 4)?;
    let dec = BlockSparseDecode::new(cx.rt, sparse_decode_params(cx.args, &bsp.config), BS)?;
    let config = format!("LM_TILE={} + {}", tk.lm_tile, decode_label(&bsp.config));
    cx.sweep(
        &mut row,
        &[()],
        |_| config.clone(),
        |_| {
            let (s1, s2) = (Scratch::new(), Scratch::new());
            let step = |i: usize| -> Result<(), KernelError> {
                sel.launch_with(cx.rt, &s1, &x.q, &sets[i % sets.len()], nb, &bi, &bc)?;
                dec.launch_with(cx.rt, &s2, &x.q, &x.k, &x.v, &bi, &bc, N, 0, 0, &out, None)
            };
            out.poison()?;
            step(0)?;
            cx.rt.synchronize()?;
            let check = check_out(&out, &Vec::new());
            let stats = cx.time(step)?;
            Ok(Trial { config: config.clone(), stats, check })
        },
    );
    Ok(row)
}

/// Tree reference rows: nodes 0 and T-1 of every query head of the checked KV heads
/// (`q`/`out` row `b·Hq·T + h·T + i`).
fn tree_refs(x: &HostKv, hq: &HostTensor, anc_bits: &[u64], t: usize, prefix: usize) -> RefRows {
    let mut refs = Vec::new();
    for (bb, h) in check_pairs(x.batch) {
        let slab = x.slab(bb, h);
        let mut jobs = Vec::new();
        for g in 0..G {
            for i in [0, t - 1] {
                let mut pos: Vec<usize> = (0..prefix).collect();
                pos.extend((0..t).filter(|j| anc_bits[bb * t + i] >> j & 1 == 1).map(|j| prefix + j));
                let r = bb * HQ * t + (h * G + g) * t + i;
                jobs.push((r, r, pos));
            }
        }
        refs.extend(attend_rows(hq, &slab, jobs, scale_log2() as f64));
    }
    refs
}

fn tree(cx: &Ctx, x: &Inputs, t: usize, workload: &'static str, target: f64) -> Result<Row> {
    let b = x.batch;
    let prefix = N;
    let mut row = Row::new(
        workload,
        format!("tree verify T={t} over prefix N={N}, B{b}, random tree (TreeVerify)"),
        kv_bytes(b * HKV, prefix),
        Some(target),
    );
    row.flops = Some((4 * b * HQ * t * prefix * D) as f64);
    let mut rng = StdRng::seed_from_u64(5 + t as u64);
    let anc_bits = random_trees(&mut rng, b, t);
    let anc = HostTensor { shape: vec![b, t], data: HostData::I64(anc_bits.iter().map(|&a| a as i64).collect()) };
    let hq = random_bf16(&[b, HQ * t, D], 77 + t as u64);
    let q = DeviceTensor::upload(cx.rt.stream(), &hq)?.read_only();
    let danc = DeviceTensor::upload(cx.rt.stream(), &anc)?.read_only();
    let refs = if cx.args.no_reference { Vec::new() } else { tree_refs(x, &hq, &anc_bits, t, prefix) };
    let out = DeviceTensor::poisoned(cx.rt.stream(), DType::BF16, &[b, HQ * t, D])?;
    // (BLOCK_N, max_splits, ROWS, WARPS): fewer rows per program first (row blocks of a
    // split re-read its KV tiles, mostly from the L2, but each tile costs less).
    let mut configs = Vec::new();
    for rows in [16, 32, 64] {
        for warps in [4, 8] {
            for bn in [64, 32] {
                for s in [32, 64, 128] {
                    configs.push((bn, s, rows, warps));
                }
            }
        }
    }
    let label =
        |c: &(usize, usize, usize, usize)| format!("BLOCK_N={} WARPS={} max_splits={} ROWS={}", c.0, c.3, c.1, c.2);
    cx.sweep(&mut row, &configs, label, |c| {
        let p = TreeParams { block_n: c.0, max_splits: c.1, rows: c.2, warps: c.3, ..TreeParams::new(G, D, t) };
        let op = TreeVerify::new(cx.rt, p)?;
        op.check_args(&hq, &x.hk, &x.hv, &anc, prefix, &hq, None)?;
        let (grid, split_len) = op.check_args(&q, &x.k, &x.v, &danc, prefix, &out, None)?;
        let scratch = Scratch::new();
        out.poison()?;
        op.launch_with(cx.rt, &scratch, &q, &x.k, &x.v, &danc, prefix, &out, None)?;
        cx.rt.synchronize()?;
        let check = check_out(&out, &refs);
        let stats = cx.time(|_| op.launch_with(cx.rt, &scratch, &q, &x.k, &x.v, &danc, prefix, &out, None))?;
        Ok(Trial { config: format!("{} (splits={}, split_len={split_len})", label(c), grid[0]), stats, check })
    });
    Ok(row)
}

pub fn run(a: Args) -> Result<()> {
    let rt = Runtime::new(0).context("bench-kernels needs a CUDA GPU")?;
    println!(
        "device {} ({}), {} SMs, L2 {} MB",
        rt.info().name,
        rt.arch(),
        rt.info().sm_count,
        rt.info().l2_bytes >> 20
    );
    let cx = Ctx::new(&rt, &a);
    let mut rows = Rows { rows: Vec::new(), json: a.json.clone() };
    let b8_workloads = [
        "sink_window_B8",
        "block_sparse_B8",
        "block_sparse_qh_B8",
        "topk_select_B8_bs128",
        "topk_select_B8_bs64",
        "topk_select_B8_bs128_bf16lm",
        "topk_select_B8_bs64_bf16lm",
        "dense_B8",
    ];
    if b8_workloads.iter().any(|w| cx.wanted(w)) || cx.wanted("topk_then_block_sparse_B8") {
        let x = Inputs::new(&rt, 8, HQ, N, 1)?;
        if cx.wanted("sink_window_B8") {
            rows.push(guarded("sink_window_B8", "sink+window", sink_window(&cx, &x)));
        }
        let mut bs_best = None;
        if cx.wanted("block_sparse_B8") || cx.wanted("topk_then_block_sparse_B8") {
            match block_sparse(&cx, &x) {
                Ok((row, best)) => {
                    rows.push(row);
                    bs_best = best;
                }
                Err(e) => rows.push(guarded("block_sparse_B8", "block-sparse", Err(e))),
            }
        }
        if cx.wanted("block_sparse_qh_B8") {
            rows.push(guarded(
                "block_sparse_qh_B8",
                "block-sparse per query head",
                block_sparse_per_query_head(&cx, &x),
            ));
        }
        let mut tk_best = None;
        if cx.wanted("topk_select_B8_bs128") || cx.wanted("topk_then_block_sparse_B8") {
            match topk(&cx, &x, "topk_select_B8_bs128", BS, DType::F32) {
                Ok((row, best)) => {
                    rows.push(row);
                    tk_best = best;
                }
                Err(e) => rows.push(guarded("topk_select_B8_bs128", "top-k", Err(e))),
            }
        }
        for (w, bs, lm) in [
            ("topk_select_B8_bs64", 64, DType::F32),
            ("topk_select_B8_bs128_bf16lm", BS, DType::BF16),
            ("topk_select_B8_bs64_bf16lm", 64, DType::BF16),
        ] {
            if cx.wanted(w) {
                rows.push(guarded(w, "top-k", topk(&cx, &x, w, bs, lm).map(|r| r.0)));
            }
        }
        if cx.wanted("topk_then_block_sparse_B8") {
            match (&tk_best, &bs_best) {
                (Some(t), Some(s)) => {
                    rows.push(guarded("topk_then_block_sparse_B8", "pipeline", topk_pipeline(&cx, &x, t, s)))
                }
                _ => eprintln!("topk_then_block_sparse_B8: skipped (top-k or block-sparse did not run)"),
            }
        }
        if cx.wanted("dense_B8") {
            rows.push(guarded("dense_B8", "dense", dense(&cx, &x, "dense_B8", 940.0)));
        }
    }
    let b1_workloads = ["tree_T16_B1", "tree_T64_B1", "dense_B1"];
    if b1_workloads.iter().any(|w| cx.wanted(w)) {
        // One cache for the three: N prefix rows + 64 tree rows (dense reads the first N).
        let x = Inputs::new(&rt, 1, HQ, N + 64, 2)?;
        if cx.wanted("tree_T16_B1") {
            rows.push(guarded("tree_T16_B1", "tree T=16", tree(&cx, &x, 16, "tree_T16_B1", 140.0)));
        }
        if cx.wanted("tree_T64_B1") {
            rows.push(guarded("tree_T64_B1", "tree T=64", tree(&cx, &x, 64, "tree_T64_B1", 290.0)));
        }
        if cx.wanted("dense_B1") {
            rows.push(guarded("dense_B1", "dense", dense(&cx, &x, "dense_B1", 130.0)));
        }
    }
    let rows = rows.rows;
    if rows.is_empty() {
        bail!("no workload matches --only {:?}", a.only);
    }
    print_table(
        &rows,
        &format!(
            "(bytes read: the KV rows attended, K and V, once; landmarks for top-k. Ceiling {CEILING_TB_S} TB/s.)"
        ),
    );
    println!("(total {:.1} s including NVRTC compiles)", cx.start.elapsed().as_secs_f64());
    if let Some(p) = &a.json {
        println!("wrote {}", p.display());
    }
    if rows.iter().any(|r| r.best.as_ref().is_none_or(|t| t.check.is_err())) {
        return Err(anyhow!("some workloads have no checked figure (see the table)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! The references and checks above against the kernels on the CPU interpreter, at
    //! small sequence lengths (the benchmark's heads and head dim).
    use super::super::bench_common::check_host_out;
    use super::*;
    use tessera_kernels::{DecodeParams, DenseDecode};

    fn host(batch: usize, q_rows: usize, cap: usize) -> HostKv {
        HostKv {
            batch,
            cap,
            hq: random_bf16(&[batch, q_rows, D], 3),
            hk: random_bf16(&[batch, HKV, cap, D], 4),
            hv: random_bf16(&[batch, HKV, cap, D], 5),
        }
    }

    fn out(batch: usize, rows: usize) -> HostTensor {
        HostTensor::full(DType::BF16, &[batch, rows, D], f64::NAN)
    }

    #[test]
    fn decode_references_match_the_interpreter() {
        let (n, sink, window) = (200, 8, 50);
        let x = host(2, HQ, n);
        let p = DecodeParams { block_n: 32, max_splits: 4, ..DecodeParams::new(G, D) };
        let mut o = out(2, HQ);
        DenseDecode::cpu(p.clone()).unwrap().run_cpu(&x.hq, &x.hk, &x.hv, n, &mut o, None).unwrap();
        let refs = decode_refs(&x, true, |_, _| (0..n).collect());
        assert_eq!(refs.len(), 2 * G);
        check_host_out(&o, &refs).unwrap();
        // A wrong reference is caught.
        let bad = decode_refs(&x, true, |_, _| (0..n / 2).collect());
        assert!(check_host_out(&o, &bad).is_err());

        let mut o = out(2, HQ);
        let op = SinkWindowDecode::cpu(p.clone()).unwrap();
        op.run_cpu(&x.hq, &x.hk, &x.hv, n, sink, window, &mut o, None).unwrap();
        let pos = sink_window_positions(n, sink, window);
        check_host_out(&o, &decode_refs(&x, true, |_, _| pos.clone())).unwrap();

        let bs = 16;
        let mut rng = StdRng::seed_from_u64(11);
        let (idx, cnt) = random_selection(&mut rng, 2, HKV, n / bs, 4, false, true);
        let mut o = out(2, HQ);
        let op = BlockSparseDecode::cpu(p, bs).unwrap();
        op.run_cpu(&x.hq, &x.hk, &x.hv, &idx, &cnt, n, 0, 0, &mut o, None).unwrap();
        let iv = idx.to_f64();
        let refs = decode_refs(&x, true, |b, h| {
            let bh = b * HKV + h;
            let blocks: Vec<i64> = iv[bh * 4..(bh + 1) * 4].iter().map(|&v| v as i64).collect();
            block_sparse_positions(n, 0, 0, &blocks, bs)
        });
        check_host_out(&o, &refs).unwrap();
    }

    #[test]
    fn tree_reference_matches_the_interpreter() {
        let (t, prefix) = (5, 100);
        let x = host(1, HQ, prefix + t);
        let mut rng = StdRng::seed_from_u64(5);
        let bits = random_trees(&mut rng, 1, t);
        let anc = HostTensor { shape: vec![1, t], data: HostData::I64(bits.iter().map(|&a| a as i64).collect()) };
        let hq = random_bf16(&[1, HQ * t, D], 9);
        let mut o = out(1, HQ * t);
        let p = TreeParams { block_n: 32, max_splits: 4, ..TreeParams::new(G, D, t) };
        TreeVerify::cpu(p).unwrap().run_cpu(&hq, &x.hk, &x.hv, &anc, prefix, &mut o, None).unwrap();
        let refs = tree_refs(&x, &hq, &bits, t, prefix);
        assert_eq!(refs.len(), 2 * G * 2);
        check_host_out(&o, &refs).unwrap();
    }

    #[test]
    fn topk_check_accepts_the_interpreter_and_refuses_a_bad_pick() {
        let (b, nb, k) = (2, 96, 8);
        let q = random_bf16(&[b, HQ, D], 1);
        let lm = random_f32(&[b, HKV, nb, D], 2);
        let op = TopkBlockSelect::cpu(G, D, k, 32, false, 32, 4).unwrap();
        let mut bi = HostTensor::full(DType::I32, &[b, HKV, k], 0.0);
        let mut bc = HostTensor::full(DType::I32, &[b, HKV], 0.0);
        op.run_cpu(&q, &lm, nb, &mut bi, &mut bc).unwrap();
        let (mut idx, cnt) = (bi.to_f64(), bc.to_f64());
        check_topk(&idx, &cnt, &q, &lm, b, nb, k, true).unwrap();
        // Replace a pick of (0, 0) by a block that was not picked: refused.
        let other = (0..nb).find(|j| !idx[..k].contains(&(*j as f64))).unwrap();
        idx[k - 1] = other as f64;
        assert!(check_topk(&idx, &cnt, &q, &lm, b, nb, k, true).is_err());
    }

    #[test]
    fn random_inputs_are_spread_and_deterministic() {
        let a = random_bf16(&[3, 100_000], 7);
        assert_eq!(bf16s(&a), bf16s(&random_bf16(&[3, 100_000], 7)));
        let v: Vec<f32> = bf16s(&a).iter().map(|x| x.to_f32()).collect();
        let mean = v.iter().sum::<f32>() / v.len() as f32;
        assert!(v.iter().all(|x| (-1.0..=1.0).contains(x)) && mean.abs() < 0.01);
        assert!(v.iter().any(|&x| x > 0.99) && v.iter().any(|&x| x < -0.99));
    }
}
