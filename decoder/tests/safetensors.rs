//! Hugging Face safetensors checkpoints (decoder/src/hf.rs).
//!
//! Round trip on the real model: SmolLM2-135M-Instruct's GGUF weights are written as an HF
//! checkpoint (HF tensor names, Q/K rows un-permuted back to the rotate-half layout, a
//! config.json, the tokenizer as tokenizer.json) with the `safetensors` crate's own
//! serializer, loaded back through `HfCheckpoint`, and run next to the GGUF path: same
//! first-step logits and the same 8 greedy ids. The model is found like decoder/tests/
//! smollm2.rs finds it (a loud SKIPPED line without it, a failure in CI).
//!
//! Synthetic checkpoints (no model needed) cover each typed error.
//!
//! `TESSERA_HF_EXPORT=DIR` also leaves a bf16 SmolLM2 checkpoint in DIR (for trying
//! `tessera generate --model DIR` by hand).

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use safetensors::{Dtype, View};
use serde_json::{json, Value};
use tessera_decoder::config::RopePairing;
use tessera_decoder::model::Matrix;
use tessera_decoder::sampling::argmax;
use tessera_decoder::{
    detect_model_format, CpuModel, GgufFile, GgufTokenizer, HfCheckpoint, HfError, LlamaConfig, LlamaWeights,
    ModelFormat, ModelFormatError,
};

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
        let file = GgufFile::open(&path).unwrap();
        let tok = GgufTokenizer::from_gguf(&file).unwrap();
        let weights = LlamaWeights::from_gguf(&file).unwrap();
        Some(Loaded { file, tok, weights })
    })
    .as_ref()
}

/// A temporary folder, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("tessera-hf-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

/// One tensor to write: dtype, shape and little-endian bytes.
struct Tensor {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl Tensor {
    fn new(dtype: Dtype, shape: &[usize], data: &[f32]) -> Self {
        assert_eq!(shape.iter().product::<usize>(), data.len());
        let bytes = match dtype {
            Dtype::F32 => data.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Dtype::F16 => data.iter().flat_map(|&x| half::f16::from_f32(x).to_le_bytes()).collect(),
            Dtype::BF16 => data.iter().flat_map(|&x| half::bf16::from_f32(x).to_le_bytes()).collect(),
            // Any other dtype: raw bytes of the right size (only its dtype is looked at).
            d => vec![0u8; data.len() * d.bitsize() / 8],
        };
        Tensor { dtype, shape: shape.to_vec(), bytes }
    }
}

impl View for &Tensor {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

fn write_safetensors(path: &Path, tensors: &[(String, Tensor)]) {
    let bytes = safetensors::serialize(tensors.iter().map(|(n, t)| (n.as_str(), t)), None).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// llama.cpp's converter permutes each head's Q/K rows: GGUF row `2i + a` is HF row
/// `a * d/2 + i` (a ∈ {0, 1}). This undoes it.
fn unpermute(m: &Matrix, head_dim: usize) -> Vec<f32> {
    let half = head_dim / 2;
    let mut out = vec![0f32; m.data.len()];
    for head in 0..m.rows / head_dim {
        for i in 0..half {
            for a in 0..2 {
                let src = head * head_dim + 2 * i + a;
                let dst = head * head_dim + a * half + i;
                out[dst * m.cols..(dst + 1) * m.cols].copy_from_slice(m.row(src));
            }
        }
    }
    out
}

/// The HF-named tensors of GGUF-loaded weights (`tie`: leave out lm_head).
fn hf_tensors(w: &LlamaWeights, dtype: Dtype) -> Vec<(String, Tensor)> {
    let c = &w.config;
    assert_eq!(c.rope_pairing, RopePairing::Interleaved, "GGUF weights expected");
    let mat = |m: &Matrix| Tensor::new(dtype, &[m.rows, m.cols], &m.data);
    let vec = |v: &[f32]| Tensor::new(dtype, &[v.len()], v);
    let mut t = vec![
        ("model.embed_tokens.weight".to_string(), mat(&w.embedding)),
        ("model.norm.weight".to_string(), vec(&w.final_norm)),
    ];
    if let Some(o) = &w.output {
        t.push(("lm_head.weight".to_string(), mat(o)));
    }
    for (i, l) in w.layers.iter().enumerate() {
        let p = format!("model.layers.{i}");
        let qk = |m: &Matrix| Tensor::new(dtype, &[m.rows, m.cols], &unpermute(m, c.head_dim));
        t.extend([
            (format!("{p}.input_layernorm.weight"), vec(&l.attn_norm)),
            (format!("{p}.self_attn.q_proj.weight"), qk(&l.wq)),
            (format!("{p}.self_attn.k_proj.weight"), qk(&l.wk)),
            (format!("{p}.self_attn.v_proj.weight"), mat(&l.wv)),
            (format!("{p}.self_attn.o_proj.weight"), mat(&l.wo)),
            (format!("{p}.post_attention_layernorm.weight"), vec(&l.ffn_norm)),
            (format!("{p}.mlp.gate_proj.weight"), mat(&l.w_gate)),
            (format!("{p}.mlp.up_proj.weight"), mat(&l.w_up)),
            (format!("{p}.mlp.down_proj.weight"), mat(&l.w_down)),
        ]);
    }
    t
}

fn config_json(c: &LlamaConfig) -> Value {
    json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": c.hidden,
        "intermediate_size": c.ffn_hidden,
        "num_hidden_layers": c.n_layers,
        "num_attention_heads": c.n_heads,
        "num_key_value_heads": c.n_kv_heads,
        "vocab_size": c.vocab,
        "max_position_embeddings": c.max_context,
        "rms_norm_eps": c.rms_eps,
        "rope_theta": c.rope_base,
        "rope_scaling": null,
        "hidden_act": "silu",
        "tie_word_embeddings": c.tied_embeddings,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "torch_dtype": "bfloat16",
    })
}

fn write_json(path: &Path, v: &Value) {
    std::fs::write(path, serde_json::to_string_pretty(v).unwrap()).unwrap();
}

/// Writes SmolLM2 as an HF checkpoint: one file, or `shards` files with an index.
fn write_smollm2(m: &Loaded, dir: &Path, dtype: Dtype, shards: usize) {
    write_json(&dir.join("config.json"), &config_json(&m.weights.config));
    m.tok.inner.save(dir.join("tokenizer.json"), false).unwrap();
    write_json(
        &dir.join("tokenizer_config.json"),
        &json!({
            "chat_template": m.file.get_str("tokenizer.chat_template").unwrap(),
            "bos_token": "<|im_start|>", "eos_token": "<|im_end|>",
        }),
    );
    let tensors = hf_tensors(&m.weights, dtype);
    if shards == 1 {
        write_safetensors(&dir.join("model.safetensors"), &tensors);
        return;
    }
    let per = tensors.len().div_ceil(shards);
    let mut weight_map = serde_json::Map::new();
    let mut it = tensors.into_iter().peekable();
    for s in 0..shards {
        let file = format!("model-{:05}-of-{shards:05}.safetensors", s + 1);
        let part: Vec<_> = it.by_ref().take(per).collect();
        for (name, _) in &part {
            weight_map.insert(name.clone(), json!(file));
        }
        write_safetensors(&dir.join(&file), &part);
    }
    assert!(it.peek().is_none());
    write_json(&dir.join("model.safetensors.index.json"), &json!({"metadata": {}, "weight_map": weight_map}));
}

fn max_rel_err(got: &[f32], want: &[f32]) -> f64 {
    let scale = want.iter().fold(0f64, |m, &x| m.max((x as f64).abs()));
    got.iter().zip(want).fold(0f64, |m, (&a, &b)| m.max((a as f64 - b as f64).abs())) / scale
}

/// First-step logits and 8 greedy ids of a prompt.
fn run(w: &LlamaWeights, prompt: &[u32]) -> (Vec<f32>, Vec<u32>) {
    let mut model = CpuModel::new(w, 128);
    let first = model.forward(prompt, false).unwrap();
    let mut logits = first.clone();
    let mut ids = Vec::new();
    for _ in 0..8 {
        let next = argmax(&logits);
        ids.push(next);
        logits = model.forward(&[next], false).unwrap();
    }
    (first, ids)
}

/// `w` with every weight rounded through `dtype` (BF16 or F16), the reference for a
/// checkpoint stored in it.
fn rounded(w: &LlamaWeights, dtype: Dtype) -> LlamaWeights {
    let round = |x: f32| match dtype {
        Dtype::BF16 => half::bf16::from_f32(x).to_f32(),
        Dtype::F16 => half::f16::from_f32(x).to_f32(),
        d => panic!("{d:?}"),
    };
    let r = |v: &mut Vec<f32>| v.iter_mut().for_each(|x| *x = round(*x));
    let mut w = w.clone();
    r(&mut w.embedding.data);
    r(&mut w.final_norm);
    for l in &mut w.layers {
        for v in [&mut l.attn_norm, &mut l.ffn_norm] {
            r(v);
        }
        for m in [&mut l.wq, &mut l.wk, &mut l.wv, &mut l.wo, &mut l.w_gate, &mut l.w_up, &mut l.w_down] {
            r(&mut m.data);
        }
    }
    w
}

#[test]
fn smollm2_round_trip() {
    let Some(m) = model() else { return };
    let chat = m.tok.chat_prompt("What is the capital of France?").unwrap();
    let prompt = m.tok.encode(&chat).unwrap();
    let (gguf_logits, gguf_ids) = run(&m.weights, &prompt);
    if let Some(out) = std::env::var_os("TESSERA_HF_EXPORT") {
        std::fs::create_dir_all(&out).unwrap();
        write_smollm2(m, Path::new(&out), Dtype::BF16, 1);
    }

    // f32, two shards with an index: the same weights, so the same logits up to float
    // rounding (measured 7e-7).
    let dir = TempDir::new("f32");
    write_smollm2(m, &dir.0, Dtype::F32, 2);
    assert_eq!(detect_model_format(&dir.0).unwrap(), ModelFormat::Safetensors);
    let ck = HfCheckpoint::open(&dir.0).unwrap();
    assert_eq!(ck.config.rope_pairing, RopePairing::Half);
    let want = LlamaConfig { rope_pairing: RopePairing::Half, ..m.weights.config.clone() };
    assert_eq!(ck.config, want);
    // The tokenizer from tokenizer.json + tokenizer_config.json gives the same ids.
    let tok = GgufTokenizer::from_hf_dir(&ck.dir, &ck.config_json).unwrap();
    assert_eq!(tok.chat_prompt("What is the capital of France?").unwrap(), chat);
    assert_eq!(tok.encode(&chat).unwrap(), prompt);
    assert!(tok.stop_ids.contains(&2), "{:?}", tok.stop_ids);
    let w = LlamaWeights::from_hf(&ck).unwrap();
    assert!(w.output.is_none());
    let (logits, ids) = run(&w, &prompt);
    let err = max_rel_err(&logits, &gguf_logits);
    eprintln!("f32 checkpoint: first-step logits within {err:.1e} relative of the GGUF path; ids {ids:?}");
    assert!(err <= 1e-5, "{err}");
    assert_eq!(ids, gguf_ids);
    drop(w);

    // bf16 and f16, one file each: exactly the GGUF weights rounded to that dtype (tight),
    // and near the GGUF path's logits. bf16's 8-bit mantissa alone moves the logits by
    // ~4e-3 relative (the dequantized Q4_1/Q8_0 values are not bf16 numbers), so the
    // issue's 1e-3 holds for f16 storage; for bf16 the greedy ids must still agree.
    for (dtype, tol) in [(Dtype::BF16, 1e-2), (Dtype::F16, 1e-3)] {
        let dir = TempDir::new("half");
        write_smollm2(m, &dir.0, dtype, 1);
        let st = dir.0.join("model.safetensors");
        assert_eq!(detect_model_format(&st).unwrap(), ModelFormat::Safetensors);
        let w = LlamaWeights::load_safetensors(&st).unwrap();
        let (logits, ids) = run(&w, &prompt);
        drop(w);
        let (rounded_logits, _) = run(&rounded(&m.weights, dtype), &prompt);
        let err_rounded = max_rel_err(&logits, &rounded_logits);
        let err = max_rel_err(&logits, &gguf_logits);
        eprintln!(
            "{dtype:?} checkpoint: logits within {err_rounded:.1e} of the {dtype:?}-rounded GGUF weights, {err:.1e} of the GGUF path"
        );
        assert!(err_rounded <= 1e-5, "{dtype:?}: {err_rounded}");
        assert!(err <= tol, "{dtype:?}: {err}");
        assert_eq!(ids, gguf_ids, "{dtype:?}");
    }
}

// ---- synthetic checkpoints: typed errors ----

fn tiny_config() -> Value {
    json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": 8, "intermediate_size": 12, "num_hidden_layers": 1,
        "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 16,
        "max_position_embeddings": 32, "rms_norm_eps": 1e-5, "tie_word_embeddings": true,
    })
}

fn tiny_tensors(dtype: Dtype) -> Vec<(String, Tensor)> {
    let t = |shape: &[usize]| {
        let n = shape.iter().product::<usize>();
        Tensor::new(dtype, shape, &(0..n).map(|i| (i % 7) as f32 * 0.125 - 0.375).collect::<Vec<_>>())
    };
    let p = "model.layers.0";
    vec![
        ("model.embed_tokens.weight".into(), t(&[16, 8])),
        ("model.norm.weight".into(), t(&[8])),
        (format!("{p}.input_layernorm.weight"), t(&[8])),
        (format!("{p}.self_attn.q_proj.weight"), t(&[8, 8])),
        (format!("{p}.self_attn.k_proj.weight"), t(&[4, 8])),
        (format!("{p}.self_attn.v_proj.weight"), t(&[4, 8])),
        (format!("{p}.self_attn.o_proj.weight"), t(&[8, 8])),
        (format!("{p}.post_attention_layernorm.weight"), t(&[8])),
        (format!("{p}.mlp.gate_proj.weight"), t(&[12, 8])),
        (format!("{p}.mlp.up_proj.weight"), t(&[12, 8])),
        (format!("{p}.mlp.down_proj.weight"), t(&[8, 12])),
    ]
}

fn tiny_checkpoint(tag: &str, config: &Value, tensors: &[(String, Tensor)]) -> TempDir {
    let dir = TempDir::new(tag);
    write_json(&dir.0.join("config.json"), config);
    write_safetensors(&dir.0.join("model.safetensors"), tensors);
    dir
}

#[test]
fn tiny_checkpoint_loads_in_every_float_dtype() {
    let mut logits = Vec::new();
    for dtype in [Dtype::F32, Dtype::F16, Dtype::BF16] {
        let dir = tiny_checkpoint("ok", &tiny_config(), &tiny_tensors(dtype));
        let w = LlamaWeights::load_safetensors(&dir.0).unwrap();
        assert!(w.output.is_none() && w.config.tied_embeddings);
        // The values used are exact in every dtype.
        assert_eq!(w.layers[0].wk.data[..8], [-0.375, -0.25, -0.125, 0.0, 0.125, 0.25, 0.375, -0.375]);
        logits.push(CpuModel::new(&w, 4).forward(&[3, 5], false).unwrap());
    }
    assert_eq!(logits[0], logits[1]);
    assert_eq!(logits[0], logits[2]);
}

#[test]
fn untied_checkpoint_without_lm_head_falls_back_to_the_embedding() {
    let mut c = tiny_config();
    c["tie_word_embeddings"] = json!(false);
    let dir = tiny_checkpoint("untied", &c, &tiny_tensors(Dtype::F32));
    let w = LlamaWeights::load_safetensors(&dir.0).unwrap();
    assert!(w.config.tied_embeddings && w.output.is_none());
    // With an lm_head it is used.
    let mut t = tiny_tensors(Dtype::F32);
    t.push(("lm_head.weight".into(), Tensor::new(Dtype::F32, &[16, 8], &[0.5; 128])));
    let dir = tiny_checkpoint("lm-head", &c, &t);
    let w = LlamaWeights::load_safetensors(&dir.0).unwrap();
    assert!(!w.config.tied_embeddings);
    assert_eq!(w.lm_head().data, vec![0.5; 128]);
}

#[test]
fn missing_tensor_is_named() {
    let t: Vec<_> =
        tiny_tensors(Dtype::F32).into_iter().filter(|(n, _)| n != "model.layers.0.mlp.up_proj.weight").collect();
    let dir = tiny_checkpoint("missing", &tiny_config(), &t);
    let e = LlamaWeights::load_safetensors(&dir.0).unwrap_err();
    assert!(matches!(&e, HfError::MissingTensor(n) if n == "model.layers.0.mlp.up_proj.weight"), "{e}");
    assert!(e.to_string().contains("model.layers.0.mlp.up_proj.weight"), "{e}");
}

#[test]
fn wrong_shape_names_tensor_and_shapes() {
    let mut t = tiny_tensors(Dtype::F32);
    t[4].1 = Tensor::new(Dtype::F32, &[8, 8], &[0.0; 64]); // k_proj: [4, 8] expected
    let dir = tiny_checkpoint("shape", &tiny_config(), &t);
    let e = LlamaWeights::load_safetensors(&dir.0).unwrap_err();
    match &e {
        HfError::WrongShape { name, expected, found } => {
            assert_eq!(name, "model.layers.0.self_attn.k_proj.weight");
            assert_eq!((expected.as_slice(), found.as_slice()), (&[4, 8][..], &[8, 8][..]));
        }
        e => panic!("{e}"),
    }
    assert!(e.to_string().contains("[4, 8]") && e.to_string().contains("[8, 8]"), "{e}");
}

#[test]
fn unsupported_dtype_is_named() {
    let mut t = tiny_tensors(Dtype::F32);
    t[3].1 = Tensor::new(Dtype::I8, &[8, 8], &[0.0; 64]);
    let dir = tiny_checkpoint("dtype", &tiny_config(), &t);
    let e = LlamaWeights::load_safetensors(&dir.0).unwrap_err();
    assert!(
        matches!(&e, HfError::UnsupportedDtype { name, dtype } if name == "model.layers.0.self_attn.q_proj.weight" && dtype == "I8"),
        "{e}"
    );
    // Checked before any data is read: an unsupported tensor that is not needed is fine.
    let mut t = tiny_tensors(Dtype::F32);
    t.push(("model.extra".into(), Tensor::new(Dtype::F8_E4M3, &[4], &[0.0; 4])));
    let dir = tiny_checkpoint("extra", &tiny_config(), &t);
    LlamaWeights::load_safetensors(&dir.0).unwrap();
}

#[test]
fn unsupported_rope_scaling_and_architecture() {
    let mut c = tiny_config();
    c["rope_scaling"] = json!({"rope_type": "dynamic", "factor": 2.0});
    let dir = tiny_checkpoint("rope", &c, &tiny_tensors(Dtype::F32));
    let e = HfCheckpoint::open(&dir.0).unwrap_err();
    assert!(matches!(&e, HfError::UnsupportedRopeScaling(t) if t == "dynamic"), "{e}");

    let mut c = tiny_config();
    c["model_type"] = json!("qwen2");
    c["architectures"] = json!(["Qwen2ForCausalLM"]);
    let dir = tiny_checkpoint("qwen2", &c, &tiny_tensors(Dtype::F32));
    let e = HfCheckpoint::open(&dir.0).unwrap_err();
    assert!(matches!(e, HfError::UnsupportedFeature(_)) && e.to_string().contains("bias"), "{e}");

    // A llama config whose checkpoint has attention biases is refused too.
    let mut t = tiny_tensors(Dtype::F32);
    t.push(("model.layers.0.self_attn.q_proj.bias".into(), Tensor::new(Dtype::F32, &[8], &[0.0; 8])));
    let dir = tiny_checkpoint("bias", &tiny_config(), &t);
    let e = HfCheckpoint::open(&dir.0).unwrap_err();
    assert!(e.to_string().contains("q_proj.bias"), "{e}");

    let mut c = tiny_config();
    c["model_type"] = json!("phi3");
    c["architectures"] = json!(["Phi3ForCausalLM"]);
    let dir = tiny_checkpoint("phi3", &c, &tiny_tensors(Dtype::F32));
    let e = HfCheckpoint::open(&dir.0).unwrap_err();
    assert!(matches!(e, HfError::UnsupportedArchitecture { .. }) && e.to_string().contains("phi3"), "{e}");
}

#[test]
fn not_safetensors_and_unknown_formats() {
    let dir = TempDir::new("bad");
    write_json(&dir.0.join("config.json"), &tiny_config());
    let st = dir.0.join("model.safetensors");
    std::fs::write(&st, b"{\"this is\": \"json\"}").unwrap();
    let e = HfCheckpoint::open(&dir.0).unwrap_err();
    assert!(matches!(e, HfError::NotSafetensors { .. }) && e.to_string().contains("not a safetensors file"), "{e}");
    // A valid header but truncated data.
    let bytes = safetensors::serialize(tiny_tensors(Dtype::F32).iter().map(|(n, t)| (n.as_str(), t)), None).unwrap();
    std::fs::write(&st, &bytes[..bytes.len() - 4]).unwrap();
    let e = HfCheckpoint::open(&st).unwrap_err();
    assert!(matches!(e, HfError::NotSafetensors { .. }), "{e}");
    // No config.json beside the file.
    std::fs::remove_file(dir.0.join("config.json")).unwrap();
    let e = HfCheckpoint::open(&st).unwrap_err();
    assert!(e.to_string().contains("config.json"), "{e}");
    // Folder without weights.
    let empty = TempDir::new("empty");
    write_json(&empty.0.join("config.json"), &tiny_config());
    assert!(matches!(HfCheckpoint::open(&empty.0), Err(HfError::NoWeights(_))));

    // Format detection.
    let other = dir.0.join("weights.bin");
    std::fs::write(&other, b"not a model").unwrap();
    assert!(matches!(detect_model_format(&other), Err(ModelFormatError::Unrecognised(_))));
    assert!(matches!(detect_model_format(dir.0.join("nope.gguf")), Err(ModelFormatError::NotFound(_))));
    let gguf_magic = dir.0.join("model.bin");
    std::fs::write(&gguf_magic, b"GGUF\x03\0\0\0").unwrap();
    assert_eq!(detect_model_format(&gguf_magic).unwrap(), ModelFormat::Gguf);
}
