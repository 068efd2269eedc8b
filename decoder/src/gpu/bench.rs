//! Decode speed on the GPU: tokens/s of greedy steps (forward of one token per sequence,
//! logits, argmax, the ids back on the host) after a prefill of real tokens or over a
//! random KV cache, with the attention launches timed separately by CUDA events.

use std::time::Instant;

use super::forward::AttnTimer;
use super::{GpuError, GpuModel};
use crate::DecodeError;

/// One speed measurement.
#[derive(Clone, Debug, PartialEq)]
pub struct DecodeSpeed {
    pub batch: usize,
    /// Cached positions when the timed steps start.
    pub start_len: usize,
    /// Prefill of `start_len` real tokens per sequence (wall clock after a sync); `None`
    /// for a random cache.
    pub prefill_ms: Option<f64>,
    /// Timed decode steps (after the warm-up steps).
    pub steps: usize,
    /// Wall-clock time per step (one token for every sequence).
    pub ms_per_step: f64,
    /// `batch · steps / time`.
    pub tokens_per_s: f64,
    /// GPU time of the attention launches (split + combine) per step.
    pub attn_ms_per_step: f64,
}

impl DecodeSpeed {
    /// Attention's share of the step time.
    pub fn attn_share(&self) -> f64 {
        if self.ms_per_step > 0.0 {
            self.attn_ms_per_step / self.ms_per_step
        } else {
            0.0
        }
    }
}

/// Prefills `prompt` in every sequence (timed), then times `steps` greedy steps after
/// `warmup` untimed ones. The cache must hold `prompt + warmup + steps` positions.
pub fn decode_after_prefill(
    model: &mut GpuModel,
    prompt: &[u32],
    warmup: usize,
    steps: usize,
) -> Result<DecodeSpeed, DecodeError> {
    model.reset();
    let b = model.batch();
    let tokens: Vec<u32> = (0..b).flat_map(|_| prompt.iter().copied()).collect();
    model.rt.synchronize().map_err(GpuError::from)?;
    let t = Instant::now();
    model.forward(&tokens, prompt.len())?;
    model.rt.synchronize().map_err(GpuError::from)?;
    let prefill_ms = t.elapsed().as_secs_f64() * 1e3;
    let first = model.argmax()?;
    let mut r = timed_steps(model, first, warmup, steps)?;
    r.prefill_ms = Some(prefill_ms);
    r.start_len = prompt.len() + warmup;
    Ok(r)
}

/// Fills the cache with `len` random positions, then times `steps` greedy steps after
/// `warmup` ones, starting from arbitrary token ids.
pub fn decode_over_random_cache(
    model: &mut GpuModel,
    len: usize,
    warmup: usize,
    steps: usize,
    seed: u64,
) -> Result<DecodeSpeed, DecodeError> {
    model.cache.fill_random(&model.rt, len, seed, 1.0)?;
    let vocab = model.config().vocab;
    let first = (0..model.batch()).map(|i| ((i * 7919 + 13) % vocab) as u32).collect();
    let mut r = timed_steps(model, first, warmup, steps)?;
    r.start_len = len + warmup;
    Ok(r)
}

fn timed_steps(
    model: &mut GpuModel,
    mut ids: Vec<u32>,
    warmup: usize,
    steps: usize,
) -> Result<DecodeSpeed, DecodeError> {
    if steps == 0 {
        return Err(GpuError::Config("a speed run needs at least one step".into()).into());
    }
    for _ in 0..warmup {
        model.forward(&ids, 1)?;
        ids = model.argmax()?;
    }
    model.attn_timer = Some(AttnTimer::default());
    let t = Instant::now();
    for _ in 0..steps {
        model.forward(&ids, 1)?;
        ids = model.argmax()?;
        if let Some(timer) = model.attn_timer.as_mut() {
            timer.collect()?;
        }
    }
    let wall = t.elapsed().as_secs_f64();
    let attn = model.attn_timer.take().map_or(0.0, |t| t.total.as_secs_f64());
    let b = model.batch();
    Ok(DecodeSpeed {
        batch: b,
        start_len: 0,
        prefill_ms: None,
        steps,
        ms_per_step: wall * 1e3 / steps as f64,
        tokens_per_s: (b * steps) as f64 / wall,
        attn_ms_per_step: attn * 1e3 / steps as f64,
    })
}
