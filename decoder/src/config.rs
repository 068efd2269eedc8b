//! Llama-family model configuration, read from GGUF metadata or built by hand.

use crate::gguf::{GgufError, GgufFile, Result};

/// How RoPE pairs the dimensions of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopePairing {
    /// llama.cpp's ROPE_TYPE_NORM: rotate pairs (2i, 2i+1). llama.cpp's converter permutes
    /// the Q/K rows of `llama` checkpoints so that this pairing reproduces HF's results.
    Interleaved,
    /// HF / NeoX "rotate half": pairs (i, i + d/2) (safetensors checkpoints, later).
    Half,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    pub n_layers: usize,
    pub hidden: usize,
    pub ffn_hidden: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub rope_base: f32,
    /// Linear RoPE scaling: positions are divided by this (1.0: none).
    pub rope_scale: f32,
    pub rope_pairing: RopePairing,
    pub rms_eps: f32,
    pub vocab: usize,
    /// Context length the model was trained for.
    pub max_context: usize,
    /// The output layer reuses the token embedding.
    pub tied_embeddings: bool,
}

impl LlamaConfig {
    /// Reads the configuration of a `llama`-architecture GGUF file.
    pub fn from_gguf(f: &GgufFile) -> Result<Self> {
        let arch = f.get_str("general.architecture")?;
        if arch != "llama" {
            return Err(GgufError::UnsupportedArchitecture(arch.to_string()));
        }
        let u = |k: &str| f.get_u64(&format!("llama.{k}")).map(|v| v as usize);
        let hidden = u("embedding_length")?;
        let n_heads = u("attention.head_count")?;
        let n_kv_heads = u("attention.head_count_kv").unwrap_or(n_heads);
        if n_heads == 0 || n_kv_heads == 0 || !n_heads.is_multiple_of(n_kv_heads) || !hidden.is_multiple_of(n_heads) {
            return Err(GgufError::Malformed(format!(
                "head counts {n_heads}/{n_kv_heads} do not fit embedding length {hidden}"
            )));
        }
        let head_dim = u("attention.key_length").unwrap_or(hidden / n_heads);
        if let Ok(rot) = u("rope.dimension_count") {
            if rot != head_dim {
                return Err(GgufError::Malformed(format!(
                    "partial RoPE (rope.dimension_count {rot} < head_dim {head_dim}) is not supported"
                )));
            }
        }
        let rope_scale = match f.get_str("llama.rope.scaling.type") {
            Err(GgufError::MissingKey(_)) => 1.0,
            Ok("none") => 1.0,
            Ok("linear") => f.get_f64("llama.rope.scaling.factor")? as f32,
            Ok(other) => {
                return Err(GgufError::Malformed(format!("RoPE scaling `{other}` is not supported (only linear)")))
            }
            Err(e) => return Err(e),
        };
        if f.tensor_info("rope_freqs.weight").is_some() {
            return Err(GgufError::Malformed(
                "per-frequency RoPE factors (rope_freqs.weight) are not supported".into(),
            ));
        }
        let vocab = match u("vocab_size") {
            Ok(v) => v,
            Err(_) => f.get_array("tokenizer.ggml.tokens")?.len(),
        };
        Ok(LlamaConfig {
            n_layers: u("block_count")?,
            hidden,
            ffn_hidden: u("feed_forward_length")?,
            n_heads,
            n_kv_heads,
            head_dim,
            rope_base: f.get_f64("llama.rope.freq_base").unwrap_or(10000.0) as f32,
            rope_scale,
            rope_pairing: RopePairing::Interleaved,
            rms_eps: f.get_f64("llama.attention.layer_norm_rms_epsilon")? as f32,
            vocab,
            max_context: u("context_length")?,
            tied_embeddings: f.tensor_info("output.weight").is_none(),
        })
    }

    /// Llama-3-8B shapes (32 layers, 32 q / 8 kv heads, d = 128, hidden 4096, FFN 14336,
    /// vocab 128256, RoPE base 500000) for speed runs with random weights, where values
    /// do not matter. `n_layers` can be cut down to keep memory small.
    pub fn llama3_8b_shapes() -> Self {
        LlamaConfig {
            n_layers: 32,
            hidden: 4096,
            ffn_hidden: 14336,
            n_heads: 32,
            n_kv_heads: 8,
            head_dim: 128,
            rope_base: 500000.0,
            rope_scale: 1.0,
            rope_pairing: RopePairing::Half,
            rms_eps: 1e-5,
            vocab: 128256,
            max_context: 131072,
            tied_embeddings: false,
        }
    }

    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }

    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }

    /// Number of weight parameters (embedding counted once when tied).
    pub fn n_params(&self) -> usize {
        let per_layer = 2 * self.hidden
            + self.hidden * (self.q_dim() + 2 * self.kv_dim())
            + self.q_dim() * self.hidden
            + 3 * self.hidden * self.ffn_hidden;
        let emb = self.vocab * self.hidden * if self.tied_embeddings { 1 } else { 2 };
        self.n_layers * per_layer + emb + self.hidden
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama3_8b_param_count() {
        let c = LlamaConfig::llama3_8b_shapes();
        // 8.03 B parameters.
        assert_eq!(c.n_params(), 8_030_261_248);
        assert_eq!(c.n_heads / c.n_kv_heads, 4);
    }
}
