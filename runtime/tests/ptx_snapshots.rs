//! PTX snapshots (NVRTC 13.0.88, `sm_90a`) of every sample program, and ptxas resource
//! reports. NVRTC needs no GPU: CI runs these after `scripts/setup-cuda.sh`.

use tessera_codegen::emit::emit_cuda;
use tessera_codegen::samples;
use tessera_runtime::{compile_ptx, nvrtc_version, resource_usage};

/// NVRTC must be present in CI; elsewhere its absence skips these tests loudly.
fn nvrtc_available() -> bool {
    match nvrtc_version() {
        Ok(v) => {
            assert_eq!(v, (13, 0), "PTX snapshots are pinned to NVRTC 13.0 (scripts/setup-cuda.sh)");
            true
        }
        Err(e) if std::env::var_os("CI").is_some() => panic!("NVRTC is required in CI: {e}"),
        Err(e) => {
            eprintln!("SKIPPED: NVRTC not found ({e}); run `eval \"$(scripts/setup-cuda.sh)\"`");
            false
        }
    }
}

#[test]
fn ptx_for_sm90a_matches_snapshots() {
    if !nvrtc_available() {
        return;
    }
    for s in samples::all() {
        let e = emit_cuda(&s.build_default());
        let ptx = compile_ptx(&e.source, &e.entry, "sm_90a").unwrap_or_else(|err| panic!("{}: {err}", s.name));
        assert!(ptx.ptx.contains(".target sm_90a"), "{}", s.name);
        insta::assert_snapshot!(format!("ptx_sm90a_{}", s.name), ptx.ptx);
    }
}

#[test]
fn samples_compile_for_sm80_too() {
    if !nvrtc_available() {
        return;
    }
    for s in samples::all() {
        let e = emit_cuda(&s.build_default());
        let ptx = compile_ptx(&e.source, &e.entry, "sm_80").unwrap_or_else(|err| panic!("{}: {err}", s.name));
        assert!(ptx.ptx.contains(".target sm_80"), "{}", s.name);
    }
}

#[test]
fn samples_do_not_spill_registers() {
    if !nvrtc_available() {
        return;
    }
    for s in samples::all() {
        let e = emit_cuda(&s.build_default());
        let r = resource_usage(&e.source, &e.entry, "sm_90a").unwrap();
        assert_eq!((r.spill_stores, r.spill_loads), (0, 0), "{} spills: {r:?}", s.name);
        assert!(r.registers <= 255, "{}: {r:?}", s.name);
    }
}
