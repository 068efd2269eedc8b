//! CPU-side costs of the kernel pipeline (no GPU): building a kernel's IR from its
//! `#[kernel]` body and emitting its CUDA C++, then NVRTC's compile of that source to sm_90a
//! PTX (skipped where NVRTC is absent) — what the autotuner pays per candidate — and a
//! small decode on the interpreter (what CI's kernel tests pay).
//!
//! `cargo bench -p tessera-kernels --bench codegen`; figures in BENCHMARKS.md.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use rand::rngs::StdRng;
use rand::SeedableRng;
use tessera_codegen::emit::emit_cuda;
use tessera_codegen::host::HostTensor;
use tessera_codegen::ir::DType;
use tessera_kernels::registry::{find, registry};
use tessera_kernels::{DecodeParams, DenseDecode};

/// Build + emit of single kernels at their example configs: a small one (the LSE
/// combine), the dense decode split (fragments, pipelined staging) and tree verification
/// (the largest body).
fn build_and_emit(c: &mut Criterion) {
    let mut g = c.benchmark_group("build_and_emit");
    for name in ["attn_combine", "dense_decode_split", "tree_verify_split"] {
        let e = find(name).unwrap_or_else(|| panic!("{name} is registered"));
        let cfg = (e.example_config)();
        g.bench_function(name, |b| b.iter(|| emit_cuda(&(e.build)(black_box(&cfg)).unwrap()).source.len()));
    }
    g.finish();
    // Every registered kernel once: what `tessera kernels` + `compile --emit cuda` of the
    // whole registry costs.
    let all: Vec<_> = registry().into_iter().map(|e| (e, (e.example_config)())).collect();
    c.bench_function("build_and_emit/whole_registry", |b| {
        b.iter(|| all.iter().map(|(e, cfg)| emit_cuda(&(e.build)(cfg).unwrap()).source.len()).sum::<usize>())
    });
}

/// NVRTC (the `cudarc` wrapper `tessera_runtime::compile_ptx`) on the emitted dense
/// decode split: the dominant per-candidate cost of autotuning.
fn nvrtc_compile(c: &mut Criterion) {
    let e = find("dense_decode_split").expect("registered");
    let emitted = emit_cuda(&(e.build)(&(e.example_config)()).unwrap());
    if let Err(err) = tessera_runtime::compile_ptx(&emitted.source, &emitted.entry, "sm_90a") {
        eprintln!("nvrtc/dense_decode_split skipped: {err}");
        return;
    }
    c.bench_function("nvrtc/dense_decode_split_sm90a", |b| {
        b.iter(|| tessera_runtime::compile_ptx(&emitted.source, &emitted.entry, "sm_90a").unwrap().ptx.len())
    });
}

/// Dense decode on the interpreter: B1, 8 KV heads × GQA 4, d 128, 1000 keys (split +
/// combine), f32 math on bf16 inputs.
fn interpreter_decode(c: &mut Criterion) {
    let (b, hkv, g, d, n) = (1, 8, 4, 128, 1000);
    let mut rng = StdRng::seed_from_u64(1);
    let q = HostTensor::random(DType::BF16, &[b, hkv * g, d], -1.0, 1.0, &mut rng);
    let k = HostTensor::random(DType::BF16, &[b, hkv, n, d], -1.0, 1.0, &mut rng);
    let v = HostTensor::random(DType::BF16, &[b, hkv, n, d], -1.0, 1.0, &mut rng);
    let op = DenseDecode::cpu(DecodeParams::new(g, d)).unwrap();
    let mut out = HostTensor::full(DType::BF16, &[b, hkv * g, d], f64::NAN);
    c.bench_function("interpreter/dense_decode_b1_hkv8_g4_d128_n1000", |bch| {
        bch.iter(|| op.run_cpu(&q, &k, &v, n, &mut out, None).unwrap())
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(Duration::from_secs(4));
    targets = build_and_emit, nvrtc_compile, interpreter_decode
}
criterion_main!(benches);
