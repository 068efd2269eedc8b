//! Llama-family model configuration, read from GGUF metadata or built by hand.

use crate::gguf::{GgufError, GgufFile, Result};

/// How RoPE pairs the dimensions of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopePairing {
    /// llama.cpp's ROPE_TYPE_NORM: rotate pairs (2i, 2i+1). llama.cpp's converter permutes
    /// the Q/K rows of `llama` checkpoints so that this pairing reproduces HF's results.
    Interleaved,
    /// HF / NeoX "rotate half": pairs (i, i + d/2), the layout of HF safetensors
    /// checkpoints (their Q/K rows are not permuted).
    Half,
}

/// How RoPE frequencies are scaled for contexts beyond the training length.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RopeScaling {
    /// Plain RoPE: `θ_i = base^(-2i/d)`.
    None,
    /// Linear ("position interpolation"): positions are divided by `factor`.
    Linear { factor: f32 },
    /// Llama 3.1's frequency-dependent scaling (HF `rope_type = "llama3"`): frequencies whose
    /// wavelength exceeds `original_max_position_embeddings / low_freq_factor` are divided
    /// by `factor`, those shorter than `original_max_position_embeddings /
    /// high_freq_factor` are kept, and the band between is interpolated smoothly.
    Llama3 { factor: f32, low_freq_factor: f32, high_freq_factor: f32, original_max_position_embeddings: usize },
}

impl RopeScaling {
    /// The factor positions are divided by (1 except for [`RopeScaling::Linear`]).
    pub fn position_divisor(&self) -> f32 {
        match *self {
            RopeScaling::Linear { factor } => factor,
            _ => 1.0,
        }
    }
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
    /// RoPE frequency scaling (see [`LlamaConfig::rope_inv_freq`]).
    pub rope_scaling: RopeScaling,
    pub rope_pairing: RopePairing,
    pub rms_eps: f32,
    pub vocab: usize,
    /// Context length the model was trained for.
    pub max_context: usize,
    /// The output layer reuses the token embedding.
    pub tied_embeddings: bool,
    /// Sliding-window attention of the checkpoint (Mistral 7B v0.1). The forward passes
    /// attend to the whole context, so they match the model only up to this many positions:
    /// `tessera generate` refuses larger contexts.
    pub sliding_window: Option<usize>,
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
        let rope_scaling = match f.get_str("llama.rope.scaling.type") {
            Err(GgufError::MissingKey(_)) => RopeScaling::None,
            Ok("none") => RopeScaling::None,
            Ok("linear") => RopeScaling::Linear { factor: f.get_f64("llama.rope.scaling.factor")? as f32 },
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
            rope_scaling,
            rope_pairing: RopePairing::Interleaved,
            rms_eps: f.get_f64("llama.attention.layer_norm_rms_epsilon")? as f32,
            vocab,
            max_context: u("context_length")?,
            tied_embeddings: f.tensor_info("output.weight").is_none(),
            sliding_window: None,
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
            rope_scaling: RopeScaling::None,
            rope_pairing: RopePairing::Half,
            rms_eps: 1e-5,
            vocab: 128256,
            max_context: 131072,
            tied_embeddings: false,
            sliding_window: None,
        }
    }

    /// The inverse RoPE frequency of each of the `head_dim / 2` pairs, with the
    /// frequency-dependent part of [`LlamaConfig::rope_scaling`] applied (Llama 3); linear
    /// scaling is applied to positions instead ([`RopeScaling::position_divisor`]).
    /// Computed in f64 like HF's `_compute_llama3_parameters` computes it in f32 — the
    /// same formula, rounding aside.
    pub fn rope_inv_freq(&self) -> Vec<f64> {
        let d = self.head_dim as f64;
        let base = self.rope_base as f64;
        (0..self.head_dim / 2)
            .map(|i| {
                let f = 1.0 / base.powf((2 * i) as f64 / d);
                match self.rope_scaling {
                    RopeScaling::Llama3 {
                        factor,
                        low_freq_factor,
                        high_freq_factor,
                        original_max_position_embeddings,
                    } => {
                        let (factor, low, high) = (factor as f64, low_freq_factor as f64, high_freq_factor as f64);
                        let old = original_max_position_embeddings as f64;
                        let wavelen = 2.0 * std::f64::consts::PI / f;
                        if wavelen < old / high {
                            f
                        } else if wavelen > old / low {
                            f / factor
                        } else {
                            let smooth = (old / wavelen - low) / (high - low);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    }
                    _ => f,
                }
            })
            .collect()
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

    /// Llama 3.1 8B's scaling (factor 8, low 1, high 4, original context 8192, base 500000,
    /// d = 128) against values worked out by hand from HF's formula.
    #[test]
    fn llama3_rope_scaling() {
        let mut c = LlamaConfig::llama3_8b_shapes();
        c.rope_scaling = RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192,
        };
        let plain = LlamaConfig::llama3_8b_shapes().rope_inv_freq();
        let scaled = c.rope_inv_freq();
        assert_eq!(scaled.len(), 64);
        // Wavelengths: below 8192 / 4 = 2048 kept, above 8192 / 1 divided by 8.
        // Pair 0: θ = 1, wavelength 2π: high frequency, kept.
        assert_eq!(scaled[0], 1.0);
        // Pair 20: θ = 500000^(-40/128) = 0.016560, wavelength 379.4 < 2048: kept.
        assert!((scaled[20] - 0.016560440).abs() < 1e-9);
        assert_eq!(scaled[20], plain[20]);
        // Pair 40: θ = 500000^(-80/128) = 2.7425e-4, wavelength 22911 > 8192: θ / 8.
        let t40 = 2.742481757e-4;
        assert!((scaled[40] / (t40 / 8.0) - 1.0).abs() < 1e-9, "{} vs {}", scaled[40], t40 / 8.0);
        // Pair 30: θ = 500000^(-60/128) = 2.1311e-3, wavelength 2948.3, in the band:
        // smooth = (8192 / 2948.3 - 1) / (4 - 1) = 0.59285, θ' = (1 - s) θ / 8 + s θ.
        let t30 = 500000f64.powf(-60.0 / 128.0);
        let wl = 2.0 * std::f64::consts::PI / t30;
        assert!((wl - 2948.3).abs() < 0.05, "{wl}");
        let s = (8192.0 / wl - 1.0) / 3.0;
        assert!((s - 0.59285).abs() < 1e-5, "{s}");
        let want = (1.0 - s) * t30 / 8.0 + s * t30;
        assert!((scaled[30] / want - 1.0).abs() < 1e-12);
        // Numerically: 2.1311e-3 * (0.40715 / 8 + 0.59285) = 1.37189e-3.
        assert!((scaled[30] - 1.37189e-3).abs() < 1e-8, "{}", scaled[30]);
        // Monotone: frequencies still decrease with the pair index.
        assert!(scaled.windows(2).all(|w| w[1] < w[0]));
        assert_eq!(c.rope_scaling.position_divisor(), 1.0);
        assert_eq!(RopeScaling::Linear { factor: 4.0 }.position_divisor(), 4.0);
    }

    #[test]
    fn llama3_8b_param_count() {
        let c = LlamaConfig::llama3_8b_shapes();
        // 8.03 B parameters.
        assert_eq!(c.n_params(), 8_030_261_248);
        assert_eq!(c.n_heads / c.n_kv_heads, 4);
    }
}
