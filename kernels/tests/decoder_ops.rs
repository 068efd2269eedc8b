//! Interpreter tests of the decoder's row kernels (RMSNorm, add + RMSNorm, RoPE, SwiGLU,
//! embedding, argmax) against f64 references that copy the formulas of the decoder's CPU
//! path (`decoder/src/cpu.rs`: `rms_norm`, `CpuModel::rope`, the SwiGLU line of
//! `CpuModel::forward`). Odd widths, partial tiles, poisoned outputs.

use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tessera_codegen::host::HostTensor;
use tessera_codegen::ir::DType;
use tessera_kernels::decoder_ops::norm_block;
use tessera_kernels::{AddRmsNorm, Argmax, Embedding, KernelError, RmsNorm, Rope, RopeTable, SwiGlu};

const BF16_TOL: f64 = 1e-2;
const F32_TOL: f64 = 1e-5;

fn poisoned(dtype: DType, shape: &[usize]) -> HostTensor {
    HostTensor::full(dtype, shape, if dtype == DType::I32 { -7.0 } else { f64::NAN })
}

/// Largest `|got − want| / (|want| + floor)`; panics on NaN (an unwritten output).
fn max_rel(name: &str, got: &[f64], want: &[f64], floor: f64) -> f64 {
    assert_eq!(got.len(), want.len(), "{name}: lengths");
    let mut worst = 0f64;
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(g.is_finite(), "{name}: element {i} is {g} (want {w})");
        worst = worst.max((g - w).abs() / (w.abs() + floor));
    }
    worst
}

fn check(name: &str, got: &[f64], want: &[f64], tol: f64) {
    let e = max_rel(name, got, want, 1e-2);
    eprintln!("{name:<56} max rel err {e:.2e}");
    assert!(e <= tol, "{name}: max rel err {e:.2e} > {tol:.0e}");
}

/// `decoder::cpu::rms_norm` in f64: `w · x / sqrt(mean(x²) + eps)`.
fn rms_norm_ref(x: &[f64], w: &[f64], eps: f64) -> Vec<f64> {
    let ms = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
    let r = 1.0 / (ms + eps).sqrt();
    x.iter().zip(w).map(|(v, g)| g * (v * r)).collect()
}

#[test]
fn rms_norm_rows_odd_widths() {
    let t0 = Instant::now();
    let mut rng = StdRng::seed_from_u64(1);
    let eps = 1e-5f32;
    for (r, h, block) in [(3, 577, 256), (2, 1000, 128), (3, 576, norm_block(576)), (1, 4096, 1024)] {
        let x = HostTensor::random(DType::F32, &[r, h], -2.0, 2.0, &mut rng);
        let w = HostTensor::random(DType::F32, &[h], 0.5, 1.5, &mut rng);
        let mut out = poisoned(DType::BF16, &[r, h]);
        RmsNorm::cpu(block, 4, eps).unwrap().run_cpu(&x, &w, &mut out).unwrap();
        let (xv, wv) = (x.to_f64(), w.to_f64());
        let want: Vec<f64> = xv.chunks(h).flat_map(|row| rms_norm_ref(row, &wv, eps as f64)).collect();
        check(&format!("rms_norm r={r} h={h} block={block}"), &out.to_f64(), &want, BF16_TOL);
    }
    eprintln!("rms_norm_rows_odd_widths: {:.2?}", t0.elapsed());
}

#[test]
fn add_rms_norm_writes_residual_and_norm() {
    let t0 = Instant::now();
    let mut rng = StdRng::seed_from_u64(2);
    let eps = 1e-6f32;
    for (r, h, block) in [(3, 577, 256), (2, 1000, 512), (2, 576, 1024)] {
        let x = HostTensor::random(DType::BF16, &[r, h], -1.0, 1.0, &mut rng);
        let res = HostTensor::random(DType::F32, &[r, h], -3.0, 3.0, &mut rng);
        let w = HostTensor::random(DType::F32, &[h], -1.5, 1.5, &mut rng);
        let mut res_out = poisoned(DType::F32, &[r, h]);
        let mut out = poisoned(DType::BF16, &[r, h]);
        AddRmsNorm::cpu(block, 4, eps).unwrap().run_cpu(&x, &res, &w, &mut res_out, &mut out).unwrap();
        let sum: Vec<f64> = x.to_f64().iter().zip(res.to_f64()).map(|(a, b)| a + b).collect();
        check(&format!("add_rms_norm residual r={r} h={h}"), &res_out.to_f64(), &sum, F32_TOL);
        let wv = w.to_f64();
        let want: Vec<f64> = sum.chunks(h).flat_map(|row| rms_norm_ref(row, &wv, eps as f64)).collect();
        check(&format!("add_rms_norm out r={r} h={h} block={block}"), &out.to_f64(), &want, BF16_TOL);
    }
    eprintln!("add_rms_norm_writes_residual_and_norm: {:.2?}", t0.elapsed());
}

/// `CpuModel::rope` in f64 on one head row.
fn rope_ref(head: &mut [f64], pos: usize, base: f64, scale: f64, interleaved: bool) {
    let d = head.len();
    for i in 0..d / 2 {
        let f = 1.0 / base.powf((2 * i) as f64 / d as f64);
        let (sin, cos) = (pos as f64 / scale * f).sin_cos();
        let (a, b) = if interleaved { (2 * i, 2 * i + 1) } else { (i, i + d / 2) };
        let (x0, x1) = (head[a], head[b]);
        head[a] = x0 * cos - x1 * sin;
        head[b] = x0 * sin + x1 * cos;
    }
}

/// (tokens, q heads, kv heads, head_dim, heads per program, base, scale, positions)
type RopeCase = (usize, usize, usize, usize, usize, f64, f64, &'static [i32]);

#[test]
fn rope_both_pairings_gqa_shapes() {
    let t0 = Instant::now();
    let mut rng = StdRng::seed_from_u64(3);
    let cases: [RopeCase; 3] = [
        (3, 9, 3, 64, 4, 100000.0, 1.0, &[0, 17, 4095]),
        (2, 32, 8, 128, 8, 500000.0, 1.0, &[5, 3001]),
        (4, 5, 1, 32, 2, 10000.0, 2.0, &[1, 2, 3, 999]),
    ];
    for &(t, hq, hkv, d, bh, base, scale, pos) in &cases {
        let table = RopeTable::new(d, 4096, base, scale);
        for interleaved in [true, false] {
            let q0 = HostTensor::random(DType::BF16, &[t, hq, d], -2.0, 2.0, &mut rng);
            let k0 = HostTensor::random(DType::BF16, &[t, hkv, d], -2.0, 2.0, &mut rng);
            let positions = HostTensor::from_f64(DType::I32, &[t], &pos.iter().map(|&p| p as f64).collect::<Vec<_>>());
            let (mut q, mut k) = (q0.clone(), k0.clone());
            Rope::cpu(d, bh, interleaved).unwrap().run_cpu(&mut q, &mut k, &positions, &table).unwrap();
            for (name, x0, x) in [("q", &q0, &q), ("k", &k0, &k)] {
                let mut want = x0.to_f64();
                let heads = x0.shape[1];
                for (row, head) in want.chunks_mut(d).enumerate() {
                    rope_ref(head, pos[row / heads] as usize, base, scale, interleaved);
                }
                let label = format!("rope {name} t={t} h={heads} d={d} bh={bh} interleaved={interleaved}");
                check(&label, &x.to_f64(), &want, BF16_TOL);
                // Position 0 is the identity, bit for bit.
                if pos[0] == 0 {
                    let n = heads * d;
                    assert_eq!(&x.to_f64()[..n], &x0.to_f64()[..n], "{label}: position 0");
                }
            }
        }
    }
    eprintln!("rope_both_pairings_gqa_shapes: {:.2?}", t0.elapsed());
}

#[test]
fn swiglu_odd_widths_and_large_gates() {
    let t0 = Instant::now();
    let mut rng = StdRng::seed_from_u64(4);
    for (r, f, block, lim) in [(3, 1000, 512, 4.0), (2, 1537, 1024, 4.0), (2, 577, 128, 60.0)] {
        let gate = HostTensor::random(DType::BF16, &[r, f], -lim, lim, &mut rng);
        let up = HostTensor::random(DType::BF16, &[r, f], -2.0, 2.0, &mut rng);
        let mut out = poisoned(DType::BF16, &[r, f]);
        SwiGlu::cpu(block, 4).unwrap().run_cpu(&gate, &up, &mut out).unwrap();
        // The SwiGLU line of `CpuModel::forward`: g / (1 + exp(-g)) * u.
        let want: Vec<f64> = gate.to_f64().iter().zip(up.to_f64()).map(|(g, u)| g / (1.0 + (-g).exp()) * u).collect();
        check(&format!("swiglu r={r} f={f} block={block} |gate|<={lim}"), &out.to_f64(), &want, BF16_TOL);
    }
    eprintln!("swiglu_odd_widths_and_large_gates: {:.2?}", t0.elapsed());
}

#[test]
fn embedding_gathers_rows_exactly() {
    let t0 = Instant::now();
    let mut rng = StdRng::seed_from_u64(5);
    let (v, h) = (50, 577);
    let ids_v = [7usize, 0, 49, 7, 31];
    let ids = HostTensor::from_f64(DType::I32, &[ids_v.len()], &ids_v.iter().map(|&i| i as f64).collect::<Vec<_>>());
    for (dtype, block) in [(DType::BF16, 256), (DType::F32, 1024)] {
        let table = HostTensor::random(dtype, &[v, h], -1.0, 1.0, &mut rng);
        let mut out = poisoned(DType::F32, &[ids_v.len(), h]);
        Embedding::cpu(dtype, block).unwrap().run_cpu(&ids, &table, &mut out).unwrap();
        let tv = table.to_f64();
        let want: Vec<f64> = ids_v.iter().flat_map(|&i| tv[i * h..(i + 1) * h].to_vec()).collect();
        assert_eq!(out.to_f64(), want, "embedding {dtype:?}");
        let bad = HostTensor::from_f64(DType::I32, &[5], &[3.0, 0.0, 1.0, 50.0, 2.0]);
        let err = Embedding::cpu(dtype, block).unwrap().run_cpu(&bad, &table, &mut out).unwrap_err();
        assert!(matches!(err, KernelError::IndexOutOfRange { arg: "ids", value: 50, .. }), "{err}");
    }
    eprintln!("embedding_gathers_rows_exactly: {:.2?}", t0.elapsed());
}

/// First maximum (smallest id among equal maxima), NaN never wins, all -inf/NaN → 0.
fn argmax_ref(row: &[f64]) -> i32 {
    let mut best = (f64::NEG_INFINITY, 0);
    for (i, &x) in row.iter().enumerate() {
        if x > best.0 {
            best = (x, i);
        }
    }
    best.1 as i32
}

#[test]
fn argmax_vocab_rows_ties_to_smaller_id() {
    let t0 = Instant::now();
    let mut rng = StdRng::seed_from_u64(6);
    let v = 49152;
    let r = 5;
    let mut logits = HostTensor::random(DType::F32, &[r, v], -10.0, 10.0, &mut rng);
    let at = |row: usize, i: usize| row * v + i;
    // Row 1: ties in the same lane (100, 100 + 1024) and across lanes (70 < 3000): 70 wins.
    for i in [3000, 100, 100 + 1024, 70, 49151] {
        logits.set_f64(at(1, i), 50.0);
    }
    // Row 2: the maximum in the last element.
    logits.set_f64(at(2, v - 1), 11.0);
    // Row 3: NaNs around a finite maximum.
    for i in [0, 5, 40000] {
        logits.set_f64(at(3, i), f64::NAN);
    }
    logits.set_f64(at(3, 12345), 20.0);
    // Row 4: all -inf → 0.
    for i in 0..v {
        logits.set_f64(at(4, i), f64::NEG_INFINITY);
    }
    let lv = logits.to_f64();
    let want: Vec<f64> = lv.chunks(v).map(|row| argmax_ref(row) as f64).collect();
    assert_eq!(want, vec![want[0], 70.0, (v - 1) as f64, 12345.0, 0.0]);
    for (block, warps) in [(1024, 4), (2048, 8)] {
        let mut out = poisoned(DType::I32, &[r]);
        Argmax::cpu(DType::F32, block, warps).unwrap().run_cpu(&logits, &mut out).unwrap();
        assert_eq!(out.to_f64(), want, "argmax f32 block={block}");
    }
    eprintln!("argmax f32 [{r}, {v}]: {:.2?}", t0.elapsed());

    // bf16 logits, odd vocabulary, many exact ties from coarse values.
    let t1 = Instant::now();
    for vb in [577, 1000] {
        let vals: Vec<f64> = (0..3 * vb).map(|_| rng.random_range(0..40) as f64 * 0.25).collect();
        let lb = HostTensor::from_f64(DType::BF16, &[3, vb], &vals);
        let want: Vec<f64> = lb.to_f64().chunks(vb).map(|row| argmax_ref(row) as f64).collect();
        let mut out = poisoned(DType::I32, &[3]);
        Argmax::cpu(DType::BF16, 256, 4).unwrap().run_cpu(&lb, &mut out).unwrap();
        assert_eq!(out.to_f64(), want, "argmax bf16 v={vb}");
    }
    eprintln!("argmax bf16: {:.2?}", t1.elapsed());
}

#[test]
fn typed_errors_before_launch() {
    let f32t = |s: &[usize]| HostTensor::full(DType::F32, s, 0.0);
    let bf = |s: &[usize]| HostTensor::full(DType::BF16, s, 0.0);
    let norm = RmsNorm::cpu(256, 4, 1e-5).unwrap();
    let e = norm.run_cpu(&bf(&[2, 8]), &f32t(&[8]), &mut bf(&[2, 8])).unwrap_err();
    assert!(matches!(e, KernelError::DType { arg: "x", .. }), "{e}");
    let e = norm.run_cpu(&f32t(&[2, 8]), &f32t(&[9]), &mut bf(&[2, 8])).unwrap_err();
    assert!(matches!(e, KernelError::Shape { arg: "weight", .. }), "{e}");
    assert!(matches!(RmsNorm::cpu(100, 4, 1e-5), Err(KernelError::Invalid { .. })));

    let add = AddRmsNorm::cpu(256, 4, 1e-5).unwrap();
    let e = add.run_cpu(&bf(&[2, 8]), &bf(&[2, 8]), &f32t(&[8]), &mut f32t(&[2, 8]), &mut bf(&[2, 8])).unwrap_err();
    assert!(matches!(e, KernelError::DType { arg: "residual", .. }), "{e}");
    let e = add.run_cpu(&bf(&[2, 8]), &f32t(&[2, 8]), &f32t(&[8]), &mut f32t(&[3, 8]), &mut bf(&[2, 8])).unwrap_err();
    assert!(matches!(e, KernelError::Shape { arg: "residual_out", .. }), "{e}");

    let rope = Rope::cpu(64, 4, true).unwrap();
    let table = RopeTable::new(64, 16, 10000.0, 1.0);
    let pos = HostTensor::from_f64(DType::I32, &[2], &[3.0, 16.0]);
    let e = rope.run_cpu(&mut bf(&[2, 3, 64]), &mut bf(&[2, 1, 64]), &pos, &table).unwrap_err();
    assert!(matches!(e, KernelError::IndexOutOfRange { arg: "positions", value: 16, hi: 16, .. }), "{e}");
    let pos = HostTensor::from_f64(DType::I32, &[2], &[3.0, 4.0]);
    let e = rope.run_cpu(&mut bf(&[2, 3, 64]), &mut bf(&[1, 1, 64]), &pos, &table).unwrap_err();
    assert!(matches!(e, KernelError::Shape { arg: "k", .. }), "{e}");
    let e = rope.run_cpu(&mut bf(&[2, 3, 64]), &mut bf(&[2, 1, 64]), &pos, &RopeTable::new(128, 16, 1e4, 1.0));
    assert!(matches!(e.unwrap_err(), KernelError::Shape { arg: "cos", .. }));
    assert!(matches!(Rope::cpu(48, 4, true), Err(KernelError::Invalid { .. })));

    let sw = SwiGlu::cpu(256, 4).unwrap();
    let e = sw.run_cpu(&bf(&[2, 10]), &bf(&[2, 11]), &mut bf(&[2, 10])).unwrap_err();
    assert!(matches!(e, KernelError::Shape { arg: "up", .. }), "{e}");

    let emb = Embedding::cpu(DType::BF16, 256).unwrap();
    let ids = HostTensor::from_f64(DType::I32, &[1], &[0.0]);
    let e = emb.run_cpu(&ids, &f32t(&[4, 8]), &mut f32t(&[1, 8])).unwrap_err();
    assert!(matches!(e, KernelError::DType { arg: "table", .. }), "{e}");
    assert!(matches!(Embedding::cpu(DType::I32, 256), Err(KernelError::Invalid { .. })));

    let am = Argmax::cpu(DType::F32, 1024, 4).unwrap();
    let e = am.run_cpu(&f32t(&[2, 8]), &mut f32t(&[2])).unwrap_err();
    assert!(matches!(e, KernelError::DType { arg: "out", .. }), "{e}");
    let e = am.run_cpu(&f32t(&[2, 0]), &mut HostTensor::full(DType::I32, &[2], 0.0)).unwrap_err();
    assert!(matches!(e, KernelError::Invalid { .. }), "{e}");
}

/// Every kernel of the module, at the decoder's shapes, goes through the CUDA emitter (no
/// GPU or NVRTC needed; the GPU run is the decoder's H200 check).
#[test]
fn decoder_kernels_emit_cuda() {
    use tessera_codegen::emit::emit_cuda;
    use tessera_dsl_support::KernelConfig;
    use tessera_kernels::decoder_ops::*;
    let b = |block: i64, warps: i64| KernelConfig::from_pairs(&[("BLOCK", block), ("WARPS", warps)]);
    let mut kernels = vec![
        RmsNormRows::build(&b(1024, 4)).unwrap(),
        RmsNormRows::build(&b(4096, 8)).unwrap(),
        AddRmsNormRows::build(&b(1024, 4)).unwrap(),
        SwigluRows::build(&b(1024, 4)).unwrap(),
        EmbeddingBf16::build(&b(1024, 4)).unwrap(),
        EmbeddingF32::build(&b(1024, 4)).unwrap(),
        ArgmaxRowsF32::build(&b(1024, 4)).unwrap(),
        ArgmaxRowsBf16::build(&b(2048, 8)).unwrap(),
    ];
    for (d, il) in [(64, 1), (128, 0)] {
        let cfg = KernelConfig::from_pairs(&[("HEAD_DIM", d), ("BLOCK_H", 4), ("INTERLEAVED", il), ("WARPS", 4)]);
        kernels.push(RopeQk::build(&cfg).unwrap());
    }
    for k in &kernels {
        let e = emit_cuda(k);
        assert!(!format!("{e:?}").is_empty(), "{}", k.name);
    }
}
