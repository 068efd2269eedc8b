//! The GPU path on the real model (SmolLM2-135M-Instruct Q4_1): golden logits, greedy ids
//! identical to the CPU path, the chat answer, chunked prefill = token-by-token decode,
//! batch rows = single sequences, and a random-weight speed-run smoke test.
//!
//! Runs only with `TESSERA_GPU_TESTS=1` on a machine with a GPU (and the model in
//! `$TESSERA_MODEL_DIR`, default `~/.cache/tessera/models`); elsewhere it prints a skip line.

use std::path::PathBuf;

use tessera_decoder::gpu::bench::decode_over_random_cache;
use tessera_decoder::gpu::validate::{check_case, parse_golden};
use tessera_decoder::gpu::{GpuModel, GpuWeights};
use tessera_decoder::{generate, CpuModel, GgufFile, GgufTokenizer, LlamaConfig, LlamaWeights, Sampler};
use tessera_runtime::Runtime;

const MODEL: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

fn setup() -> Option<(Runtime, GgufTokenizer, LlamaWeights)> {
    if std::env::var("TESSERA_GPU_TESTS").as_deref() != Ok("1") {
        eprintln!("SKIPPED: set TESSERA_GPU_TESTS=1 on a GPU machine to run the decoder's GPU checks");
        return None;
    }
    let dir = std::env::var_os("TESSERA_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/tessera/models"));
    let path = dir.join(MODEL);
    let file = GgufFile::open(&path).unwrap_or_else(|e| panic!("TESSERA_GPU_TESTS=1 but {}: {e}", path.display()));
    let tok = GgufTokenizer::from_gguf(&file).unwrap();
    let weights = LlamaWeights::from_gguf(&file).unwrap();
    Some((Runtime::new(0).expect("TESSERA_GPU_TESTS=1 but no usable GPU"), tok, weights))
}

fn fixture() -> serde_json::Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/smollm2_golden.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn max_rel_diff(a: &[f32], b: &[f32]) -> f64 {
    let scale = b.iter().fold(0f64, |m, &x| m.max(x.abs() as f64));
    a.iter().zip(b).map(|(&x, &y)| (x as f64 - y as f64).abs() / scale).fold(0.0, f64::max)
}

#[test]
fn golden_logits_greedy_ids_and_chat() {
    let Some((rt, tok, weights)) = setup() else { return };
    let mut gpu = GpuModel::from_weights(rt, &weights, 1, 128).unwrap();
    let mut cpu = CpuModel::new(&weights, 128);
    for case in parse_golden(&fixture()).unwrap() {
        let r = check_case(&mut gpu, &mut cpu, &case, 32).unwrap();
        eprintln!("{:?}: logits rel err {:.2e}; GPU {:?}", case.text, r.logit_rel_err, r.gpu_ids);
        assert!(r.logit_rel_err <= 2e-2, "{:?}: logits rel err {:e}", case.text, r.logit_rel_err);
        assert_eq!(r.gpu_ids, r.cpu_ids, "{:?}: GPU greedy ids differ from the CPU path", case.text);
        assert!(r.passed(2e-2));
    }
    let prompt = tok.encode(&tok.chat_prompt("What is the capital of France?").unwrap()).unwrap();
    gpu.reset();
    let stats = generate(&mut gpu, &prompt, 24, &mut Sampler::greedy(), &tok.stop_ids, |_| {}).unwrap();
    let answer = tok.decode(&stats.generated).unwrap();
    assert!(answer.contains("Paris"), "{answer:?}");
    // Seeded top-p sampling on the GPU path is reproducible.
    let mut run = |seed| {
        gpu.reset();
        generate(&mut gpu, &prompt, 8, &mut Sampler::new(0.8, 0.9, seed), &tok.stop_ids, |_| {}).unwrap().generated
    };
    assert_eq!(run(5), run(5));
}

/// A 150-token prompt prefilled in chunks (64 + 64 + 22) gives the logits of feeding it
/// token by token (decode attention), and every row of a batch the single-sequence result.
#[test]
fn chunked_prefill_and_batches_agree() {
    let Some((rt, tok, weights)) = setup() else { return };
    let text = "Tessera compiles tile programs into CUDA kernels for long-context attention. ".repeat(12);
    let prompt: Vec<u32> = tok.encode(&text).unwrap().into_iter().take(150).collect();
    assert_eq!(prompt.len(), 150);
    let mut m = GpuModel::from_weights(rt, &weights, 1, 256).unwrap();
    m.forward(&prompt, prompt.len()).unwrap();
    let chunked = m.logits_host().unwrap();
    m.reset();
    for &t in &prompt {
        m.forward(&[t], 1).unwrap();
    }
    let stepwise = m.logits_host().unwrap();
    let d = max_rel_diff(&chunked, &stepwise);
    assert!(d < 2e-2, "chunked prefill vs stepwise: {d:e}");

    let (rt, w) = m.into_parts();
    let mut b = GpuModel::new(rt, w, 3, 256).unwrap();
    let tokens: Vec<u32> = (0..3).flat_map(|_| prompt.iter().copied()).collect();
    b.forward(&tokens, prompt.len()).unwrap();
    let rows = b.logits_host().unwrap();
    let v = weights.config.vocab;
    for r in 0..3 {
        let d = max_rel_diff(&rows[r * v..(r + 1) * v], &chunked);
        assert!(d < 1e-3, "batch row {r} vs batch 1: {d:e}");
    }
    let ids = b.argmax().unwrap();
    assert!(ids.iter().all(|&i| i == ids[0]));
    // One decode step for the whole batch.
    b.forward(&ids, 1).unwrap();
    assert_eq!(b.cache.len, 151);
}

/// The speed-run path at reduced Llama-3-8B shapes: random weights and cache made on the
/// GPU, decode steps with attention timed.
#[test]
fn random_model_decodes() {
    let Some((rt, _, _)) = setup() else { return };
    let config = LlamaConfig { n_layers: 2, ..LlamaConfig::llama3_8b_shapes() };
    let w = GpuWeights::random(&rt, &config, 1).unwrap();
    let mut m = GpuModel::new(rt, w, 1, 4096).unwrap();
    let s = decode_over_random_cache(&mut m, 4000, 2, 8, 3).unwrap();
    eprintln!("{s:?}");
    assert!(s.ms_per_step > 0.0 && s.attn_ms_per_step > 0.0 && s.attn_share() < 1.0);
    assert_eq!(m.cache.len, 4010);
}
