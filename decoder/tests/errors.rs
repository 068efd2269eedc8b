//! Bad input gives typed errors, never a panic (no model needed).

use tessera_decoder::gguf::GgufError;
use tessera_decoder::{GgufFile, LlamaWeights};

#[test]
fn not_a_gguf_file() {
    let p = std::env::temp_dir().join(format!("tessera-not-gguf-{}.bin", std::process::id()));
    std::fs::write(&p, b"{\"this is\": \"json\"}").unwrap();
    let e = GgufFile::open(&p).unwrap_err();
    std::fs::remove_file(&p).ok();
    assert!(matches!(e, GgufError::NotGguf(_)), "{e}");
    assert!(e.to_string().contains("not a GGUF file"));
    let e = LlamaWeights::load_gguf("/nonexistent/model.gguf").unwrap_err();
    assert!(matches!(e, GgufError::Io { .. }), "{e}");
}
