//! tessera-decoder: a reference Llama-family decoder (issue 7).
//!
//! - [`gguf`]: a small GGUF reader and dequantizer (F32, F16, BF16, Q4_0, Q4_1, Q8_0).
//! - [`hf`]: Hugging Face checkpoints (safetensors + config.json; Llama 2/3, Mistral) into
//!   the same f32 weights; [`detect_model_format`] tells the two apart.
//! - [`tokenizer`]: the file's own BPE tokenizer (or a checkpoint's `tokenizer.json`) and
//!   the ChatML chat template.
//! - [`config`] / [`model`]: Llama configuration from GGUF metadata, weights in f32;
//!   random-weight models with Llama-3-8B shapes for speed runs.
//! - [`cpu`]: an f32 CPU forward pass with a KV cache; [`sampling`]: greedy / top-p.
//! - [`gpu`]: the GPU forward pass (cuBLAS linears, Tessera kernels), speed runs and
//!   golden checks; builds without CUDA, needs a GPU only at run time.
//! - [`generate`]: the generation loop shared by `tessera generate` and the tests, over
//!   any [`Decoder`] (CPU or GPU).

pub mod config;
pub mod cpu;
pub mod gguf;
pub mod gpu;
pub mod hf;
pub mod model;
pub mod sampling;
pub mod tokenizer;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use config::LlamaConfig;
pub use cpu::CpuModel;
pub use gguf::{GgufError, GgufFile};
pub use hf::{HfCheckpoint, HfError};
pub use model::LlamaWeights;
pub use sampling::Sampler;
pub use tokenizer::GgufTokenizer;

/// The on-disk format of a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelFormat {
    /// A llama.cpp GGUF file ([`GgufFile`]).
    Gguf,
    /// A Hugging Face checkpoint: a folder, or a `.safetensors` file with `config.json`
    /// beside it ([`HfCheckpoint`]).
    Safetensors,
}

/// A model path that is neither format.
#[derive(Debug, thiserror::Error)]
pub enum ModelFormatError {
    #[error("{0}: no such file or folder")]
    NotFound(PathBuf),
    #[error("{0}: not a model (expected a .gguf file, a .safetensors file, or a folder with config.json and safetensors weights)")]
    Unrecognised(PathBuf),
}

/// Tells a model's format from its path: a folder or a `.safetensors` file is a
/// Hugging Face checkpoint; a `.gguf` file, or any file starting with the `GGUF` magic,
/// is GGUF; anything else is an error.
pub fn detect_model_format(path: impl AsRef<Path>) -> Result<ModelFormat, ModelFormatError> {
    let path = path.as_ref();
    let meta = std::fs::metadata(path).map_err(|_| ModelFormatError::NotFound(path.to_path_buf()))?;
    if meta.is_dir() {
        return Ok(ModelFormat::Safetensors);
    }
    match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
        Some("safetensors") => return Ok(ModelFormat::Safetensors),
        Some("gguf") => return Ok(ModelFormat::Gguf),
        _ => {}
    }
    let mut magic = [0u8; 4];
    let is_gguf = std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
        .is_ok_and(|_| &magic == b"GGUF");
    if is_gguf {
        Ok(ModelFormat::Gguf)
    } else {
        Err(ModelFormatError::Unrecognised(path.to_path_buf()))
    }
}

/// Errors of a forward pass or a generation.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error("the prompt has {prompt} tokens, more than the context of {context} tokens")]
    PromptTooLong { prompt: usize, context: usize },
    #[error("the context is full: {needed} positions needed, {context} available")]
    ContextFull { needed: usize, context: usize },
    #[error("token id {token} is outside the vocabulary of {vocab}")]
    TokenOutOfRange { token: u32, vocab: usize },
    #[error(transparent)]
    Gpu(#[from] gpu::GpuError),
}

/// A model that [`generate`] can drive: runs tokens after its cached context and picks
/// the next one.
pub trait Decoder {
    /// Positions still free in the cache.
    fn remaining(&self) -> usize;
    /// Runs `tokens` after the cached context and returns the next token chosen by
    /// `sampler` from the last position's logits.
    fn next_token(&mut self, tokens: &[u32], sampler: &mut Sampler) -> Result<u32, DecodeError>;
}

impl Decoder for CpuModel<'_> {
    fn remaining(&self) -> usize {
        self.cache.capacity - self.cache.len
    }

    fn next_token(&mut self, tokens: &[u32], sampler: &mut Sampler) -> Result<u32, DecodeError> {
        let logits = self.forward(tokens, false)?;
        Ok(sampler.sample(&logits))
    }
}

/// Figures of one generation.
#[derive(Debug, Clone, Default)]
pub struct GenerationStats {
    pub prompt_tokens: usize,
    pub prefill: Duration,
    pub generated: Vec<u32>,
    /// Time of the decode steps (every generated token after the first).
    pub decode: Duration,
}

impl GenerationStats {
    /// Decode tokens per second (tokens produced by single-token steps).
    pub fn decode_tokens_per_s(&self) -> f64 {
        let steps = self.generated.len().saturating_sub(1);
        if steps == 0 || self.decode.is_zero() {
            return 0.0;
        }
        steps as f64 / self.decode.as_secs_f64()
    }
}

/// Greedy or sampled generation of up to `max_new` tokens after `prompt`, stopping at one of
/// `stop_ids` (which is not emitted) or when the context is full. `on_token` sees each id.
pub fn generate<M: Decoder + ?Sized>(
    model: &mut M,
    prompt: &[u32],
    max_new: usize,
    sampler: &mut Sampler,
    stop_ids: &[u32],
    mut on_token: impl FnMut(u32),
) -> Result<GenerationStats, DecodeError> {
    if prompt.is_empty() {
        return Err(DecodeError::EmptyPrompt);
    }
    let context = model.remaining();
    if prompt.len() > context {
        return Err(DecodeError::PromptTooLong { prompt: prompt.len(), context });
    }
    let mut stats = GenerationStats { prompt_tokens: prompt.len(), ..Default::default() };
    if max_new == 0 {
        return Ok(stats);
    }
    let t = Instant::now();
    let mut next = model.next_token(prompt, sampler)?;
    stats.prefill = t.elapsed();
    let t = Instant::now();
    loop {
        if stop_ids.contains(&next) {
            break;
        }
        stats.generated.push(next);
        on_token(next);
        if stats.generated.len() >= max_new || model.remaining() == 0 {
            break;
        }
        next = model.next_token(&[next], sampler)?;
    }
    stats.decode = t.elapsed();
    Ok(stats)
}
