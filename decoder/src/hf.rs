//! Hugging Face checkpoints: `config.json` + safetensors weights of Llama-family models
//! (Llama 2/3, Mistral), loaded into the same f32 [`LlamaWeights`] as the GGUF path.
//!
//! A checkpoint is a folder with `config.json` and either `model.safetensors`, or shards
//! listed in `model.safetensors.index.json` (`weight_map`), or any `*.safetensors` files;
//! or a single `.safetensors` file with a `config.json` beside it.
//!
//! The header of each file is parsed by the `safetensors` crate (its validated `Metadata`:
//! offsets contiguous, sizes matching dtype × shape); tensor bytes are then read one tensor
//! at a time from the file, so memory peaks at the f32 weights plus one raw tensor. Weights
//! in F32, F16 and BF16 are converted to f32; anything else is a typed error.
//!
//! Differences from GGUF files that matter:
//! - HF checkpoints keep Q/K rows in the "rotate half" layout, so the configuration says
//!   [`RopePairing::Half`]; llama.cpp's converter permutes them for its interleaved pairing.
//! - RoPE scaling comes from `rope_scaling` (`linear`, `llama3`; anything else is refused).
//! - Qwen2 checkpoints need q/k/v projection biases, which neither forward pass has: they
//!   are refused with [`HfError::UnsupportedFeature`] rather than run without them.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use ::safetensors::tensor::{Metadata, TensorInfo};
use ::safetensors::Dtype;
use half::{bf16, f16};
use rayon::prelude::*;
use serde_json::Value;

use crate::config::{LlamaConfig, RopePairing, RopeScaling};
use crate::model::{LayerWeights, LlamaWeights, Matrix};

/// What can go wrong loading a Hugging Face safetensors checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum HfError {
    #[error("I/O error on {path}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a safetensors file: {reason}")]
    NotSafetensors { path: PathBuf, reason: String },
    #[error(
        "no safetensors weights in {0} (expected model.safetensors, model.safetensors.index.json or *.safetensors)"
    )]
    NoWeights(PathBuf),
    #[error("{path}: {reason}")]
    Config { path: PathBuf, reason: String },
    #[error("unsupported architecture: model_type `{model_type}`, architectures {architectures:?} (supported: llama, mistral)")]
    UnsupportedArchitecture { model_type: String, architectures: Vec<String> },
    #[error("unsupported model feature: {0}")]
    UnsupportedFeature(String),
    #[error("unsupported RoPE scaling `{0}` (supported: none, default, linear, llama3)")]
    UnsupportedRopeScaling(String),
    #[error("missing tensor `{0}`")]
    MissingTensor(String),
    #[error("tensor `{name}` has shape {found:?}, expected {expected:?}")]
    WrongShape { name: String, expected: Vec<usize>, found: Vec<usize> },
    #[error("tensor `{name}` has dtype {dtype}, which this decoder cannot load (supported: F32, F16, BF16)")]
    UnsupportedDtype { name: String, dtype: String },
}

pub type Result<T> = std::result::Result<T, HfError>;

/// safetensors' limit on the header size (the crate's `MAX_HEADER_SIZE`).
const MAX_HEADER: u64 = 100_000_000;

/// One safetensors file: its validated header and where its data starts.
struct Shard {
    path: PathBuf,
    metadata: Metadata,
    /// Absolute offset of the data section (8 + header length).
    data_start: u64,
}

impl Shard {
    fn open(path: &Path) -> Result<Self> {
        let io = |source| HfError::Io { path: path.to_path_buf(), source };
        let not = |reason: String| HfError::NotSafetensors { path: path.to_path_buf(), reason };
        let mut f = File::open(path).map_err(io)?;
        let len = f.metadata().map_err(io)?.len();
        if len < 8 {
            return Err(not(format!("{len} bytes, shorter than the 8-byte header length")));
        }
        let mut n = [0u8; 8];
        f.read_exact(&mut n).map_err(io)?;
        let n = u64::from_le_bytes(n);
        if n > MAX_HEADER || n > len - 8 {
            return Err(not(format!("header length {n} does not fit in a file of {len} bytes")));
        }
        let mut header = vec![0u8; n as usize];
        f.read_exact(&mut header).map_err(io)?;
        let metadata: Metadata =
            serde_json::from_slice(&header).map_err(|e| not(format!("header is not a valid tensor table: {e}")))?;
        let data_start = 8 + n;
        if data_start + metadata.data_len() as u64 != len {
            return Err(not(format!(
                "the header describes {} data bytes, the file has {}",
                metadata.data_len(),
                len - data_start
            )));
        }
        Ok(Shard { path: path.to_path_buf(), metadata, data_start })
    }
}

/// An opened checkpoint: configuration and every tensor's location; tensor data is read
/// on demand by [`HfCheckpoint::tensor_f32`].
pub struct HfCheckpoint {
    /// The folder holding `config.json` (and the tokenizer files, when present).
    pub dir: PathBuf,
    /// The configuration from `config.json`; `tied_embeddings` also accounts for a missing
    /// `lm_head.weight`.
    pub config: LlamaConfig,
    /// The parsed `config.json`.
    pub config_json: Value,
    shards: Vec<Shard>,
    /// Tensor name → (shard, info).
    index: HashMap<String, (usize, TensorInfo)>,
}

impl std::fmt::Debug for HfCheckpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HfCheckpoint")
            .field("dir", &self.dir)
            .field("shards", &self.shards.len())
            .field("tensors", &self.index.len())
            .finish()
    }
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|source| HfError::Io { path: path.to_path_buf(), source })?;
    serde_json::from_str(&text)
        .map_err(|e| HfError::Config { path: path.to_path_buf(), reason: format!("not valid JSON: {e}") })
}

/// The safetensors files of a folder (see the module docs for the order of preference).
fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let v = read_json(&index)?;
        let map = v
            .get("weight_map")
            .and_then(Value::as_object)
            .ok_or_else(|| HfError::Config { path: index.clone(), reason: "no `weight_map` object".into() })?;
        let files = map
            .values()
            .map(|f| {
                f.as_str().map(|s| dir.join(s)).ok_or_else(|| HfError::Config {
                    path: index.clone(),
                    reason: format!("weight_map value {f} is not a file name"),
                })
            })
            .collect::<Result<BTreeSet<_>>>()?;
        return Ok(files.into_iter().collect());
    }
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let mut files = std::fs::read_dir(dir)
        .map_err(|source| HfError::Io { path: dir.to_path_buf(), source })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "safetensors"))
        .collect::<Vec<_>>();
    files.sort();
    if files.is_empty() {
        return Err(HfError::NoWeights(dir.to_path_buf()));
    }
    Ok(files)
}

impl HfCheckpoint {
    /// Opens a checkpoint folder, or a single `.safetensors` file with `config.json` beside
    /// it: reads the configuration and every file's tensor table (no tensor data).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let (dir, files) = if path.is_dir() {
            (path.to_path_buf(), None)
        } else {
            let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
            (if dir.as_os_str().is_empty() { PathBuf::from(".") } else { dir }, Some(vec![path.to_path_buf()]))
        };
        let config_path = dir.join("config.json");
        if !config_path.is_file() {
            return Err(HfError::Config {
                path: config_path,
                reason: "not found (a safetensors checkpoint needs its config.json)".into(),
            });
        }
        let config_json = read_json(&config_path)?;
        let mut config = LlamaConfig::from_hf_json(&config_json).map_err(|e| match e {
            HfError::Config { reason, .. } => HfError::Config { path: config_path.clone(), reason },
            e => e,
        })?;
        let files = match files {
            Some(f) => f,
            None => weight_files(&dir)?,
        };
        let shards = files.iter().map(|f| Shard::open(f)).collect::<Result<Vec<_>>>()?;
        let mut index = HashMap::new();
        for (i, s) in shards.iter().enumerate() {
            for name in s.metadata.offset_keys() {
                let info = s.metadata.info(&name).expect("a name from the same table").clone();
                index.insert(name, (i, info));
            }
        }
        // Projection biases (Qwen2, or Llama with attention_bias / mlp_bias) have no place in
        // the forward passes: refuse them rather than compute wrong results.
        if let Some(b) = index.keys().filter(|n| n.ends_with("_proj.bias")).min() {
            return Err(HfError::UnsupportedFeature(format!(
                "projection biases (the checkpoint has `{b}`); the forward passes have no bias terms"
            )));
        }
        if !index.contains_key("lm_head.weight") {
            config.tied_embeddings = true;
        }
        Ok(HfCheckpoint { dir, config, config_json, shards, index })
    }

    /// Names of every tensor, sorted.
    pub fn tensor_names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.index.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }

    /// The shape of a tensor, if present.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.index.get(name).map(|(_, i)| i.shape.as_slice())
    }

    /// Reads one tensor and converts it to f32: (shape, row-major values).
    pub fn tensor_f32(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let (shard, info) = self.index.get(name).ok_or_else(|| HfError::MissingTensor(name.to_string()))?;
        let unsupported = || HfError::UnsupportedDtype { name: name.to_string(), dtype: format!("{:?}", info.dtype) };
        if !matches!(info.dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16) {
            return Err(unsupported());
        }
        let s = &self.shards[*shard];
        let io = |source| HfError::Io { path: s.path.clone(), source };
        let (start, end) = info.data_offsets;
        let mut bytes = vec![0u8; end - start];
        let mut f = File::open(&s.path).map_err(io)?;
        f.seek(SeekFrom::Start(s.data_start + start as u64)).map_err(io)?;
        f.read_exact(&mut bytes).map_err(io)?;
        let data: Vec<f32> = match info.dtype {
            Dtype::F32 => bytes.par_chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            Dtype::F16 => bytes.par_chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            Dtype::BF16 => bytes.par_chunks_exact(2).map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            _ => return Err(unsupported()),
        };
        Ok((info.shape.clone(), data))
    }

    fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<Matrix> {
        self.check_shape(name, &[rows, cols])?;
        let (_, data) = self.tensor_f32(name)?;
        Ok(Matrix { rows, cols, data })
    }

    fn vector(&self, name: &str, n: usize) -> Result<Vec<f32>> {
        self.check_shape(name, &[n])?;
        Ok(self.tensor_f32(name)?.1)
    }

    fn check_shape(&self, name: &str, expected: &[usize]) -> Result<()> {
        let found = self.shape(name).ok_or_else(|| HfError::MissingTensor(name.to_string()))?;
        if found != expected {
            return Err(HfError::WrongShape { name: name.into(), expected: expected.to_vec(), found: found.to_vec() });
        }
        Ok(())
    }

    /// Every weight the model needs, shapes and dtypes checked before any data is read.
    fn check_all(&self) -> Result<()> {
        let c = &self.config;
        let (h, q, kv, ff) = (c.hidden, c.q_dim(), c.kv_dim(), c.ffn_hidden);
        let mut want: Vec<(String, Vec<usize>)> =
            vec![("model.embed_tokens.weight".into(), vec![c.vocab, h]), ("model.norm.weight".into(), vec![h])];
        if !c.tied_embeddings {
            want.push(("lm_head.weight".into(), vec![c.vocab, h]));
        }
        for i in 0..c.n_layers {
            let p = format!("model.layers.{i}");
            want.extend([
                (format!("{p}.input_layernorm.weight"), vec![h]),
                (format!("{p}.self_attn.q_proj.weight"), vec![q, h]),
                (format!("{p}.self_attn.k_proj.weight"), vec![kv, h]),
                (format!("{p}.self_attn.v_proj.weight"), vec![kv, h]),
                (format!("{p}.self_attn.o_proj.weight"), vec![h, q]),
                (format!("{p}.post_attention_layernorm.weight"), vec![h]),
                (format!("{p}.mlp.gate_proj.weight"), vec![ff, h]),
                (format!("{p}.mlp.up_proj.weight"), vec![ff, h]),
                (format!("{p}.mlp.down_proj.weight"), vec![h, ff]),
            ]);
        }
        for (name, shape) in &want {
            self.check_shape(name, shape)?;
            let dtype = self.index[name].1.dtype;
            if !matches!(dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16) {
                return Err(HfError::UnsupportedDtype { name: name.clone(), dtype: format!("{dtype:?}") });
            }
        }
        Ok(())
    }
}

impl LlamaWeights {
    /// Loads a Hugging Face checkpoint (folder, or `.safetensors` file with `config.json`
    /// beside it) into f32 weights.
    pub fn load_safetensors(path: impl AsRef<Path>) -> Result<Self> {
        Self::from_hf(&HfCheckpoint::open(path)?)
    }

    /// Reads every weight of an opened checkpoint. Shapes and dtypes of all tensors are
    /// checked before any data is read. With tied embeddings (`tie_word_embeddings`, or no
    /// `lm_head.weight`), the output layer is the token embedding.
    pub fn from_hf(ck: &HfCheckpoint) -> Result<Self> {
        ck.check_all()?;
        let c = ck.config.clone();
        let (h, q, kv, ff) = (c.hidden, c.q_dim(), c.kv_dim(), c.ffn_hidden);
        let layers = (0..c.n_layers)
            .map(|i| {
                let n = |s: &str| format!("model.layers.{i}.{s}.weight");
                Ok(LayerWeights {
                    attn_norm: ck.vector(&n("input_layernorm"), h)?,
                    wq: ck.matrix(&n("self_attn.q_proj"), q, h)?,
                    wk: ck.matrix(&n("self_attn.k_proj"), kv, h)?,
                    wv: ck.matrix(&n("self_attn.v_proj"), kv, h)?,
                    wo: ck.matrix(&n("self_attn.o_proj"), h, q)?,
                    ffn_norm: ck.vector(&n("post_attention_layernorm"), h)?,
                    w_gate: ck.matrix(&n("mlp.gate_proj"), ff, h)?,
                    w_up: ck.matrix(&n("mlp.up_proj"), ff, h)?,
                    w_down: ck.matrix(&n("mlp.down_proj"), h, ff)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let output = if c.tied_embeddings { None } else { Some(ck.matrix("lm_head.weight", c.vocab, h)?) };
        Ok(LlamaWeights {
            embedding: ck.matrix("model.embed_tokens.weight", c.vocab, h)?,
            layers,
            final_norm: ck.vector("model.norm.weight", h)?,
            output,
            config: c,
        })
    }
}

/// A `config.json` error without the path (filled in by [`HfCheckpoint::open`]).
fn cfg_err(reason: impl Into<String>) -> HfError {
    HfError::Config { path: PathBuf::from("config.json"), reason: reason.into() }
}

impl LlamaConfig {
    /// The configuration of a Llama-family `config.json` (model_type `llama` or `mistral`).
    /// Qwen2 (attention biases), non-SiLU activations, MLP/attention biases and RoPE
    /// scalings other than linear and llama3 are refused with typed errors.
    /// `tied_embeddings` is `tie_word_embeddings` (default false); [`HfCheckpoint::open`]
    /// also sets it when the checkpoint has no `lm_head.weight`.
    pub fn from_hf_json(j: &Value) -> Result<Self> {
        let architectures: Vec<String> = j
            .get("architectures")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
            .unwrap_or_default();
        let model_type = j.get("model_type").and_then(Value::as_str).unwrap_or("").to_string();
        let unsupported = || HfError::UnsupportedArchitecture {
            model_type: model_type.clone(),
            architectures: architectures.clone(),
        };
        let is_qwen2 = model_type == "qwen2" || architectures.iter().any(|a| a == "Qwen2ForCausalLM");
        if is_qwen2 {
            return Err(HfError::UnsupportedFeature(
                "Qwen2 needs q/k/v projection biases (attention bias), which the forward passes do not implement"
                    .into(),
            ));
        }
        let known_type = matches!(model_type.as_str(), "llama" | "mistral");
        let known_arch = architectures.iter().any(|a| a == "LlamaForCausalLM" || a == "MistralForCausalLM");
        if !(known_type || model_type.is_empty() && known_arch) || !(architectures.is_empty() || known_arch) {
            return Err(unsupported());
        }

        let get = |k: &str| j.get(k).filter(|v| !v.is_null());
        let usize_of = |k: &str| -> Result<usize> {
            let v = get(k).ok_or_else(|| cfg_err(format!("missing `{k}`")))?;
            v.as_u64().map(|x| x as usize).ok_or_else(|| cfg_err(format!("`{k}` = {v} is not a non-negative integer")))
        };
        let f64_or = |k: &str, default: f64| -> Result<f64> {
            match get(k) {
                None => Ok(default),
                Some(v) => v.as_f64().ok_or_else(|| cfg_err(format!("`{k}` = {v} is not a number"))),
            }
        };
        let bool_or = |k: &str, default: bool| -> Result<bool> {
            match get(k) {
                None => Ok(default),
                Some(v) => v.as_bool().ok_or_else(|| cfg_err(format!("`{k}` = {v} is not a boolean"))),
            }
        };

        for k in ["hidden_act", "hidden_activation"] {
            if let Some(act) = get(k) {
                if act.as_str() != Some("silu") {
                    return Err(HfError::UnsupportedFeature(format!("activation {k} = {act} (supported: silu)")));
                }
            }
        }
        for k in ["attention_bias", "mlp_bias"] {
            if bool_or(k, false)? {
                return Err(HfError::UnsupportedFeature(format!("`{k}: true`; the forward passes have no bias terms")));
            }
        }

        let hidden = usize_of("hidden_size")?;
        let n_heads = usize_of("num_attention_heads")?;
        let n_kv_heads = if get("num_key_value_heads").is_some() { usize_of("num_key_value_heads")? } else { n_heads };
        if n_heads == 0 || n_kv_heads == 0 || !n_heads.is_multiple_of(n_kv_heads) {
            return Err(cfg_err(format!("{n_heads} attention heads do not group over {n_kv_heads} kv heads")));
        }
        let head_dim = if get("head_dim").is_some() {
            usize_of("head_dim")?
        } else if hidden.is_multiple_of(n_heads) {
            hidden / n_heads
        } else {
            return Err(cfg_err(format!("hidden_size {hidden} is not a multiple of {n_heads} heads")));
        };
        if head_dim == 0 || !head_dim.is_multiple_of(2) {
            return Err(cfg_err(format!("head_dim {head_dim} is not a positive even number")));
        }
        if let Some(p) = get("partial_rotary_factor") {
            if p.as_f64() != Some(1.0) {
                return Err(HfError::UnsupportedFeature(format!("partial RoPE (partial_rotary_factor = {p})")));
            }
        }
        let rope_scaling = match get("rope_scaling") {
            None => RopeScaling::None,
            Some(s) => rope_scaling_from_json(s)?,
        };
        let max_context = usize_of("max_position_embeddings")?;
        // Mistral 7B v0.1 has a 4096-position sliding window; later Mistrals set null.
        let sliding_window = match get("sliding_window") {
            Some(_) if bool_or("use_sliding_window", true)? => Some(usize_of("sliding_window")?),
            _ => None,
        };
        Ok(LlamaConfig {
            n_layers: usize_of("num_hidden_layers")?,
            hidden,
            ffn_hidden: usize_of("intermediate_size")?,
            n_heads,
            n_kv_heads,
            head_dim,
            rope_base: f64_or("rope_theta", 10000.0)? as f32,
            rope_scaling,
            rope_pairing: RopePairing::Half,
            rms_eps: f64_or("rms_norm_eps", 1e-6)? as f32,
            vocab: usize_of("vocab_size")?,
            max_context,
            tied_embeddings: bool_or("tie_word_embeddings", false)?,
            sliding_window: sliding_window.filter(|&w| w < max_context),
        })
    }
}

/// `rope_scaling` of a `config.json`: `{"rope_type" | "type": ..., ...}`.
fn rope_scaling_from_json(s: &Value) -> Result<RopeScaling> {
    let ty = s
        .get("rope_type")
        .or_else(|| s.get("type"))
        .and_then(Value::as_str)
        .ok_or_else(|| cfg_err(format!("rope_scaling {s} has no `rope_type`")))?;
    let num = |k: &str| -> Result<f64> {
        s.get(k)
            .and_then(Value::as_f64)
            .ok_or_else(|| cfg_err(format!("rope_scaling of type {ty} needs a numeric `{k}`")))
    };
    Ok(match ty {
        "default" => RopeScaling::None,
        "linear" => RopeScaling::Linear { factor: num("factor")? as f32 },
        "llama3" => {
            let scaling = RopeScaling::Llama3 {
                factor: num("factor")? as f32,
                low_freq_factor: num("low_freq_factor")? as f32,
                high_freq_factor: num("high_freq_factor")? as f32,
                original_max_position_embeddings: num("original_max_position_embeddings")? as usize,
            };
            if let RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings } =
                scaling
            {
                if !(factor > 0.0 && low_freq_factor > 0.0 && high_freq_factor > low_freq_factor)
                    || original_max_position_embeddings == 0
                {
                    return Err(cfg_err(format!(
                        "rope_scaling {s}: needs factor > 0 and high_freq_factor > low_freq_factor > 0"
                    )));
                }
            }
            scaling
        }
        other => return Err(HfError::UnsupportedRopeScaling(other.to_string())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn llama() -> Value {
        json!({
            "architectures": ["LlamaForCausalLM"], "model_type": "llama",
            "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 100,
            "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
            "hidden_act": "silu", "tie_word_embeddings": false,
        })
    }

    #[test]
    fn config_fields() {
        let c = LlamaConfig::from_hf_json(&llama()).unwrap();
        assert_eq!((c.n_layers, c.hidden, c.ffn_hidden, c.n_heads, c.n_kv_heads, c.head_dim), (2, 64, 96, 4, 2, 16));
        assert_eq!((c.rope_base, c.rms_eps, c.vocab, c.max_context), (500000.0, 1e-5, 100, 256));
        assert_eq!(c.rope_pairing, RopePairing::Half);
        assert_eq!(c.rope_scaling, RopeScaling::None);
        assert!(!c.tied_embeddings && c.sliding_window.is_none());
        // Mistral 7B v0.1: sliding window below the context is kept.
        let mut j = llama();
        j["model_type"] = json!("mistral");
        j["architectures"] = json!(["MistralForCausalLM"]);
        j["sliding_window"] = json!(128);
        assert_eq!(LlamaConfig::from_hf_json(&j).unwrap().sliding_window, Some(128));
        j["sliding_window"] = Value::Null;
        assert_eq!(LlamaConfig::from_hf_json(&j).unwrap().sliding_window, None);
    }

    #[test]
    fn rope_scaling_types() {
        let mut j = llama();
        j["rope_scaling"] = json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192});
        assert_eq!(
            LlamaConfig::from_hf_json(&j).unwrap().rope_scaling,
            RopeScaling::Llama3 {
                factor: 8.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 8192
            }
        );
        j["rope_scaling"] = json!({"type": "linear", "factor": 2.0});
        assert_eq!(LlamaConfig::from_hf_json(&j).unwrap().rope_scaling, RopeScaling::Linear { factor: 2.0 });
        j["rope_scaling"] = json!({"rope_type": "yarn", "factor": 4.0});
        let e = LlamaConfig::from_hf_json(&j).unwrap_err();
        assert!(matches!(&e, HfError::UnsupportedRopeScaling(t) if t == "yarn"), "{e}");
        j["rope_scaling"] = json!({"rope_type": "llama3", "factor": 8.0});
        let e = LlamaConfig::from_hf_json(&j).unwrap_err();
        assert!(e.to_string().contains("low_freq_factor"), "{e}");
    }

    #[test]
    fn refused_architectures() {
        let mut j = llama();
        j["model_type"] = json!("qwen2");
        j["architectures"] = json!(["Qwen2ForCausalLM"]);
        let e = LlamaConfig::from_hf_json(&j).unwrap_err();
        assert!(matches!(e, HfError::UnsupportedFeature(_)), "{e}");
        assert!(e.to_string().contains("Qwen2") && e.to_string().contains("bias"), "{e}");
        j["model_type"] = json!("gpt2");
        j["architectures"] = json!(["GPT2LMHeadModel"]);
        let e = LlamaConfig::from_hf_json(&j).unwrap_err();
        assert!(matches!(e, HfError::UnsupportedArchitecture { .. }), "{e}");
        let mut j = llama();
        j["attention_bias"] = json!(true);
        assert!(matches!(LlamaConfig::from_hf_json(&j), Err(HfError::UnsupportedFeature(_))));
        let mut j = llama();
        j["hidden_act"] = json!("gelu");
        assert!(matches!(LlamaConfig::from_hf_json(&j), Err(HfError::UnsupportedFeature(_))));
        let mut j = llama();
        j.as_object_mut().unwrap().remove("hidden_size");
        let e = LlamaConfig::from_hf_json(&j).unwrap_err();
        assert!(e.to_string().contains("hidden_size"), "{e}");
    }
}
