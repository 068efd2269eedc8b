//! Snapshots of the emitted CUDA C++ for every sample program: a codegen change shows
//! up in review as a diff of these files.

use tessera_codegen::emit::emit_cuda;
use tessera_codegen::samples;

#[test]
fn emitted_cuda_matches_snapshots() {
    for s in samples::all() {
        let k = s.build_default();
        let e = emit_cuda(&k);
        if let Ok(dir) = std::env::var("TESSERA_EMIT_DIR") {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(format!("{dir}/{}.cu", s.name), &e.source).unwrap();
        }
        // The header is identical for every kernel; snapshot it once below.
        let body = e.source.replace(tessera_codegen::emit::TILE_HEADER, "// <tile header>\n");
        insta::assert_snapshot!(format!("cuda_{}", s.name), body);
    }
}

#[test]
fn emission_is_deterministic() {
    for s in samples::all() {
        assert_eq!(emit_cuda(&s.build_default()), emit_cuda(&s.build_default()), "{}", s.name);
    }
}
