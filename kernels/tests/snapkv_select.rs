//! Interpreter tests of the SnapKV selection + compression kernels against the f64
//! reference.

use rand::rngs::StdRng;
use rand::SeedableRng;
use tessera_codegen::host::HostTensor;
use tessera_codegen::ir::DType;
use tessera_kernels::reference::DecodeDims;
use tessera_kernels::snapkv::{pool, reference, Pool, SnapKvCompress};
use tessera_kernels::KernelError;

#[allow(clippy::too_many_arguments)]
fn case(b: usize, h: usize, g: usize, w: usize, t: usize, c: usize, ks: usize, kind: Pool, tile: usize, seed: u64) {
    let d = 64;
    let cap = t + 5;
    let mut rng = StdRng::seed_from_u64(seed);
    let q = HostTensor::random(DType::BF16, &[b, h, g * w, d], -1.0, 1.0, &mut rng);
    let k = HostTensor::random(DType::BF16, &[b, h, cap, d], -1.0, 1.0, &mut rng);
    let v = HostTensor::random(DType::BF16, &[b, h, cap, d], -1.0, 1.0, &mut rng);
    let keep = c - w;
    let max_cand = (t - w).div_ceil(tile) * keep;
    let op = SnapKvCompress::cpu(g, w, d, c, ks, kind, tile, max_cand).unwrap();
    let mut votes = HostTensor::full(DType::F32, &[b, h, cap], f64::NAN);
    let mut ki = HostTensor::full(DType::I32, &[b, h, keep], -9.0);
    let mut kc = HostTensor::full(DType::I32, &[b, h], -9.0);
    let mut ko = HostTensor::full(DType::BF16, &[b, h, c, d], f64::NAN);
    let mut vo = HostTensor::full(DType::BF16, &[b, h, c, d], f64::NAN);
    let plan = op.run_cpu(&q, &k, &v, t, &mut votes, &mut ki, &mut kc, &mut ko, &mut vo).unwrap();
    let dims = DecodeDims { batch: b, kv_heads: h, group: g, cap, head_dim: d };
    let scale = tessera_kernels::default_scale_log2(d) as f64;
    let want = reference(dims, w, &q.to_f64(), &k.to_f64(), t, c, ks, kind, scale);
    let (vt, it, ct) = (votes.to_f64(), ki.to_f64(), kc.to_f64());
    let (kf, vf, kof, vof) = (k.to_f64(), v.to_f64(), ko.to_f64(), vo.to_f64());
    let prefix = t - w;
    for (bh, (pooled, kept)) in want.iter().enumerate() {
        // Pooled votes of the kernel's votes vs the reference.
        let got: Vec<f32> = vt[bh * cap..][..prefix].iter().map(|&x| x as f32).collect();
        let gp = pool(&got, ks, kind);
        let mag = pooled.iter().fold(1e-30f64, |m, x| m.max(x.abs()));
        for (j, (a, r)) in gp.iter().zip(pooled).enumerate() {
            assert!((*a as f64 - r).abs() <= 1e-4 * mag, "(b,h) {bh} pos {j}: {a} vs {r}");
        }
        assert_eq!(ct[bh] as usize, kept.len());
        let sel: Vec<usize> = it[bh * keep..][..kept.len()].iter().map(|&x| x as usize).collect();
        assert!(sel.windows(2).all(|p| p[0] < p[1]), "not ascending: {sel:?}");
        // Same selection up to near-ties: the kept reference scores match the top scores.
        let mut sorted = pooled.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        let mut got_scores: Vec<f64> = sel.iter().map(|&j| pooled[j]).collect();
        got_scores.sort_by(|a, b| b.total_cmp(a));
        for (x, y) in got_scores.iter().zip(&sorted) {
            assert!((x - y).abs() <= 1e-4 * mag, "(b,h) {bh}: kept score {x} vs top {y}");
        }
        // The compressed cache rows.
        let rows: Vec<usize> = sel.iter().copied().chain(t - w..t).collect();
        assert_eq!(rows.len(), c);
        for (r, &pos) in rows.iter().enumerate() {
            let (src, dst) = ((bh * cap + pos) * d, (bh * c + r) * d);
            assert_eq!(&kof[dst..dst + d], &kf[src..src + d], "(b,h) {bh} row {r}");
            assert_eq!(&vof[dst..dst + d], &vf[src..src + d], "(b,h) {bh} row {r}");
        }
    }
    eprintln!("snapkv B{b} Hkv{h} G{g} w{w} t{t} C{c} k{ks} {kind:?} tile{tile}: {} splits ok", plan.splits);
}

#[test]
fn snapkv_matches_reference_on_odd_shapes() {
    case(1, 1, 1, 4, 37, 12, 3, Pool::Max, 16, 1);
    case(2, 2, 4, 8, 300, 40, 5, Pool::Avg, 64, 2);
    case(1, 3, 2, 5, 517, 69, 7, Pool::Max, 128, 3);
    case(1, 2, 3, 3, 1100, 35, 4, Pool::Avg, 256, 4); // even kernel, many splits
    case(1, 1, 2, 16, 200, 199, 1, Pool::Max, 256, 5); // keeps all but one prefix key
}

#[test]
fn snapkv_refuses_bad_arguments() {
    assert!(SnapKvCompress::cpu(2, 8, 64, 8, 5, Pool::Max, 64, 64).is_err()); // C == w
    assert!(SnapKvCompress::cpu(2, 8, 64, 100, 5, Pool::Max, 64, 512).is_err()); // C − w > tile
    let op = SnapKvCompress::cpu(2, 4, 64, 20, 3, Pool::Avg, 32, 64).unwrap();
    let q = HostTensor::full(DType::BF16, &[1, 1, 8, 64], 0.0);
    let k = HostTensor::full(DType::BF16, &[1, 1, 100, 64], 0.0);
    let mut votes = HostTensor::full(DType::F32, &[1, 1, 100], 0.0);
    let mut ki = HostTensor::full(DType::I32, &[1, 1, 16], 0.0);
    let mut kc = HostTensor::full(DType::I32, &[1, 1], 0.0);
    let mut ko = HostTensor::full(DType::BF16, &[1, 1, 20, 64], 0.0);
    let mut vo = ko.clone();
    // t <= C: nothing to compress.
    let e = op.run_cpu(&q, &k, &k, 20, &mut votes, &mut ki, &mut kc, &mut ko, &mut vo).unwrap_err();
    assert!(matches!(e, KernelError::Invalid { .. }), "{e}");
    // 96 prefix keys / tile 32 = 3 tiles x 16 > max_cand 64? 48: fine; 100 keys -> 3 tiles.
    op.run_cpu(&q, &k, &k, 100, &mut votes, &mut ki, &mut kc, &mut ko, &mut vo).unwrap();
    let e = op.run_cpu(
        &HostTensor::full(DType::BF16, &[1, 1, 9, 64], 0.0),
        &k,
        &k,
        100,
        &mut votes,
        &mut ki,
        &mut kc,
        &mut ko,
        &mut vo,
    );
    assert!(matches!(e, Err(KernelError::Shape { arg: "q_obs", .. })));
    let e = op.run_cpu(&q, &k, &k, 101, &mut votes, &mut ki, &mut kc, &mut ko, &mut vo);
    assert!(matches!(e, Err(KernelError::Invalid { .. })));
}

#[test]
fn snapkv_kernels_emit_cuda() {
    let op = SnapKvCompress::cpu(4, 32, 128, 2048, 7, Pool::Max, 4096, 4096 * 2).unwrap();
    let cfgs = op.configs();
    use tessera_kernels::snapkv::{
        SnapkvCompress, SnapkvMerge, SnapkvPoolTopk, SnapkvRowMerge, SnapkvRowStats, SnapkvVotes,
    };
    let ks = [
        SnapkvRowStats::build(&cfgs[0]).unwrap(),
        SnapkvRowMerge::build(&cfgs[1]).unwrap(),
        SnapkvVotes::build(&cfgs[2]).unwrap(),
        SnapkvPoolTopk::build(&cfgs[3]).unwrap(),
        SnapkvMerge::build(&cfgs[4]).unwrap(),
        SnapkvCompress::build(&cfgs[5]).unwrap(),
    ];
    for k in &ks {
        assert!(!format!("{:?}", tessera_codegen::emit::emit_cuda(k)).is_empty(), "{}", k.name);
    }
}
