//! Interpreter tests of landmarks + top-k block selection, tree verification and KV append.

use tessera_codegen::host::{HostData, HostTensor};
use tessera_codegen::ir::DType;
use tessera_kernels::cases::{AppendCase, DecodeCase, DecodeKind, KernelCase, TopkCase, TreeCase};
use tessera_kernels::reference::DecodeDims;
use tessera_kernels::{DecodeParams, KernelError, KvAppend, TopkBlockSelect, TreeParams, TreeVerify};

fn dims(batch: usize, kv_heads: usize, group: usize, cap: usize, head_dim: usize) -> DecodeDims {
    DecodeDims { batch, kv_heads, group, cap, head_dim }
}

fn run<C: KernelCase>(mut c: C) -> C {
    c.run_cpu().unwrap_or_else(|e| panic!("{}: {e}", c.name()));
    let e = c.check().unwrap_or_else(|e| panic!("{}: {e}", c.name()));
    eprintln!("{:<60} rel_err {e:.2e}", c.name());
    c
}

#[test]
fn topk_selection_max_and_sum() {
    // (group, seq_len, block size, k, lm_tile, sum)
    // The last two have tiles no larger than k: every score goes to the merge.
    let cases = [
        (1, 517, 16, 5, 16, false),
        (3, 300, 8, 7, 16, true),
        (4, 599, 16, 8, 16, false),
        (8, 200, 32, 3, 4, true),
        (4, 599, 8, 16, 16, false),
        (2, 777, 8, 20, 8, true),
    ];
    for (i, &(g, n, bs, k, lt, sum)) in cases.iter().enumerate() {
        run(TopkCase::new("topk", dims(2, 2, g, n + 7, 64), n, bs, k, lt, sum, 50 + i as u64));
    }
    run(TopkCase::new("topk d128", dims(1, 2, 4, 300, 128), 290, 32, 4, 8, false, 55));
}

#[test]
fn topk_selection_with_eight_warps() {
    // WARPS = 8 (the other value of the tune space) against the same reference.
    for (i, &(g, k, lt, sum)) in [(2, 5, 16, false), (4, 3, 8, true)].iter().enumerate() {
        let mut c = TopkCase::new("topk warps=8", dims(2, 2, g, 200, 64), 190, 16, k, lt, sum, 58 + i as u64);
        c.warps = 8;
        let c = run(c);
        assert!(c.block_count.to_f64().iter().all(|&x| x == k as f64));
    }
}

#[test]
fn topk_selection_on_bf16_landmarks() {
    // bf16 landmarks (tensor-core scores), max and sum over the group, tiles above and
    // below k; scores checked against the rounded landmarks the kernel wrote.
    for (i, &(g, n, bs, k, lt, sum)) in [(4, 599, 16, 8, 16, false), (2, 777, 8, 20, 8, true)].iter().enumerate() {
        let c = TopkCase::new("topk bf16 lm", dims(2, 2, g, n + 7, 64), n, bs, k, lt, sum, 80 + i as u64)
            .with_landmark_dtype(DType::BF16);
        let c = run(c);
        assert_eq!(c.landmarks.dtype(), DType::BF16);
    }
    run(TopkCase::new("topk bf16 lm d128", dims(1, 2, 4, 300, 128), 290, 32, 4, 8, false, 82)
        .with_landmark_dtype(DType::BF16));
}

#[test]
fn landmarks_refuse_other_dtypes_and_mismatches() {
    assert!(matches!(tessera_kernels::Landmarks::typed(None, 64, 16, DType::F16), Err(KernelError::Invalid { .. })));
    assert!(matches!(KvAppend::typed(None, 64, 16, true, DType::I32), Err(KernelError::Invalid { .. })));
    // An f32 selection refuses bf16 landmarks before running.
    let op = TopkBlockSelect::cpu(2, 64, 4, 8, false, 16, 4).unwrap();
    let q = HostTensor::full(DType::BF16, &[1, 4, 64], 0.5);
    let lm = HostTensor::full(DType::BF16, &[1, 2, 10, 64], 0.5);
    let (mut bi, mut bc) = (HostTensor::full(DType::I32, &[1, 2, 4], 0.0), HostTensor::full(DType::I32, &[1, 2], 0.0));
    let e = op.run_cpu(&q, &lm, 10, &mut bi, &mut bc).unwrap_err();
    assert!(matches!(e, KernelError::DType { arg: "landmarks", expected: DType::F32, got: DType::BF16, .. }), "{e}");
}

#[test]
fn topk_more_blocks_requested_than_exist() {
    // 5 blocks, k = 8: count 5, slots 5..8 are -1.
    let c = run(TopkCase::new("topk k>nb", dims(1, 2, 2, 80, 64), 77, 16, 8, 8, false, 56));
    assert!(c.block_count.to_f64().iter().all(|&x| x == 5.0));
}

#[test]
fn topk_feeds_block_sparse() {
    let mut t = run(TopkCase::new("topk", dims(1, 2, 4, 300, 64), 300, 16, 6, 16, false, 57));
    let mut c = DecodeCase::new(
        "block_sparse from topk",
        DecodeKind::Dense,
        dims(1, 2, 4, 300, 64),
        300,
        DecodeParams { block_n: 32, max_splits: 4, write_lse: true, ..DecodeParams::new(4, 64) },
        57,
    );
    c.q = t.q.clone();
    c.k = std::mem::replace(&mut t.kc, HostTensor::full(DType::BF16, &[1], 0.0));
    c.kind = DecodeKind::BlockSparse {
        block_size: 16,
        sink: 4,
        window: 32,
        idx: t.block_idx.clone(),
        count: t.block_count.clone(),
    };
    run(c);
}

#[test]
fn topk_refuses_bad_arguments() {
    let op = TopkBlockSelect::cpu(2, 64, 4, 8, false, 16, 4).unwrap();
    let q = HostTensor::full(DType::BF16, &[1, 4, 64], 0.0);
    let lm = HostTensor::full(DType::F32, &[1, 2, 10, 64], 0.0);
    let mut bi = HostTensor::full(DType::I32, &[1, 2, 4], 0.0);
    let mut bc = HostTensor::full(DType::I32, &[1, 2], 0.0);
    let e = op.run_cpu(&q, &lm, 11, &mut bi, &mut bc).unwrap_err();
    assert!(matches!(e, KernelError::Invalid { .. }), "{e}");
    let e = op.run_cpu(&q, &HostTensor::full(DType::BF16, &[1, 2, 10, 64], 0.0), 10, &mut bi, &mut bc).unwrap_err();
    assert!(matches!(e, KernelError::DType { arg: "landmarks", .. }), "{e}");
    let e = op.run_cpu(&q, &lm, 10, &mut HostTensor::full(DType::I32, &[1, 2, 5], 0.0), &mut bc).unwrap_err();
    assert!(matches!(e, KernelError::Shape { arg: "block_idx", .. }), "{e}");
    // 3 tiles of 8 blocks x k = 4 -> 12 candidates > max_cand 8.
    let small = TopkBlockSelect::cpu(2, 64, 4, 8, false, 8, 4).unwrap();
    let lm = HostTensor::full(DType::F32, &[1, 2, 24, 64], 0.0);
    assert!(matches!(small.run_cpu(&q, &lm, 24, &mut bi, &mut bc), Err(KernelError::Invalid { .. })));
    // k larger than the merge's capacity.
    assert!(TopkBlockSelect::cpu(2, 64, 17, 8, false, 16, 4).is_err());
}

fn tree(g: usize, t: usize, prefix: usize, t_pad: usize, seed: u64) -> TreeCase {
    let p = TreeParams { block_n: 32, max_splits: 4, write_lse: true, ..TreeParams::new(g, 64, t_pad) };
    TreeCase::new("tree", dims(2, 2, g, prefix + t + 3, 64), prefix, t, p, seed)
}

#[test]
fn tree_verify_random_trees() {
    run(tree(1, 7, 301, 8, 60));
    run(tree(3, 5, 99, 8, 61));
    run(tree(4, 13, 200, 16, 62));
    run(tree(8, 3, 150, 4, 63));
    run(tree(1, 64, 70, 64, 64)); // a full 64-node tree: bit 63 used
    let p = TreeParams { block_n: 32, max_splits: 4, write_lse: true, ..TreeParams::new(2, 128, 4) };
    run(TreeCase::new("tree d128", dims(1, 2, 2, 140, 128), 133, 4, p, 65));
}

#[test]
fn tree_verify_in_row_blocks() {
    // GROUP · T_PAD split over programs of ROWS rows (T = 64 at GQA 4 needs it on a GPU);
    // 48 rows does not divide 3 · 20 = 60: the last block is part padding.
    for (g, t, t_pad, rows, seed) in [(4, 64, 64, 64, 67), (3, 17, 20, 48, 68), (2, 9, 16, 16, 69)] {
        let mut c = tree(g, t, 150, t_pad, seed);
        c.params.rows = rows;
        run(c);
    }
}

#[test]
fn tree_verify_with_eight_warps() {
    // WARPS = 8 (the other value of the tune space) against the same reference.
    for (g, t, prefix, t_pad, seed) in [(2, 7, 120, 8, 70), (4, 16, 65, 16, 71)] {
        let mut c = tree(g, t, prefix, t_pad, seed);
        c.params.warps = 8;
        run(c);
    }
}

#[test]
fn tree_verify_single_node_and_chain() {
    // T = 1: the root only attends the prefix and itself = dense decode over prefix + 1.
    let c = run(tree(4, 1, 257, 1, 66));
    let mut d = DecodeCase::new(
        "dense",
        DecodeKind::Dense,
        dims(2, 2, 4, 257 + 4, 64),
        258,
        DecodeParams { block_n: 32, max_splits: 4, ..DecodeParams::new(4, 64) },
        0,
    );
    d.q = c.q.clone();
    d.k = c.k.clone();
    d.v = c.v.clone();
    let d = run(d);
    let err = tessera_kernels::reference::rel_err(&c.out.to_f64(), &d.out.to_f64()).unwrap();
    assert!(err < 1e-2, "{err}");
    // A chain (each node's parent is the previous one) and an empty prefix.
    let mut c = tree(2, 6, 0, 8, 67);
    let chain: Vec<i64> = (0..6).map(|i| (1i64 << (i + 1)) - 1).collect();
    c.anc = HostTensor { shape: vec![2, 6], data: HostData::I64([chain.clone(), chain].concat()) };
    run(c);
}

#[test]
fn tree_verify_refuses_bad_arguments() {
    let c = tree(2, 5, 40, 8, 68);
    let op = TreeVerify::cpu(TreeParams { write_lse: false, ..c.params.clone() }).unwrap();
    let mut out = c.out.clone();
    let bad_bits = HostTensor { shape: vec![2, 5], data: HostData::I64(vec![1, 3, 1 << 5, 1, 1, 1, 1, 1, 1, 1]) };
    let e = op.run_cpu(&c.q, &c.k, &c.v, &bad_bits, 40, &mut out, None).unwrap_err();
    assert!(matches!(e, KernelError::IndexOutOfRange { arg: "anc", value: 5, .. }), "{e}");
    let e = op.run_cpu(&c.q, &c.k, &c.v, &c.anc, 44, &mut out, None).unwrap_err();
    assert!(matches!(e, KernelError::Invalid { .. }), "{e}");
    let i32_anc = HostTensor::full(DType::I32, &[2, 5], 1.0);
    let e = op.run_cpu(&c.q, &c.k, &c.v, &i32_anc, 40, &mut out, None).unwrap_err();
    assert!(matches!(e, KernelError::DType { arg: "anc", .. }), "{e}");
    let big = HostTensor { shape: vec![2, 9], data: HostData::I64(vec![1; 18]) };
    assert!(matches!(op.run_cpu(&c.q, &c.k, &c.v, &big, 10, &mut out, None), Err(KernelError::Invalid { .. })));
    assert!(out.to_f64().iter().all(|x| x.is_nan()));
    assert!(TreeVerify::cpu(TreeParams::new(2, 64, 65)).is_err());
}

#[test]
fn kv_append_writes_rows_and_updates_landmarks() {
    // Positions at, inside and across block boundaries; T = 1 and T spanning blocks.
    run(AppendCase::new("append", dims(3, 2, 1, 120, 64), 16, &[0, 15, 100], 1, 70));
    run(AppendCase::new("append", dims(2, 2, 1, 120, 64), 16, &[13, 48], 37, 71));
    run(AppendCase::new("append d128", dims(1, 1, 1, 64, 128), 8, &[5], 20, 72));
    run(AppendCase::new("append bf16 lm", dims(2, 2, 1, 120, 64), 16, &[13, 48], 37, 74)
        .with_landmark_dtype(DType::BF16));
}

/// Appends 37 rows one at a time into `dtype` landmarks; returns (token by token, from
/// scratch in one append) landmarks of the first 3 blocks of 16, and checks the caches agree.
fn append_token_by_token(dtype: DType) -> (Vec<f64>, Vec<f64>) {
    let mut c = AppendCase::new("append", dims(1, 2, 1, 64, 64), 16, &[0], 1, 73).with_landmark_dtype(dtype);
    let op = KvAppend::typed(None, 64, 16, true, dtype).unwrap();
    let full = AppendCase::new("append", dims(1, 2, 1, 64, 64), 16, &[0], 37, 73).with_landmark_dtype(dtype);
    for i in 0..37 {
        let row = |t: &HostTensor| {
            let v = t.to_f64();
            let d = 64;
            let rows: Vec<f64> = (0..2).flat_map(|h| v[(h * 37 + i) * d..(h * 37 + i + 1) * d].to_vec()).collect();
            HostTensor::from_f64(DType::BF16, &[1, 2, 1, d], &rows)
        };
        let pos = HostTensor::from_f64(DType::I32, &[1], &[i as f64]);
        op.run_cpu(&row(&full.k_new), &row(&full.v_new), &pos, &mut c.k_cache, &mut c.v_cache, &mut c.landmarks)
            .unwrap();
    }
    let scratch = {
        let mut f = full;
        f.run_cpu().unwrap();
        f
    };
    assert_eq!(c.k_cache, scratch.k_cache);
    (c.landmarks.to_f64(), scratch.landmarks.to_f64())
}

#[test]
fn kv_append_token_by_token_matches_from_scratch() {
    // f32: equal up to f32 summation order. bf16: each landmark is the block's f32 sum
    // rounded once (recomputed from the rows), so 37 appends do not accumulate rounding.
    for (dtype, tol) in [(DType::F32, 1e-5), (DType::BF16, 4e-3)] {
        let (lm, want) = append_token_by_token(dtype);
        for blk in 0..3 {
            for h in 0..2 {
                let at = (h * 4 + blk) * 64;
                let err = tessera_kernels::reference::rel_err(&lm[at..at + 64], &want[at..at + 64]).unwrap();
                assert!(err < tol, "{dtype:?} block {blk} head {h}: {err}");
            }
        }
    }
}

#[test]
fn kv_append_refuses_out_of_range_positions() {
    let c = AppendCase::new("append", dims(2, 2, 1, 64, 64), 16, &[0, 0], 10, 75);
    let op = KvAppend::cpu(64, 16, true).unwrap();
    let (mut kc, mut vc, mut lm) = (c.k_cache.clone(), c.v_cache.clone(), c.landmarks.clone());
    let pos = HostTensor::from_f64(DType::I32, &[2], &[3.0, 55.0]);
    let e = op.run_cpu(&c.k_new, &c.v_new, &pos, &mut kc, &mut vc, &mut lm).unwrap_err();
    assert!(matches!(e, KernelError::IndexOutOfRange { arg: "pos", value: 55, hi: 55, .. }), "{e}");
    let pos = HostTensor::from_f64(DType::I32, &[2], &[-1.0, 0.0]);
    assert!(matches!(
        op.run_cpu(&c.k_new, &c.v_new, &pos, &mut kc, &mut vc, &mut lm),
        Err(KernelError::IndexOutOfRange { .. })
    ));
    let short = HostTensor::full(DType::F32, &[2, 2, 3, 64], 0.0);
    let pos = HostTensor::from_f64(DType::I32, &[2], &[0.0, 0.0]);
    assert!(matches!(op.run_cpu(&c.k_new, &c.v_new, &pos, &mut kc, &mut vc, &mut lm.clone()), Ok(())));
    assert!(matches!(
        op.run_cpu(&c.k_new, &c.v_new, &pos, &mut kc, &mut vc, &mut short.clone()),
        Err(KernelError::Invalid { .. })
    ));
    assert_eq!(vc, {
        let mut x = c.v_cache.clone();
        op.run_cpu(&c.k_new, &c.v_new, &pos, &mut c.k_cache.clone(), &mut x, &mut c.landmarks.clone()).unwrap();
        x
    });
}
