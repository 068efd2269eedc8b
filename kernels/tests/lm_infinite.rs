//! LM-Infinite decode on the interpreter: keys stored before RoPE, rotated in the kernel at
//! `max(p, n − 1 − cap)`, against an f64 reference; with a cap beyond the context it must
//! equal plain sink + window decode over keys rotated at their true positions.

use rand::rngs::StdRng;
use rand::SeedableRng;
use tessera_codegen::host::HostTensor;
use tessera_codegen::ir::DType;
use tessera_kernels::reference::{lm_infinite, rope_rotate_half, DecodeDims};
use tessera_kernels::{DecodeParams, KernelError, LmInfiniteArgs, LmInfiniteDecode, RopeTable, SinkWindowDecode};

struct Problem {
    q: HostTensor,
    k: HostTensor,
    v: HostTensor,
    rope: RopeTable,
    dims: (usize, usize, usize, usize, usize), // b, hkv, g, n, d
}

fn problem(b: usize, hkv: usize, g: usize, n: usize, d: usize, seed: u64) -> Problem {
    let mut rng = StdRng::seed_from_u64(seed);
    let q = HostTensor::random(DType::BF16, &[b, hkv * g, d], -1.0, 1.0, &mut rng);
    let k = HostTensor::random(DType::BF16, &[b, hkv, n, d], -1.0, 1.0, &mut rng);
    let v = HostTensor::random(DType::BF16, &[b, hkv, n, d], -1.0, 1.0, &mut rng);
    Problem { q, k, v, rope: RopeTable::new(d, n + 3, 10000.0, 1.0), dims: (b, hkv, g, n, d) }
}

/// `(out [b, hq, d], lse [b, hq])` of the capped Λ-shaped attention in f64.
fn reference(p: &Problem, a: LmInfiniteArgs, scale_log2: f64) -> (Vec<f64>, Vec<f64>) {
    let (b, hkv, g, n, d) = p.dims;
    let dims = DecodeDims { batch: b, kv_heads: hkv, group: g, cap: n, head_dim: d };
    let (cos, sin) = (p.rope.cos.to_f64(), p.rope.sin.to_f64());
    let args = (a.seq_len, a.sink, a.window, a.cap);
    lm_infinite(dims, &p.q.to_f64(), &p.k.to_f64(), &p.v.to_f64(), &cos, &sin, args, scale_log2)
}

fn params(g: usize, d: usize, block_n: usize) -> DecodeParams {
    DecodeParams { block_n, max_splits: 4, write_lse: true, ..DecodeParams::new(g, d) }
}

fn run(p: &Problem, params: DecodeParams, a: LmInfiniteArgs) -> (HostTensor, HostTensor) {
    let (b, hkv, g, _, d) = p.dims;
    let op = LmInfiniteDecode::cpu(params).unwrap();
    let mut out = HostTensor::full(DType::BF16, &[b, hkv * g, d], f64::NAN);
    let mut lse = HostTensor::full(DType::F32, &[b, hkv * g], f64::NAN);
    op.run_cpu(&p.q, &p.k, &p.v, &p.rope.cos, &p.rope.sin, a, &mut out, Some(&mut lse)).unwrap();
    (out, lse)
}

fn rel_err(got: &[f64], want: &[f64]) -> f64 {
    let scale = want.iter().fold(1e-9f64, |m, x| m.max(x.abs()));
    got.iter().zip(want).fold(0.0f64, |m, (x, y)| m.max((x - y).abs() / scale))
}

#[test]
fn capped_distances_match_the_reference() {
    // (b, hkv, g, n, d, sink, window, cap, block_n): caps below, inside and above the window.
    let cases = [
        (2, 2, 4, 300, 64, 4, 100, 50, 32),
        (1, 3, 3, 257, 128, 16, 64, 200, 64),
        (2, 1, 8, 130, 64, 0, 500, 20, 32),
        (1, 2, 1, 99, 64, 120, 10, 1, 32),
    ];
    for (i, &(b, hkv, g, n, d, sink, window, cap, bn)) in cases.iter().enumerate() {
        let p = problem(b, hkv, g, n, d, 90 + i as u64);
        let a = LmInfiniteArgs { seq_len: n, sink, window, cap };
        let prm = params(g, d, bn);
        let (out, lse) = run(&p, prm.clone(), a);
        let (want, want_lse) = reference(&p, a, prm.scale_log2 as f64);
        let e = rel_err(&out.to_f64(), &want);
        assert!(e <= 1e-2, "case {i}: relative error {e:e}");
        let el = rel_err(&lse.to_f64(), &want_lse);
        assert!(el <= 1e-3, "case {i}: lse error {el:e}");
    }
}

#[test]
fn a_cap_beyond_the_context_is_plain_sink_window_over_rotated_keys() {
    let (b, hkv, g, n, d) = (2, 2, 4, 333, 64);
    let p = problem(b, hkv, g, n, d, 97);
    let a = LmInfiniteArgs { seq_len: n, sink: 8, window: 120, cap: 10 * n };
    let (out, _) = run(&p, params(g, d, 32), a);
    // The same keys rotated at their true positions, then the ordinary kernel.
    let (kf, cos, sin) = (p.k.to_f64(), p.rope.cos.to_f64(), p.rope.sin.to_f64());
    let mut kr = vec![0.0; kf.len()];
    for row in 0..b * hkv * n {
        let pos = row % n;
        kr[row * d..(row + 1) * d].copy_from_slice(&rope_rotate_half(&kf[row * d..(row + 1) * d], &cos, &sin, pos, d));
    }
    let k_rot = HostTensor::from_f64(DType::BF16, &[b, hkv, n, d], &kr);
    let sw = SinkWindowDecode::cpu(params(g, d, 32)).unwrap();
    let mut want = HostTensor::full(DType::BF16, &[b, hkv * g, d], f64::NAN);
    let mut lse = HostTensor::full(DType::F32, &[b, hkv * g], f64::NAN);
    sw.run_cpu(&p.q, &k_rot, &p.v, n, a.sink, a.window, &mut want, Some(&mut lse)).unwrap();
    let e = rel_err(&out.to_f64(), &want.to_f64());
    assert!(e <= 1e-2, "relative error {e:e}");
    // And the cap changes the result when it bites.
    let (capped, _) = run(&p, params(g, d, 32), LmInfiniteArgs { cap: 16, ..a });
    assert!(rel_err(&capped.to_f64(), &want.to_f64()) > 1e-2, "a cap of 16 must change the output");
}

#[test]
fn bad_arguments_are_refused_before_running() {
    let p = problem(1, 2, 2, 64, 64, 98);
    let op = LmInfiniteDecode::cpu(params(2, 64, 32)).unwrap();
    let mut out = HostTensor::full(DType::BF16, &[1, 4, 64], f64::NAN);
    let mut lse = HostTensor::full(DType::F32, &[1, 4], f64::NAN);
    let a = LmInfiniteArgs { seq_len: 64, sink: 4, window: 16, cap: 8 };
    // Tables shorter than the sequence.
    let short = RopeTable::new(64, 32, 10000.0, 1.0);
    let e = op.run_cpu(&p.q, &p.k, &p.v, &short.cos, &short.sin, a, &mut out, Some(&mut lse)).unwrap_err();
    assert!(matches!(e, KernelError::Invalid { .. }), "{e}");
    // A zero cap.
    let e = op
        .run_cpu(&p.q, &p.k, &p.v, &p.rope.cos, &p.rope.sin, LmInfiniteArgs { cap: 0, ..a }, &mut out, Some(&mut lse))
        .unwrap_err();
    assert!(matches!(e, KernelError::Invalid { .. }), "{e}");
    // Tables of another head dim.
    let wide = RopeTable::new(128, 64, 10000.0, 1.0);
    let e = op.run_cpu(&p.q, &p.k, &p.v, &wide.cos, &wide.sin, a, &mut out, Some(&mut lse)).unwrap_err();
    assert!(matches!(e, KernelError::Shape { arg: "cos", .. }), "{e}");
}

#[test]
fn the_gpu_case_runs_on_the_interpreter() {
    use tessera_kernels::cases::{KernelCase, LmInfiniteCase};
    let dims = DecodeDims { batch: 1, kv_heads: 2, group: 2, cap: 400, head_dim: 64 };
    let args = LmInfiniteArgs { seq_len: 399, sink: 4, window: 150, cap: 60 };
    let mut c = LmInfiniteCase::new(dims, args, params(2, 64, 32), 99);
    c.run_cpu().unwrap();
    let e = c.check().unwrap_or_else(|e| panic!("{}: {e}", c.name()));
    assert!(e <= 1e-2);
}
