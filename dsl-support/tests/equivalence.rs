//! The macro-built example kernels against the hand-built samples of `tessera_codegen`:
//! they verify, run the small problem suite in the interpreter with the same results as the
//! samples (and pass the f64 reference checks), and their CUDA compiles with NVRTC.

mod kernels;

use kernels::*;
use tessera_codegen::ir::{verify, Kernel};
use tessera_codegen::problems::{self, Role};
use tessera_dsl_support::{BuildError, KernelConfig};

/// The DSL twin of a sample, built for that sample's launch config.
fn dsl_kernel(sample: &str, config: &KernelConfig) -> Result<Kernel, BuildError> {
    match sample {
        "vector_add" => vector_add::VectorAdd::build(config),
        "row_softmax" => row_softmax::RowSoftmax::build(config),
        "matmul" => matmul::Matmul::build(config),
        "gather_rows" => gather_rows::GatherRows::build(config),
        "topk" => row_topk::RowTopk::build(config),
        "prefix_sum" => prefix_sum::PrefixSum::build(config),
        "flash_decode" => flash_decode::FlashDecode::build(config),
        "flash_decode_combine" => flash_decode::FlashDecodeCombine::build(config),
        other => panic!("no DSL twin of `{other}`"),
    }
}

/// Every hand-built sample of `tessera_codegen::samples` has a DSL twin.
const TWINS: [&str; 7] = ["vector_add", "row_softmax", "matmul", "gather_rows", "topk", "prefix_sum", "flash_decode"];

#[test]
fn dsl_kernels_match_the_hand_built_samples_in_the_interpreter() {
    let mut compared = 0;
    for sample in TWINS {
        for mut p in problems::problems_for(sample, problems::Suite::Small, 0xd51) {
            // Hand-built samples first.
            p.run_interp().unwrap_or_else(|e| panic!("{}: {e}", p.name));
            p.check().unwrap_or_else(|e| panic!("sample {}: {e}", p.name));
            let expected: Vec<_> =
                p.tensors.iter().filter(|t| t.role != Role::Input).map(|t| t.tensor.clone()).collect();
            // Then the DSL kernels on freshly poisoned outputs.
            p.poison_outputs();
            for i in 0..p.launches.len() {
                let l = p.launches[i].clone();
                let k = dsl_kernel(l.sample, &KernelConfig::from(l.config.clone()))
                    .unwrap_or_else(|e| panic!("{}: {e}", p.name));
                verify(&k).unwrap();
                tessera_codegen::interp::run(&k, l.grid, &mut p.interp_args(i))
                    .unwrap_or_else(|e| panic!("{}: {e}", p.name));
            }
            let report = p.check().unwrap_or_else(|e| panic!("dsl {}: {e}", p.name));
            let got: Vec<_> = p.tensors.iter().filter(|t| t.role != Role::Input).map(|t| t.tensor.clone()).collect();
            assert_eq!(got, expected, "{}: DSL and hand-built outputs differ", p.name);
            eprintln!("ok {:<70} max_rel_err {:.2e}", p.name, report.max_rel_err);
            compared += 1;
        }
    }
    assert!(compared >= 8, "only {compared} problems compared");
}

#[test]
fn typed_cpu_launcher_runs_and_checks_arguments() {
    use tessera_codegen::host::HostTensor;
    use tessera_codegen::ir::DType;
    let k = vector_add::VectorAdd::cpu(&KernelConfig::from_pairs(&[("BLOCK", 256)])).unwrap();
    let x = HostTensor::from_f64(DType::F32, &[300], &(0..300).map(|i| i as f64).collect::<Vec<_>>());
    let y = HostTensor::full(DType::F32, &[300], 1.0);
    let mut out = HostTensor::full(DType::F32, &[300], f64::NAN);
    k.run_cpu([2, 1, 1], &x, &y, &mut out).unwrap();
    assert_eq!(out.to_f64(), (0..300).map(|i| i as f64 + 1.0).collect::<Vec<_>>());
    // A dtype mismatch is a typed interpreter error, not a panic.
    let bad = HostTensor::full(DType::F16, &[300], 1.0);
    let e = k.run_cpu([2, 1, 1], &x, &bad, &mut out).unwrap_err();
    assert!(e.to_string().contains("dtype"), "{e}");
    // No GPU module: launch is refused (checked without touching a device).
    assert!(matches!(k.config.get("BLOCK"), Some(256)));
}

#[test]
fn tune_spaces_enumerate_and_validate() {
    let s = vector_add::VectorAdd::tune_space();
    // 3 x 2 configs, all with BLOCK >= WARPS * 32.
    assert_eq!(s.len(), 6);
    assert!(s.validate(&KernelConfig::from_pairs(&[("BLOCK", 512), ("WARPS", 8)])).is_ok());
    let e = s.validate(&KernelConfig::from_pairs(&[("BLOCK", 300), ("WARPS", 8)])).unwrap_err();
    assert!(matches!(e, BuildError::NotInTuneSpace { .. }), "{e}");
    let m = matmul::Matmul::tune_space();
    assert_eq!(m.len(), m.configs().iter().filter(|c| m.satisfies(c)).count());
    assert!(m.len() < 16, "the constraint removes configs");
    let e = m
        .validate(&KernelConfig::from_pairs(&[("BLOCK_M", 128), ("BLOCK_N", 128), ("BLOCK_K", 32), ("WARPS", 4)]))
        .unwrap_err();
    assert!(matches!(e, BuildError::Constraint { .. }), "{e}");
    for c in m.configs() {
        matmul::Matmul::build(&c).unwrap_or_else(|e| panic!("{c}: {e}"));
    }
    let fd = flash_decode::FlashDecode::tune_space();
    let base = KernelConfig::from_pairs(&[("GROUP", 4), ("HEAD_DIM", 64)]);
    assert_eq!(fd.configs_with(&base).len(), 3 * 2 * 3, "BLOCK_N x WARPS x MIN_BLOCKS");
    for c in fd.configs_with(&base) {
        flash_decode::FlashDecode::build(&c).unwrap_or_else(|e| panic!("{c}: {e}"));
    }
}

#[test]
fn config_errors_are_typed() {
    let e = vector_add::VectorAdd::build(&KernelConfig::from_pairs(&[("NOPE", 1), ("BLOCK", 64)])).unwrap_err();
    assert!(matches!(e, BuildError::UnknownParam { .. }), "{e}");
    let e = flash_decode::FlashDecode::build(&KernelConfig::from_pairs(&[("BLOCK_N", 64)])).unwrap_err();
    assert!(matches!(e, BuildError::MissingParam { .. }), "{e}");
}

/// The emitted CUDA of every example kernel compiles with NVRTC for sm_90a (skipped with a
/// note when NVRTC cannot be loaded).
#[test]
fn emitted_cuda_compiles_with_nvrtc() {
    if let Err(e) = tessera_runtime::nvrtc_version() {
        eprintln!("skipping: NVRTC not available ({e})");
        return;
    }
    for k in example_kernels() {
        let e = tessera_codegen::emit::emit_cuda(&k);
        tessera_runtime::compile_ptx(&e.source, &e.entry, "sm_90a").unwrap_or_else(|err| panic!("{}: {err}", k.name));
    }
}

/// Every example kernel at its default config (flash decode at GROUP 4, HEAD_DIM 128).
pub fn example_kernels() -> Vec<Kernel> {
    vec![
        vector_add::VectorAdd::build(&vector_add::VectorAdd::default_config()).unwrap(),
        row_softmax::RowSoftmax::build(&row_softmax::RowSoftmax::default_config()).unwrap(),
        matmul::Matmul::build(&matmul::Matmul::default_config()).unwrap(),
        gather_rows::GatherRows::build(&gather_rows::GatherRows::default_config()).unwrap(),
        row_topk::RowTopk::build(&row_topk::RowTopk::default_config()).unwrap(),
        flash_decode::FlashDecode::build(
            &flash_decode::FlashDecode::default_config().with("GROUP", 4).with("HEAD_DIM", 128),
        )
        .unwrap(),
        flash_decode::FlashDecodeCombine::build(&KernelConfig::from_pairs(&[("HEAD_DIM", 128), ("MAX_SPLITS", 64)]))
            .unwrap(),
    ]
}

/// PTX snapshots (NVRTC 13.0, sm_90a) of the example kernels; required in CI.
#[test]
fn ptx_matches_snapshots() {
    match tessera_runtime::nvrtc_version() {
        Ok(v) => assert_eq!(v, (13, 0), "PTX snapshots are pinned to NVRTC 13.0"),
        Err(e) if std::env::var_os("CI").is_some() => panic!("NVRTC is required in CI: {e}"),
        Err(e) => {
            eprintln!("SKIPPED: NVRTC not found ({e})");
            return;
        }
    }
    for k in example_kernels() {
        let e = tessera_codegen::emit::emit_cuda(&k);
        let ptx = tessera_runtime::compile_ptx(&e.source, &e.entry, "sm_90a")
            .unwrap_or_else(|err| panic!("{}: {err}", k.name));
        insta::assert_snapshot!(format!("dsl_ptx_sm90a_{}", k.name), ptx.ptx);
    }
}

/// Snapshots of the emitted CUDA C++ of the example kernels (header elided).
#[test]
fn emitted_cuda_matches_snapshots() {
    for k in example_kernels() {
        let e = tessera_codegen::emit::emit_cuda(&k);
        let body = e.source.replace(tessera_codegen::emit::TILE_HEADER, "// <tile header>\n");
        insta::assert_snapshot!(format!("dsl_cuda_{}", k.name), body);
    }
}
