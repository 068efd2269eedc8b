//! Interpreter tests of the split-KV decoders (dense, sink + window, block-sparse) and the
//! combine, against the f64 references, outputs poisoned (NaN) first.

use tessera_codegen::host::HostTensor;
use tessera_codegen::ir::DType;
use tessera_kernels::cases::{DecodeCase, DecodeKind, KernelCase};
use tessera_kernels::reference::DecodeDims;
use tessera_kernels::{BlockSparseDecode, DecodeParams, KernelError, LseCombine};

fn dims(batch: usize, kv_heads: usize, group: usize, cap: usize, head_dim: usize) -> DecodeDims {
    DecodeDims { batch, kv_heads, group, cap, head_dim }
}

fn params(group: usize, head_dim: usize, block_n: usize, max_splits: usize) -> DecodeParams {
    DecodeParams { block_n, max_splits, write_lse: true, ..DecodeParams::new(group, head_dim) }
}

fn run(mut c: DecodeCase) -> DecodeCase {
    c.run_cpu().unwrap_or_else(|e| panic!("{}: {e}", c.name()));
    let e = c.check().unwrap_or_else(|e| panic!("{}: {e}", c.name()));
    eprintln!("{:<60} rel_err {e:.2e}", c.name());
    c
}

#[test]
fn dense_gqa_ratios_and_odd_lengths() {
    for (i, &(g, n, cap, bn, ms)) in
        [(1, 37, 40, 16, 4), (3, 201, 205, 32, 4), (4, 599, 600, 64, 8), (8, 130, 131, 32, 2)].iter().enumerate()
    {
        run(DecodeCase::new(
            "dense",
            DecodeKind::Dense,
            dims(2, 2, g, cap, 64),
            n,
            params(g, 64, bn, ms),
            10 + i as u64,
        ));
    }
    // D = 128, no LSE written.
    let p = DecodeParams { block_n: 32, max_splits: 4, ..DecodeParams::new(4, 128) };
    run(DecodeCase::new("dense d128", DecodeKind::Dense, dims(1, 2, 4, 333, 128), 333, p, 3));
}

#[test]
fn dense_empty_sequence_is_zero_with_neg_inf_lse() {
    let c = run(DecodeCase::new("dense n0", DecodeKind::Dense, dims(1, 2, 2, 16, 64), 0, params(2, 64, 16, 2), 4));
    assert!(c.out.to_f64().iter().all(|&x| x == 0.0));
    assert!(c.lse.to_f64().iter().all(|&x| x == f64::NEG_INFINITY));
}

#[test]
fn sink_window_overlaps_and_long_windows() {
    let sw = |sink, window| DecodeKind::SinkWindow { sink, window };
    let cases = [
        (sw(4, 50), 3, 301),   // disjoint ranges
        (sw(40, 300), 4, 301), // S + W > N: overlap counted once
        (sw(0, 1000), 1, 257), // window larger than the sequence
        (sw(1000, 0), 8, 99),  // sink larger than the sequence
        (sw(7, 0), 3, 200),    // sink only
        (sw(0, 33), 4, 200),   // window only
    ];
    for (i, (kind, g, n)) in cases.into_iter().enumerate() {
        run(DecodeCase::new("sink_window", kind, dims(2, 2, g, n + 3, 64), n, params(g, 64, 32, 4), 20 + i as u64));
    }
}

#[test]
fn sink_window_nothing_attended() {
    let kind = DecodeKind::SinkWindow { sink: 0, window: 0 };
    let c = run(DecodeCase::new("sink_window empty", kind, dims(1, 1, 3, 64, 64), 64, params(3, 64, 32, 2), 5));
    assert!(c.out.to_f64().iter().all(|&x| x == 0.0));
    assert!(c.lse.to_f64().iter().all(|&x| x == f64::NEG_INFINITY));
}

#[test]
fn block_sparse_random_selections() {
    // (group, seq_len, block size, max blocks, sink, window, block_n)
    let cases = [
        (1, 517, 16, 9, 0, 0, 32),
        (3, 300, 32, 6, 5, 40, 32),
        (4, 599, 64, 5, 16, 64, 64),
        (8, 201, 8, 12, 3, 17, 16),
        // Several tiles per block, split boundaries not tile-aligned (the scalar-index path).
        (2, 1000, 128, 6, 7, 50, 32),
    ];
    for (i, &(g, n, bs, mb, sink, window, bn)) in cases.iter().enumerate() {
        let c = DecodeCase::block_sparse(
            "block_sparse",
            dims(2, 2, g, n + 5, 64),
            n,
            params(g, 64, bn, 4),
            bs,
            mb,
            sink,
            window,
            false,
            30 + i as u64,
        );
        run(c);
    }
    let c = DecodeCase::block_sparse(
        "block_sparse d128",
        dims(1, 2, 4, 260, 128),
        257,
        params(4, 128, 32, 4),
        32,
        4,
        4,
        16,
        false,
        39,
    );
    run(c);
}

fn with_selection(mut c: DecodeCase, idx: &[i32], count: &[i32]) -> DecodeCase {
    if let DecodeKind::BlockSparse { idx: i, count: n, .. } = &mut c.kind {
        *i = HostTensor::from_f64(DType::I32, &i.shape.clone(), &idx.iter().map(|&x| x as f64).collect::<Vec<_>>());
        *n = HostTensor::from_f64(DType::I32, &n.shape.clone(), &count.iter().map(|&x| x as f64).collect::<Vec<_>>());
    }
    c
}

#[test]
fn block_sparse_duplicates_count_twice() {
    // One (b, h): blocks [2, 2, 5]; block 2 is attended twice (the documented behaviour).
    let base = DecodeCase::block_sparse(
        "block_sparse dup",
        dims(1, 1, 4, 200, 64),
        190,
        params(4, 64, 16, 4),
        16,
        3,
        0,
        0,
        false,
        40,
    );
    let dup = run(with_selection(base, &[2, 2, 5], &[3]));
    // ... which differs from attending it once.
    let base = DecodeCase::block_sparse(
        "block_sparse once",
        dims(1, 1, 4, 200, 64),
        190,
        params(4, 64, 16, 4),
        16,
        3,
        0,
        0,
        false,
        40,
    );
    let once = run(with_selection(base, &[2, 5, 0], &[2]));
    assert_ne!(dup.out.to_f64(), once.out.to_f64());
    // Random selections drawn with repetition.
    let c = DecodeCase::block_sparse(
        "block_sparse dups",
        dims(2, 2, 3, 300, 64),
        300,
        params(3, 64, 32, 4),
        32,
        12,
        8,
        8,
        true,
        41,
    );
    run(c);
}

#[test]
fn block_sparse_blocks_inside_sink_window_are_not_double_counted() {
    // Blocks 0 and 9 overlap the sink (6) and the window (40 of 190): only their other
    // tokens are added; block 11 is the partial last block.
    let base = DecodeCase::block_sparse(
        "block_sparse overlap",
        dims(1, 2, 3, 200, 64),
        190,
        params(3, 64, 16, 4),
        16,
        4,
        6,
        40,
        false,
        42,
    );
    run(with_selection(base, &[0, 9, 11, 4, 11, 0, 0, 0], &[4, 2]));
}

#[test]
fn block_sparse_empty_selections() {
    // Empty selection + sink/window: the sink/window result.
    let base = DecodeCase::block_sparse(
        "block_sparse empty+sw",
        dims(1, 2, 4, 100, 64),
        100,
        params(4, 64, 16, 4),
        16,
        3,
        5,
        20,
        false,
        43,
    );
    let c = run(with_selection(base, &[0; 6], &[0, 0]));
    let sw = run(DecodeCase {
        kind: DecodeKind::SinkWindow { sink: 5, window: 20 },
        ..DecodeCase::new("sw", DecodeKind::Dense, dims(1, 2, 4, 100, 64), 100, params(4, 64, 16, 4), 43)
    });
    let err = tessera_kernels::reference::rel_err(&c.out.to_f64(), &sw.out.to_f64()).unwrap();
    assert!(err < 1e-2, "{err}");
    // Nothing at all: zeros and LSE -inf.
    let base = DecodeCase::block_sparse(
        "block_sparse nothing",
        dims(2, 1, 2, 100, 64),
        100,
        params(2, 64, 16, 4),
        16,
        3,
        0,
        0,
        false,
        44,
    );
    let c = run(with_selection(base, &[0; 6], &[0, 0]));
    assert!(c.out.to_f64().iter().all(|&x| x == 0.0));
    assert!(c.lse.to_f64().iter().all(|&x| x == f64::NEG_INFINITY));
}

#[test]
fn block_sparse_refuses_bad_arguments_before_running() {
    let c = DecodeCase::block_sparse("x", dims(1, 2, 2, 100, 64), 90, params(2, 64, 16, 4), 16, 3, 0, 0, false, 45);
    let op = BlockSparseDecode::cpu(DecodeParams { write_lse: false, ..c.params.clone() }, 16).unwrap();
    let (idx_ok, cnt_ok) = match &c.kind {
        DecodeKind::BlockSparse { idx, count, .. } => (idx.clone(), count.clone()),
        _ => unreachable!(),
    };
    let mut out = c.out.clone();
    let i32t = |shape: &[usize], v: &[i32]| {
        HostTensor::from_f64(DType::I32, shape, &v.iter().map(|&x| x as f64).collect::<Vec<_>>())
    };
    let mut go = |q: &HostTensor, idx: &HostTensor, cnt: &HostTensor, n: usize| {
        let r = op.run_cpu(q, &c.k, &c.v, idx, cnt, n, 0, 0, &mut out, None);
        r.err()
    };
    // ceil(90 / 16) = 6 blocks: index 6 is out of range.
    let e = go(&c.q, &i32t(&[1, 2, 3], &[0, 6, 1, 2, 2, 2]), &i32t(&[1, 2], &[2, 1]), 90);
    assert!(matches!(e, Some(KernelError::IndexOutOfRange { arg: "block_idx", value: 6, hi: 6, .. })), "{e:?}");
    let e = go(&c.q, &i32t(&[1, 2, 3], &[0, -1, 1, 2, 2, 2]), &i32t(&[1, 2], &[2, 1]), 90);
    assert!(matches!(e, Some(KernelError::IndexOutOfRange { arg: "block_idx", value: -1, .. })), "{e:?}");
    let e = go(&c.q, &idx_ok, &i32t(&[1, 2], &[4, 0]), 90);
    assert!(matches!(e, Some(KernelError::IndexOutOfRange { arg: "block_count", value: 4, .. })), "{e:?}");
    let e = go(&c.q, &idx_ok, &i32t(&[1, 3], &[0, 0, 0]), 90);
    assert!(matches!(e, Some(KernelError::Shape { arg: "block_count", .. })), "{e:?}");
    let e = go(&c.q, &HostTensor::full(DType::I64, &[1, 2, 3], 0.0), &cnt_ok, 90);
    assert!(matches!(e, Some(KernelError::DType { arg: "block_idx", .. })), "{e:?}");
    let e = go(&HostTensor::full(DType::F32, &[1, 4, 64], 0.0), &idx_ok, &cnt_ok, 90);
    assert!(matches!(e, Some(KernelError::DType { arg: "q", .. })), "{e:?}");
    let e = go(&HostTensor::full(DType::BF16, &[1, 3, 64], 0.0), &idx_ok, &cnt_ok, 90);
    assert!(matches!(e, Some(KernelError::Shape { arg: "q", .. })), "{e:?}");
    let e = go(&c.q, &idx_ok, &cnt_ok, 101);
    assert!(matches!(e, Some(KernelError::Invalid { .. })), "{e:?}");
    // Refused means nothing ran: the output is still untouched (NaN).
    let mut go = |q: &HostTensor, idx: &HostTensor, cnt: &HostTensor, n: usize| {
        assert!(out.to_f64().iter().all(|x| x.is_nan()));
        op.run_cpu(q, &c.k, &c.v, idx, cnt, n, 0, 0, &mut out, None).err()
    };
    // Slots past the count are not checked.
    assert!(go(&c.q, &i32t(&[1, 2, 3], &[0, 99, 99, 5, -4, 99]), &i32t(&[1, 2], &[1, 1]), 90).is_none());
}

#[test]
fn combine_merges_partial_results_by_lse() {
    // Sink part and window part computed separately (with LSE), merged by the combine,
    // equal the sink + window decode of the union.
    let (d, n, g) = (dims(1, 2, 4, 150, 64), 150, 4);
    let mk = |kind| DecodeCase::new("part", kind, d, n, params(g, 64, 16, 4), 46);
    let a = run(mk(DecodeKind::SinkWindow { sink: 10, window: 0 }));
    let b = run(mk(DecodeKind::SinkWindow { sink: 0, window: 30 }));
    let full = run(mk(DecodeKind::SinkWindow { sink: 10, window: 30 }));
    let (hq, dd) = (8, 64);
    let mut op = vec![0.0; hq * 2 * dd];
    let mut lp = vec![0.0; hq * 2];
    for h in 0..hq {
        for (s, c) in [&a, &b].iter().enumerate() {
            op[(h * 2 + s) * dd..(h * 2 + s + 1) * dd].copy_from_slice(&c.out.to_f64()[h * dd..(h + 1) * dd]);
            lp[h * 2 + s] = c.lse.to_f64()[h];
        }
    }
    let o_part = HostTensor::from_f64(DType::F32, &[1, hq, 2, dd], &op);
    let lse_part = HostTensor::from_f64(DType::F32, &[1, hq, 2], &lp);
    let mut out = HostTensor::full(DType::BF16, &[1, hq, dd], f64::NAN);
    let mut lse = HostTensor::full(DType::F32, &[1, hq], f64::NAN);
    LseCombine::cpu(64, 2, true).unwrap().run_cpu(&o_part, &lse_part, &mut out, Some(&mut lse)).unwrap();
    let (want, _) = full.reference();
    let err = tessera_kernels::reference::rel_err(&out.to_f64(), &want).unwrap();
    assert!(err < 1.5e-2, "merged rel err {err}");
    for (x, y) in lse.to_f64().iter().zip(full.lse.to_f64()) {
        assert!((x - y).abs() < 1e-4, "lse {x} vs {y}");
    }
}

#[test]
fn block_sparse_per_query_head_lists() {
    // Each query head its own block list over its KV head's rows (GROUP = 1, KV_SHARE = G),
    // against the f64 reference per head; tile-aligned (bs 32) and gathered (bs 8) blocks.
    use rand::{Rng, SeedableRng};
    use tessera_kernels::reference::{attend, block_sparse_positions};
    for (g, n, bs, mb, sink, window, bn, seed) in [(4, 700, 32, 5, 3, 40, 32, 80u64), (3, 333, 8, 9, 0, 17, 16, 81)] {
        let (b, hkv, d) = (2, 2, 64);
        let hq = hkv * g;
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let q = HostTensor::random(DType::BF16, &[b, hq, d], -1.0, 1.0, &mut rng);
        let k = HostTensor::random(DType::BF16, &[b, hkv, n, d], -1.0, 1.0, &mut rng);
        let v = HostTensor::random(DType::BF16, &[b, hkv, n, d], -1.0, 1.0, &mut rng);
        let nb = n.div_ceil(bs);
        let (mut idx, mut cnt) = (vec![-1.0; b * hq * mb], vec![0.0; b * hq]);
        for row in 0..b * hq {
            let c = rng.random_range(0..=mb);
            let mut picks: Vec<usize> = (0..nb).collect();
            for j in 0..c {
                let t = rng.random_range(j..nb);
                picks.swap(j, t);
                idx[row * mb + j] = picks[j] as f64;
            }
            cnt[row] = c as f64;
        }
        let idx = HostTensor::from_f64(DType::I32, &[b, hq, mb], &idx);
        let cnt = HostTensor::from_f64(DType::I32, &[b, hq], &cnt);
        let p = params(g, d, bn, 4);
        let op = BlockSparseDecode::per_query_head(None, p.clone(), bs).unwrap();
        let mut out = HostTensor::full(DType::BF16, &[b, hq, d], f64::NAN);
        let mut lse = HostTensor::full(DType::F32, &[b, hq], f64::NAN);
        op.run_cpu(&q, &k, &v, &idx, &cnt, n, sink, window, &mut out, Some(&mut lse)).unwrap();
        // A list per KV head of the wrong shape is refused before anything runs.
        let shared_idx = HostTensor::full(DType::I32, &[b, hkv, mb], 0.0);
        let shared_cnt = HostTensor::full(DType::I32, &[b, hkv], 0.0);
        let (mut o2, mut l2) = (out.clone(), lse.clone());
        let e = op.run_cpu(&q, &k, &v, &shared_idx, &shared_cnt, n, sink, window, &mut o2, Some(&mut l2)).unwrap_err();
        assert!(matches!(e, KernelError::Shape { arg: "block_idx", .. }), "{e}");
        let (qf, kf, vf, got, got_lse) = (q.to_f64(), k.to_f64(), v.to_f64(), out.to_f64(), lse.to_f64());
        let (ix, cn) = (idx.to_f64(), cnt.to_f64());
        let mut worst: f64 = 0.0;
        for bb in 0..b {
            for h in 0..hq {
                let row = bb * hq + h;
                let blocks: Vec<i64> = (0..cn[row] as usize).map(|j| ix[row * mb + j] as i64).collect();
                let pos = block_sparse_positions(n, sink, window, &blocks, bs);
                let base = (bb * hkv + h / g) * n; // in rows
                let qh = &qf[row * d..(row + 1) * d];
                let (want, want_lse) = attend(qh, &kf, &vf, base, &pos, d, p.scale_log2 as f64);
                let scale = want.iter().fold(1e-6f64, |m, x| m.max(x.abs()));
                for (x, y) in got[row * d..(row + 1) * d].iter().zip(&want) {
                    worst = worst.max((x - y).abs() / scale);
                }
                if want_lse.is_finite() {
                    assert!((got_lse[row] - want_lse).abs() <= 1e-3 * want_lse.abs().max(1.0), "lse row {row}");
                } else {
                    assert_eq!(got_lse[row], f64::NEG_INFINITY, "row {row}: empty selection");
                }
            }
        }
        assert!(worst <= 1e-2, "g {g} bs {bs}: relative error {worst:e}");
        eprintln!("per-query-head block-sparse g{g} bs{bs}: rel err {worst:.2e}");
    }
}

#[test]
fn f16_data_through_the_same_kernels() {
    // KV = f16: q, k, v and out in f16, f32 accumulation; relative error ≤ 5e-3 (F16_TOL).
    use tessera_kernels::cases::F16_TOL;
    let sw = |sink, window| DecodeKind::SinkWindow { sink, window };
    let cases = vec![
        DecodeCase::new("dense", DecodeKind::Dense, dims(2, 2, 4, 300, 64), 299, params(4, 64, 32, 4), 70),
        DecodeCase::new("dense d128", DecodeKind::Dense, dims(1, 2, 3, 200, 128), 200, params(3, 128, 64, 2), 71),
        DecodeCase::new("sink_window", sw(5, 60), dims(2, 1, 8, 250, 64), 250, params(8, 64, 32, 4), 72),
        DecodeCase::block_sparse(
            "block_sparse",
            dims(1, 2, 2, 400, 64),
            397,
            params(2, 64, 32, 4),
            32,
            5,
            3,
            40,
            false,
            73,
        ),
        DecodeCase::block_sparse(
            "block_sparse gather",
            dims(1, 2, 4, 300, 64),
            300,
            params(4, 64, 32, 4),
            8,
            9,
            0,
            20,
            false,
            74,
        ),
    ];
    for c in cases {
        let c = run(c.in_dtype(DType::F16));
        assert_eq!(c.out.dtype(), DType::F16, "{}", c.name());
        assert!(c.check().unwrap() <= F16_TOL);
    }
    // bf16 tensors given to an f16 op are refused before anything runs.
    let c = DecodeCase::new("x", DecodeKind::Dense, dims(1, 2, 4, 64, 64), 64, params(4, 64, 32, 4), 75);
    let op = tessera_kernels::DenseDecode::cpu(DecodeParams { dtype: DType::F16, ..c.params.clone() }).unwrap();
    let mut out = HostTensor::full(DType::F16, &[1, 8, 64], f64::NAN);
    let mut lse = HostTensor::full(DType::F32, &[1, 8], f64::NAN);
    let e = op.run_cpu(&c.q, &c.k, &c.v, 64, &mut out, Some(&mut lse)).unwrap_err();
    assert!(matches!(e, KernelError::DType { arg: "k", .. }), "{e}");
}

/// Head dims other than 64 and 128 (issue 4: "96 and 256 if the design allows"): the same
/// DSL kernels at D = 96 and 256, dense, sink + window and block-sparse, odd lengths.
#[test]
fn head_dims_96_and_256() {
    for (i, &d) in [96usize, 256].iter().enumerate() {
        let seed = 40 + 10 * i as u64;
        run(DecodeCase::new("dense", DecodeKind::Dense, dims(1, 2, 4, 300, d), 299, params(4, d, 64, 4), seed));
        let sw = DecodeKind::SinkWindow { sink: 5, window: 90 };
        run(DecodeCase::new("sink_window", sw, dims(2, 1, 2, 260, d), 257, params(2, d, 32, 4), seed + 1));
        // Blocks of 32 under tiles of 32 (contiguous tiles) and blocks of 8 (gathered rows).
        for (j, &bs) in [32usize, 8].iter().enumerate() {
            let (dm, p) = (dims(1, 2, 3, 400, d), params(3, d, 32, 4));
            let seed = seed + 2 + j as u64;
            run(DecodeCase::block_sparse("block_sparse", dm, 391, p, bs, 5, 4, 40, false, seed));
        }
    }
}
