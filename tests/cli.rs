//! The command line as a user meets it (no GPU): `tessera kernels` lists every shipped
//! kernel on a line of its own, `tessera compile <kernel> --emit ptx` prints sm_90a PTX
//! with no configuration given, unknown names are errors.

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
