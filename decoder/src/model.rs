//! Llama-family weights, dequantized to f32 (the CPU path; the GPU path converts these to
//! bf16 on upload).

use std::path::Path;

use crate::config::LlamaConfig;
use crate::gguf::{GgufError, GgufFile, Result};

/// A row-major matrix: `rows` outputs of `cols` inputs each (a linear layer `y = W x`).
#[derive(Debug, Clone)]
pub struct Matrix {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f32>,
}

impl Matrix {
    pub fn row(&self, r: usize) -> &[f32] {
        &self.data[r * self.cols..(r + 1) * self.cols]
    }
}

#[derive(Debug, Clone)]
pub struct LayerWeights {
    pub attn_norm: Vec<f32>,
    /// [q_dim, hidden]; for GGUF `llama` files the rows of each head are in llama.cpp's
    /// permuted order, matching [`crate::config::RopePairing::Interleaved`].
    pub wq: Matrix,
    /// [kv_dim, hidden], permuted like `wq`.
    pub wk: Matrix,
    /// [kv_dim, hidden]
    pub wv: Matrix,
    /// [hidden, q_dim]
    pub wo: Matrix,
    pub ffn_norm: Vec<f32>,
    /// [ffn_hidden, hidden]
    pub w_gate: Matrix,
    /// [ffn_hidden, hidden]
    pub w_up: Matrix,
    /// [hidden, ffn_hidden]
    pub w_down: Matrix,
}

#[derive(Debug, Clone)]
pub struct LlamaWeights {
    pub config: LlamaConfig,
    /// [vocab, hidden]
    pub embedding: Matrix,
    pub layers: Vec<LayerWeights>,
    pub final_norm: Vec<f32>,
    /// [vocab, hidden]; `None` when tied to `embedding`.
    pub output: Option<Matrix>,
}

fn matrix(f: &GgufFile, name: &str, rows: usize, cols: usize) -> Result<Matrix> {
    let (shape, data) = f.tensor_f32(name)?;
    if shape != [rows, cols] {
        return Err(GgufError::WrongShape { name: name.into(), expected: vec![rows, cols], found: shape });
    }
    Ok(Matrix { rows, cols, data })
}

fn vector(f: &GgufFile, name: &str, n: usize) -> Result<Vec<f32>> {
    let (shape, data) = f.tensor_f32(name)?;
    if shape != [n] {
        return Err(GgufError::WrongShape { name: name.into(), expected: vec![n], found: shape });
    }
    Ok(data)
}

impl LlamaWeights {
    /// Loads a `llama` GGUF file: configuration from its metadata, every weight dequantized.
    pub fn load_gguf(path: impl AsRef<Path>) -> Result<Self> {
        let f = GgufFile::open(path)?;
        Self::from_gguf(&f)
    }

    pub fn from_gguf(f: &GgufFile) -> Result<Self> {
        let c = LlamaConfig::from_gguf(f)?;
        // Reject unsupported tensor types up front, before spending time on the others.
        for t in &f.tensors {
            if !t.ty.is_supported() {
                return Err(GgufError::UnsupportedTensorType { name: t.name.clone(), ty: t.ty });
            }
        }
        let (h, q, kv, ff) = (c.hidden, c.q_dim(), c.kv_dim(), c.ffn_hidden);
        let layers = (0..c.n_layers)
            .map(|i| {
                let n = |s: &str| format!("blk.{i}.{s}.weight");
                Ok(LayerWeights {
                    attn_norm: vector(f, &n("attn_norm"), h)?,
                    wq: matrix(f, &n("attn_q"), q, h)?,
                    wk: matrix(f, &n("attn_k"), kv, h)?,
                    wv: matrix(f, &n("attn_v"), kv, h)?,
                    wo: matrix(f, &n("attn_output"), h, q)?,
                    ffn_norm: vector(f, &n("ffn_norm"), h)?,
                    w_gate: matrix(f, &n("ffn_gate"), ff, h)?,
                    w_up: matrix(f, &n("ffn_up"), ff, h)?,
                    w_down: matrix(f, &n("ffn_down"), h, ff)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let output = if c.tied_embeddings { None } else { Some(matrix(f, "output.weight", c.vocab, h)?) };
        Ok(LlamaWeights {
            embedding: matrix(f, "token_embd.weight", c.vocab, h)?,
            layers,
            final_norm: vector(f, "output_norm.weight", h)?,
            output,
            config: c,
        })
    }

    /// Random weights for a configuration (speed runs where values do not matter): uniform
    /// in ±1/sqrt(fan_in), norms at 1. Allocates `4 * config.n_params()` bytes — use
    /// [`LlamaConfig::llama3_8b_shapes`] with fewer layers on small machines.
    pub fn random(config: &LlamaConfig, seed: u64) -> Self {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut mat = |rows: usize, cols: usize| {
            let scale = 2.0 / (cols as f32).sqrt();
            let data = (0..rows * cols)
                .map(|_| {
                    // xorshift64*: fast and good enough for weights whose values do not matter.
                    state ^= state >> 12;
                    state ^= state << 25;
                    state ^= state >> 27;
                    let r = state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40;
                    (r as f32 / (1u64 << 24) as f32 - 0.5) * scale
                })
                .collect();
            Matrix { rows, cols, data }
        };
        let c = config;
        let (h, q, kv, ff) = (c.hidden, c.q_dim(), c.kv_dim(), c.ffn_hidden);
        let layers = (0..c.n_layers)
            .map(|_| LayerWeights {
                attn_norm: vec![1.0; h],
                wq: mat(q, h),
                wk: mat(kv, h),
                wv: mat(kv, h),
                wo: mat(h, q),
                ffn_norm: vec![1.0; h],
                w_gate: mat(ff, h),
                w_up: mat(ff, h),
                w_down: mat(h, ff),
            })
            .collect();
        let embedding = mat(c.vocab, h);
        let output = if c.tied_embeddings { None } else { Some(mat(c.vocab, h)) };
        LlamaWeights { config: c.clone(), embedding, layers, final_norm: vec![1.0; h], output }
    }

    /// The output projection (the embedding when tied).
    pub fn lm_head(&self) -> &Matrix {
        self.output.as_ref().unwrap_or(&self.embedding)
    }
}
