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

/// A value named like a tile coordinate (`c0`) used in an index: the emitter's coordinate
/// substitution must leave its name alone.
#[test]
fn value_names_survive_coordinate_substitution() {
    use tessera_codegen::ir::{DType, Index, KernelBuilder};
    let mut b = KernelBuilder::new("names", 4);
    let x = b.tensor("x", DType::F32, 1);
    let out = b.tensor_mut("new", DType::F32, 1);
    let pid = b.program_id(0);
    let c0 = b.name(pid, "c0");
    let t = b.load(x, vec![Index::Range { start: c0, len: 256 }], None, 0.0);
    b.store(out, vec![Index::Range { start: c0, len: 256 }], t, None);
    let k = b.finish().unwrap();
    let src = emit_cuda(&k).source;
    // The value keeps a name of its own (`c0__<id>`), distinct from the coordinate `c0`.
    let name = format!("c0__{}", c0.0);
    assert!(src.contains(&format!("(long long){name} + c0;")), "{src}");
    assert!(src.contains(&format!("(long long){name} + 0;")), "{src}");
    assert!(!src.contains("(long long)0_"), "coordinate substitution hit a value name");
    assert!(src.contains("float* new_,"), "C++ keywords are renamed");
}
