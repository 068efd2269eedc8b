//! The command line as a user meets it (no GPU): `tessera kernels` lists every shipped
//! kernel on a line of its own, `tessera compile <kernel> --emit ptx` prints sm_90a PTX
//! with no configuration given, `tessera autotune --kernels` takes every tunable kernel,
//! unknown names are errors.

use std::process::Command;

fn tessera(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tessera")).args(args).output().expect("run tessera")
}

#[test]
fn kernels_lists_every_shipped_kernel_name_first() {
    let out = tessera(&["kernels"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let registry = tessera_kernels::registry::registry();
    assert_eq!(lines.len(), registry.len(), "{text}");
    for (line, e) in lines.iter().zip(&registry) {
        assert_eq!(line.split_whitespace().next(), Some(e.name), "{line}");
        assert!(line.contains(e.summary), "{line}");
        assert!(line.contains("[tune space: "), "{line}");
    }
    for family in ["hip", "centroid", "snapkv", "dense", "sink_window", "block_sparse", "tree", "topk"] {
        assert!(lines.iter().any(|l| l.starts_with(family) || l.contains(&format!("{family}_"))), "no {family} kernel");
    }
}

#[test]
fn compile_prints_ptx_for_a_kernel_without_a_config() {
    if tessera_runtime::nvrtc_version().is_err() {
        assert!(std::env::var_os("CI").is_none(), "NVRTC is required in CI");
        eprintln!("SKIPPED: NVRTC not found; run `eval \"$(scripts/setup-cuda.sh)\"`");
        return;
    }
    for kernel in ["dense_decode_split", "hip_score_children", "lm_infinite_decode_split"] {
        let out = tessera(&["compile", kernel, "--emit", "ptx"]);
        assert!(out.status.success(), "{kernel}: {}", String::from_utf8_lossy(&out.stderr));
        let ptx = String::from_utf8(out.stdout).unwrap();
        assert!(ptx.contains(".target sm_90a") && ptx.contains(&format!(".entry {kernel}")), "{kernel}");
    }
}

#[test]
fn an_unknown_kernel_is_an_error_not_a_panic() {
    let out = tessera(&["compile", "no_such_kernel", "--emit", "ptx"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no program `no_such_kernel`") && !err.contains("panicked"), "{err}");
}

/// Every registered tunable kernel is a valid `--kernels` name: each parses its own
/// `--shapes` (an invalid list here, so nothing opens a GPU or a database on any machine);
/// an unknown name is refused with the list of tunable kernels.
#[test]
fn autotune_takes_every_tunable_kernel_by_name() {
    let names: Vec<&str> = tessera::autotune::TARGETS.iter().map(|t| t.name()).collect();
    for new in ["dense", "lm_infinite", "hip_select", "centroid_decode", "snapkv"] {
        assert!(names.contains(&new), "{new} is not registered: {names:?}");
    }
    for name in &names {
        let out = tessera(&["autotune", "--kernels", name, "--shapes", "8xlots"]);
        assert!(!out.status.success(), "{name}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("--shapes for {name}: shape `8xlots` is not BATCHxSEQ_LEN")), "{name}: {err}");
    }
    let out = tessera(&["autotune", "--kernels", "dense,no_such_kernel"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`no_such_kernel` has no tune space") && !err.contains("panicked"), "{err}");
    assert!(names.iter().all(|n| err.contains(n)), "the refusal lists every tunable kernel: {err}");
}
