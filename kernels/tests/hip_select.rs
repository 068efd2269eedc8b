//! Interpreter tests of the HiP tree-search kernels against the f64 reference, and HiP
//! feeding the block-sparse decode.

use rand::rngs::StdRng;
use rand::SeedableRng;
use tessera_codegen::host::HostTensor;
use tessera_codegen::ir::DType;
use tessera_kernels::cases::{DecodeCase, DecodeKind, KernelCase};
use tessera_kernels::hip::{reference_select, HipSelect};
use tessera_kernels::reference::DecodeDims;
use tessera_kernels::{DecodeParams, KernelError};

fn dims(batch: usize, kv_heads: usize, group: usize, cap: usize, head_dim: usize) -> DecodeDims {
    DecodeDims { batch, kv_heads, group, cap, head_dim }
}

struct Problem {
    dims: DecodeDims,
    q: HostTensor,
    k: HostTensor,
}

fn problem(d: DecodeDims, seed: u64) -> Problem {
    let mut rng = StdRng::seed_from_u64(seed);
    let q = HostTensor::random(DType::BF16, &[d.batch, d.kv_heads * d.group, d.head_dim], -2.0, 2.0, &mut rng);
    let k = HostTensor::random(DType::BF16, &[d.batch, d.kv_heads, d.cap, d.head_dim], -1.0, 1.0, &mut rng);
    Problem { dims: d, q, k }
}

/// Runs the kernels and checks the selection equals the reference exactly.
fn check(p: &Problem, seq_len: usize, window: usize, bk: usize, k_nodes: usize, child_tile: usize) -> HostTensor {
    let d = p.dims;
    let op = HipSelect::cpu(d.group, d.head_dim, bk, k_nodes, child_tile).unwrap();
    let mut bi = HostTensor::full(DType::I32, &[d.batch, d.kv_heads, k_nodes], -99.0);
    let mut bc = HostTensor::full(DType::I32, &[d.batch, d.kv_heads], -99.0);
    let plan = op.run_cpu(&p.q, &p.k, seq_len, window, &mut bi, &mut bc).unwrap();
    let want = reference_select(d, &p.q.to_f64(), &p.k.to_f64(), seq_len, window, bk, k_nodes);
    let (idx, cnt) = (bi.to_f64(), bc.to_f64());
    for (bh, w) in want.iter().enumerate() {
        let got: Vec<usize> = idx[bh * k_nodes..][..cnt[bh] as usize].iter().map(|&x| x as usize).collect();
        assert_eq!(&got, w, "(b,h) {bh}: N {seq_len} bk {bk} K {k_nodes} steps {}", plan.steps);
        assert_eq!(w.len(), k_nodes.min(plan.num_blocks));
        assert!(idx[bh * k_nodes..][..k_nodes][w.len()..].iter().all(|&x| x == -1.0));
    }
    eprintln!("hip N {seq_len} bk {bk} K {k_nodes}: {} blocks, {} steps ok", plan.num_blocks, plan.steps);
    bi.shape = vec![d.batch, d.kv_heads, k_nodes];
    bi
}

#[test]
fn hip_matches_reference_on_odd_shapes() {
    // (batch, kv heads, group, seq_len, window, bk, nodes, child tile)
    let cases = [
        (1, 1, 1, 37, 5, 2, 4, 8),
        (2, 2, 4, 517, 33, 4, 6, 16),
        (1, 3, 3, 300, 0, 16, 5, 4),
        (2, 1, 8, 1000, 100, 2, 16, 32),
        (1, 2, 2, 129, 17, 8, 32, 64), // fewer blocks (14) than nodes: no refinement
        (1, 1, 4, 2049, 256, 1, 7, 8),
    ];
    for (i, &(b, h, g, n, w, bk, kn, ct)) in cases.iter().enumerate() {
        let p = problem(dims(b, h, g, n + 3, 64), 100 + i as u64);
        check(&p, n, w, bk, kn, ct);
    }
    let p = problem(dims(1, 2, 4, 400, 128), 120);
    check(&p, 400, 64, 4, 8, 16);
}

#[test]
fn hip_finds_a_planted_key() {
    // Keys of KV head 0 aligned with its queries, strongest at 301 and fading with the
    // distance (the locality the tree search relies on; an isolated key is found only
    // when it is some node's centre): with bk 2 the search must keep block 150.
    let mut p = problem(dims(1, 2, 2, 1024, 64), 130);
    let (q, mut k) = (p.q.to_f64(), p.k.to_f64());
    for j in 0..1000usize {
        let w = (-(j as f64 - 301.0).abs() / 64.0).exp();
        for e in 0..64 {
            k[j * 64 + e] += w * (q[e] + q[64 + e]).signum() * 4.0;
        }
    }
    p.k = HostTensor::from_f64(DType::BF16, &p.k.shape.clone(), &k);
    let bi = check(&p, 1000, 64, 2, 8, 16);
    assert!(bi.to_f64()[..8].contains(&150.0));
}

#[test]
fn hip_feeds_block_sparse_decode() {
    let d = dims(1, 2, 4, 600, 64);
    let (n, sink, window, bk, kn) = (600, 8, 64, 8, 12);
    let p = problem(d, 140);
    let bi = check(&p, n, window, bk, kn, 16);
    let op = HipSelect::cpu(4, 64, bk, kn, 16).unwrap();
    let mut bi2 = bi.clone();
    let mut bc = HostTensor::full(DType::I32, &[1, 2], 0.0);
    op.run_cpu(&p.q, &p.k, n, window, &mut bi2, &mut bc).unwrap();
    assert_eq!(bi, bi2);
    let mut c = DecodeCase::new(
        "block_sparse from hip",
        DecodeKind::Dense,
        d,
        n,
        DecodeParams { block_n: 32, max_splits: 4, write_lse: true, ..DecodeParams::new(4, 64) },
        141,
    );
    c.q = p.q.clone();
    c.k = p.k.clone();
    c.kind = DecodeKind::BlockSparse { block_size: bk, sink, window, idx: bi, count: bc };
    c.run_cpu().unwrap();
    let e = c.check().unwrap();
    eprintln!("{} rel_err {e:.2e}", c.name());
}

#[test]
fn hip_refuses_bad_arguments() {
    let op = HipSelect::cpu(2, 64, 4, 8, 16).unwrap();
    let q = HostTensor::full(DType::BF16, &[1, 4, 64], 0.0);
    let k = HostTensor::full(DType::BF16, &[1, 2, 100, 64], 0.0);
    let mut bi = HostTensor::full(DType::I32, &[1, 2, 8], 0.0);
    let mut bc = HostTensor::full(DType::I32, &[1, 2], 0.0);
    let e = op.run_cpu(&q, &k, 101, 0, &mut bi, &mut bc).unwrap_err();
    assert!(matches!(e, KernelError::Invalid { .. }), "{e}");
    let e = op.run_cpu(&HostTensor::full(DType::BF16, &[1, 3, 64], 0.0), &k, 100, 0, &mut bi, &mut bc).unwrap_err();
    assert!(matches!(e, KernelError::Shape { arg: "q", .. }), "{e}");
    let e = op.run_cpu(&q, &k, 100, 0, &mut HostTensor::full(DType::I32, &[1, 2, 7], 0.0), &mut bc).unwrap_err();
    assert!(matches!(e, KernelError::Shape { arg: "block_idx", .. }), "{e}");
    let e = op.run_cpu(&q, &HostTensor::full(DType::F32, &[1, 2, 100, 64], 0.0), 100, 0, &mut bi, &mut bc);
    assert!(matches!(e, Err(KernelError::DType { arg: "k", .. })));
    assert!(HipSelect::cpu(2, 64, 0, 8, 16).is_err());
    // All keys in the window: nothing to search, count 0.
    op.run_cpu(&q, &k, 100, 100, &mut bi, &mut bc).unwrap();
    assert!(bc.to_f64().iter().all(|&x| x == 0.0));
    assert!(bi.to_f64().iter().all(|&x| x == -1.0));
}

#[test]
fn hip_kernels_emit_cuda() {
    use tessera_codegen::emit::emit_cuda;
    use tessera_dsl_support::KernelConfig;
    use tessera_kernels::hip::{HipFinalize, HipInitNodes, HipScoreChildren, HipSelectChildren};
    let k = KernelConfig::from_pairs(&[("TOPK", 256), ("WARPS", 4)]);
    let s = KernelConfig::from_pairs(&[("GROUP", 4), ("HEAD_DIM", 128), ("BK", 2), ("CHILD_TILE", 64), ("WARPS", 4)]);
    for kern in [
        HipInitNodes::build(&k).unwrap(),
        HipScoreChildren::build(&s).unwrap(),
        HipSelectChildren::build(&k).unwrap(),
        HipFinalize::build(&k).unwrap(),
    ] {
        let e = emit_cuda(&kern);
        assert!(!format!("{e:?}").is_empty(), "{}", kern.name);
    }
}
