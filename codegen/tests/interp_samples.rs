//! Runs the small problem suite through the CPU interpreter and checks every output
//! against its f64 reference.

use tessera_codegen::problems::{self, Role};

#[test]
fn small_suite_passes_in_the_interpreter() {
    let mut suite = problems::small_suite(0x7e55e7a);
    let mut failures = Vec::new();
    for p in &mut suite {
        let start = std::time::Instant::now();
        p.run_interp().unwrap_or_else(|e| panic!("{}: {e}", p.name));
        match p.check() {
            Ok(r) => eprintln!("ok   {:<70} max_rel_err {:.2e} ({:?})", p.name, r.max_rel_err, start.elapsed()),
            Err(e) => failures.push(e),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_sample_is_covered() {
    let suite = problems::small_suite(1);
    for s in tessera_codegen::samples::all() {
        assert!(suite.iter().any(|p| p.launches.iter().any(|l| l.sample == s.name)), "no problem runs `{}`", s.name);
    }
}

#[test]
fn unwritten_outputs_fail_the_check() {
    for mut p in problems::small_suite(2) {
        assert!(p.check().is_err(), "{}: poisoned outputs passed", p.name);
        p.run_interp().unwrap();
        p.check().unwrap();
        // Clobber one element of one output: the check must notice.
        let i = p.tensors.iter().position(|t| t.role == Role::Output).unwrap();
        let t = &mut p.tensors[i].tensor;
        let last = t.numel() - 1;
        let x = t.get_f64(last);
        t.set_f64(last, x + 1.0 + x.abs());
        assert!(p.check().is_err(), "{}: a wrong element passed", p.name);
    }
}

#[test]
fn problems_are_reproducible_and_seeded() {
    let a = problems::small_suite(5);
    let b = problems::small_suite(5);
    let c = problems::small_suite(6);
    for ((a, b), c) in a.iter().zip(&b).zip(&c) {
        let ins = |p: &problems::Problem| -> Vec<_> {
            p.tensors.iter().filter(|t| t.role == Role::Input).map(|t| t.tensor.clone()).collect()
        };
        assert_eq!(ins(a), ins(b), "{}", a.name);
        assert_ne!(ins(a), ins(c), "{}", a.name);
        for t in ins(a) {
            assert!(t.to_f64().iter().any(|&x| x != 0.0), "{}: an all-zero input", a.name);
        }
        assert!(a.bytes_moved() > 0);
    }
}

/// Launch arguments line up with the kernel parameters (names, writability, scalars), so a
/// GPU runner can pass them positionally.
fn check_launch_args(p: &problems::Problem) {
    use tessera_codegen::ir::ParamKind;
    use tessera_codegen::problems::LaunchArg;
    let kernels = p.kernels().unwrap_or_else(|e| panic!("{}: {e}", p.name));
    for (l, k) in p.launches.iter().zip(&kernels) {
        assert_eq!(l.args.len(), k.params.len(), "{}: {}", p.name, k.name);
        assert!(l.grid.iter().all(|&g| g > 0), "{}: grid {:?}", p.name, l.grid);
        for (a, param) in l.args.iter().zip(&k.params) {
            match (a, &param.kind) {
                (LaunchArg::Tensor { tensor, writes }, ParamKind::Tensor { dtype, rank, writable }) => {
                    let t = &p.tensors[*tensor];
                    assert_eq!(t.name, param.name, "{}", p.name);
                    assert_eq!(writes, writable, "{}: {}", p.name, param.name);
                    assert_eq!((t.tensor.dtype(), t.tensor.shape.len()), (*dtype, *rank), "{}", param.name);
                }
                (LaunchArg::Scalar(s), ParamKind::Scalar { dtype }) => assert_eq!(s.dtype(), *dtype),
                _ => panic!("{}: argument kind of `{}`", p.name, param.name),
            }
        }
    }
}

#[test]
fn launch_arguments_match_the_kernel_parameters() {
    for p in problems::small_suite(3) {
        check_launch_args(&p);
    }
}

#[test]
fn rerunning_after_poisoning_passes() {
    let mut p = problems::problems_for("flash_decode_combine", problems::Suite::Small, 4).remove(0);
    p.run_interp().unwrap();
    p.check().unwrap();
    p.poison_outputs();
    assert!(p.check().is_err());
    p.run_interp().unwrap();
    p.check().unwrap();
}

/// Slow in debug builds (large random inputs): `cargo test -- --ignored`.
#[test]
#[ignore]
fn gpu_suite_is_well_formed() {
    for p in problems::gpu_suite(0) {
        check_launch_args(&p);
        assert!(p.check().is_err(), "{}: poisoned outputs passed", p.name);
    }
}
