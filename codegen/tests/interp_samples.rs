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
