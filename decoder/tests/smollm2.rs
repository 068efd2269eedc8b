//! Validation on the real model, SmolLM2-135M-Instruct Q4_1 (scripts/fetch-model.sh).
//!
//! The model is found in `$TESSERA_MODEL_DIR` (default `~/.cache/tessera/models`). CI
//! (`CI` set, as scripts/test.sh does) fetches it first and fails if it is missing; elsewhere
//! the tests print a loud SKIPPED line and pass.
//!
//! Golden data (tests/fixtures/, see docs/decoder.md for how it was made):
//! - smollm2_tokens.json: ids from Python `tokenizers` built like ours, cross-checked against
//!   an independent pure-Python BPE.
//! - smollm2_golden.json: HF transformers (its own GGUF loader, f32, CPU): greedy ids and the
//!   first step's top-10 logits.

use std::path::PathBuf;
use std::sync::OnceLock;

use serde_json::Value;
use tessera_decoder::sampling::argmax;
use tessera_decoder::{generate, CpuModel, GgufFile, GgufTokenizer, LlamaWeights, Sampler};

const MODEL: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

struct Loaded {
    file: GgufFile,
    tok: GgufTokenizer,
    weights: LlamaWeights,
}

fn model() -> Option<&'static Loaded> {
    static M: OnceLock<Option<Loaded>> = OnceLock::new();
    M.get_or_init(|| {
        let dir = std::env::var_os("TESSERA_MODEL_DIR").map(PathBuf::from).unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/tessera/models")
        });
        let path = dir.join(MODEL);
        if !path.exists() {
            if std::env::var_os("CI").is_some() {
                panic!("{} is missing: CI must run scripts/fetch-model.sh first", path.display());
            }
            eprintln!("\n*** SKIPPED: {} not found (run scripts/fetch-model.sh) ***\n", path.display());
            return None;
        }
        let t = std::time::Instant::now();
        let file = GgufFile::open(&path).unwrap();
        let tok = GgufTokenizer::from_gguf(&file).unwrap();
        let weights = LlamaWeights::from_gguf(&file).unwrap();
        eprintln!("loaded {} in {:.2} s", path.display(), t.elapsed().as_secs_f64());
        Some(Loaded { file, tok, weights })
    })
    .as_ref()
}

fn fixture(name: &str) -> Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(name);
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

#[test]
fn config_from_metadata() {
    let Some(m) = model() else { return };
    let c = &m.weights.config;
    assert_eq!((c.n_layers, c.hidden, c.ffn_hidden, c.n_heads, c.n_kv_heads, c.head_dim), (30, 576, 1536, 9, 3, 64));
    assert_eq!((c.vocab, c.max_context, c.rope_base, c.rms_eps), (49152, 8192, 100000.0, 1e-5));
    assert!(c.tied_embeddings && m.weights.output.is_none());
    assert_eq!(m.file.tensors.len(), 272);
}

#[test]
fn tokenizer_matches_golden_ids() {
    let Some(m) = model() else { return };
    let fx = fixture("smollm2_tokens.json");
    assert_eq!(m.file.get_str("tokenizer.chat_template").unwrap(), fx["chat_template"].as_str().unwrap());
    for case in fx["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let want = ids(&case["ids"]);
        assert_eq!(m.tok.encode(text).unwrap(), want, "{text:?}");
        assert_eq!(m.tok.decode(&want).unwrap(), text);
    }
    // The chat case was rendered by jinja2 from the file's template.
    let chat = m.tok.chat_prompt("What is the capital of France?").unwrap();
    assert!(fx["cases"].as_array().unwrap().iter().any(|c| c["text"] == chat.as_str()));
    assert_eq!(m.tok.stop_ids, vec![2, 0]);
}

#[test]
fn logits_and_greedy_ids_match_transformers() {
    let Some(m) = model() else { return };
    let fx = fixture("smollm2_golden.json");
    for case in fx["cases"].as_array().unwrap() {
        let prompt = ids(&case["prompt_ids"]);
        assert_eq!(m.tok.encode(case["text"].as_str().unwrap()).unwrap(), prompt);
        let want_ids = ids(&case["greedy_ids"]);
        let mut model = CpuModel::new(&m.weights, 128);
        let t = std::time::Instant::now();
        let mut logits = model.forward(&prompt, false).unwrap();
        let prefill = t.elapsed();
        // First step: the golden top-10 logits, to a relative error of 1e-4 (the issue asks 1e-3; we measure ~1e-6).
        let top = ids(&case["top_ids"]);
        let scale = case["top_logits"][0].as_f64().unwrap().abs();
        let mut max_err = 0f64;
        for (id, want) in top.iter().zip(case["top_logits"].as_array().unwrap()) {
            let (got, want) = (logits[*id as usize] as f64, want.as_f64().unwrap());
            max_err = max_err.max((got - want).abs() / scale);
            assert!((got - want).abs() <= 1e-4 * scale, "token {id}: {got} vs {want} (prompt {:?})", case["text"]);
        }
        let mean = logits.iter().map(|&x| x as f64).sum::<f64>() / logits.len() as f64;
        assert!((mean - case["logit_mean"].as_f64().unwrap()).abs() < 1e-3 * scale);
        // Greedy ids, without stopping at end-of-turn tokens (like the golden run).
        let t = std::time::Instant::now();
        let mut got = Vec::new();
        for _ in 0..want_ids.len() {
            let next = argmax(&logits);
            got.push(next);
            logits = model.forward(&[next], false).unwrap();
        }
        eprintln!(
            "{} prompt tokens: top-10 logits within {max_err:.1e} relative; prefill {:.1} ms, {} decode steps at {:.1} tokens/s",
            prompt.len(),
            prefill.as_secs_f64() * 1e3,
            got.len(),
            got.len() as f64 / t.elapsed().as_secs_f64()
        );
        assert_eq!(got, want_ids, "prompt {:?}", case["text"]);
    }
}

#[test]
fn chat_answer_mentions_paris() {
    let Some(m) = model() else { return };
    let prompt = m.tok.encode(&m.tok.chat_prompt("What is the capital of France?").unwrap()).unwrap();
    let mut model = CpuModel::new(&m.weights, 256);
    let stats = generate(&mut model, &prompt, 12, &mut Sampler::greedy(), &m.tok.stop_ids, |_| {}).unwrap();
    let answer = m.tok.decode(&stats.generated).unwrap();
    assert!(answer.contains("Paris"), "{answer:?}");
    // Seeded sampling is reproducible.
    let run = |seed| {
        let mut model = CpuModel::new(&m.weights, 256);
        generate(&mut model, &prompt, 6, &mut Sampler::new(0.8, 0.9, seed), &m.tok.stop_ids, |_| {}).unwrap().generated
    };
    assert_eq!(run(11), run(11));
}
