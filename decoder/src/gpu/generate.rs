//! [`crate::Decoder`] for [`GpuModel`] (batch 1), so `tessera generate --device cuda` uses
//! the same loop as the CPU path.
//!
//! Greedy decoding picks the token on the GPU (the `argmax` kernel; 4 bytes come back).
//! Temperature / top-p sampling copies the logits (vocab f32 values, 192 KiB for
//! SmolLM2) to the host and reuses [`crate::Sampler`]: a sort-based nucleus cut is not a
//! kernel tessera-kernels has, and one copy per token costs far less than a decode step.

use super::{GpuError, GpuModel};
use crate::{DecodeError, Decoder, Sampler};

impl Decoder for GpuModel {
    fn remaining(&self) -> usize {
        self.cache.remaining()
    }

    fn next_token(&mut self, tokens: &[u32], sampler: &mut Sampler) -> Result<u32, DecodeError> {
        if self.batch() != 1 {
            return Err(
                GpuError::Config(format!("generation runs one sequence; this model holds {}", self.batch())).into()
            );
        }
        self.forward(tokens, tokens.len())?;
        if sampler.is_greedy() {
            Ok(self.argmax()?[0])
        } else {
            Ok(sampler.sample(&self.logits_host()?))
        }
    }
}
