//! tessera-decoder: a reference Llama-family decoder (issue 7).
//!
//! - [`gguf`]: a small GGUF reader and dequantizer (F32, F16, BF16, Q4_0, Q4_1, Q8_0).
//! - [`tokenizer`]: the file's own BPE tokenizer and ChatML chat template.
//! - [`config`] / [`model`]: Llama configuration from GGUF metadata, weights in f32;
//!   random-weight models with Llama-3-8B shapes for speed runs.
//! - [`cpu`]: an f32 CPU forward pass with a KV cache; [`sampling`]: greedy / top-p.
//! - [`generate`]: the generation loop shared by `tessera generate` and the tests.

pub mod config;
pub mod cpu;
pub mod gguf;
pub mod model;
pub mod sampling;
pub mod tokenizer;

use std::time::{Duration, Instant};

pub use config::LlamaConfig;
pub use cpu::CpuModel;
pub use gguf::{GgufError, GgufFile};
pub use model::LlamaWeights;
pub use sampling::Sampler;
pub use tokenizer::GgufTokenizer;

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
pub fn generate(
    model: &mut CpuModel<'_>,
    prompt: &[u32],
    max_new: usize,
    sampler: &mut Sampler,
    stop_ids: &[u32],
    mut on_token: impl FnMut(u32),
) -> Result<GenerationStats, DecodeError> {
    if prompt.is_empty() {
        return Err(DecodeError::EmptyPrompt);
    }
    let context = model.cache.capacity - model.cache.len;
    if prompt.len() > context {
        return Err(DecodeError::PromptTooLong { prompt: prompt.len(), context });
    }
    let mut stats = GenerationStats { prompt_tokens: prompt.len(), ..Default::default() };
    if max_new == 0 {
        return Ok(stats);
    }
    let t = Instant::now();
    let mut logits = model.forward(prompt, false)?;
    stats.prefill = t.elapsed();
    let t = Instant::now();
    loop {
        let next = sampler.sample(&logits);
        if stop_ids.contains(&next) {
            break;
        }
        stats.generated.push(next);
        on_token(next);
        if stats.generated.len() >= max_new || model.cache.len >= model.cache.capacity {
            break;
        }
        logits = model.forward(&[next], false)?;
    }
    stats.decode = t.elapsed();
    Ok(stats)
}
