//! Model weights on the GPU: bf16 linear layers (Q/K/V fused into one `[q + 2·kv, hidden]`
//! matrix, gate/up into one `[2·ffn, hidden]`), f32 norm weights, a bf16 embedding that
//! doubles as the output layer when tied.
//!
//! Real models are converted on the host ([`LlamaWeights`] f32 → bf16, round to nearest
//! even) and uploaded; random models (speed runs) are filled on the device.

use half::bf16;
use tessera_codegen::host::{HostData, HostTensor};
use tessera_codegen::ir::DType;
use tessera_runtime::{DeviceTensor, Runtime};

use super::kernels::FillUniform;
use super::GpuError;
use crate::config::LlamaConfig;
use crate::model::{LlamaWeights, Matrix};

/// One layer's weights on the device.
pub struct GpuLayer {
    /// `[hidden]` f32.
    pub attn_norm: DeviceTensor,
    /// `[q_dim + 2·kv_dim, hidden]` bf16: rows of `wq`, then `wk`, then `wv`.
    pub wqkv: DeviceTensor,
    /// `[hidden, q_dim]` bf16.
    pub wo: DeviceTensor,
    /// `[hidden]` f32.
    pub ffn_norm: DeviceTensor,
    /// `[2·ffn, hidden]` bf16: rows of `w_gate`, then `w_up`.
    pub wgu: DeviceTensor,
    /// `[hidden, ffn]` bf16.
    pub wd: DeviceTensor,
}

/// All weights of a model on the device.
pub struct GpuWeights {
    pub config: LlamaConfig,
    /// `[vocab, hidden]` bf16.
    pub embedding: DeviceTensor,
    /// `[vocab, hidden]` bf16; `None` when tied to `embedding`.
    pub output: Option<DeviceTensor>,
    /// `[hidden]` f32.
    pub final_norm: DeviceTensor,
    pub layers: Vec<GpuLayer>,
}

/// The rows of `mats` stacked (they must share their column count), as bf16.
pub fn fuse_rows_bf16(mats: &[&Matrix]) -> Result<HostTensor, GpuError> {
    let cols = mats.first().map_or(0, |m| m.cols);
    if let Some(m) = mats.iter().find(|m| m.cols != cols) {
        return Err(GpuError::Weights(format!("cannot stack a {}-column matrix under {cols} columns", m.cols)));
    }
    let rows: usize = mats.iter().map(|m| m.rows).sum();
    let data: Vec<bf16> = mats.iter().flat_map(|m| m.data.iter().map(|&x| bf16::from_f32(x))).collect();
    Ok(HostTensor { shape: vec![rows, cols], data: HostData::BF16(data) })
}

/// A vector as an f32 host tensor.
pub fn vector_f32(v: &[f32]) -> HostTensor {
    HostTensor { shape: vec![v.len()], data: HostData::F32(v.to_vec()) }
}

impl GpuWeights {
    /// Converts to bf16 and uploads (the host copy is made one tensor at a time).
    pub fn upload(rt: &Runtime, w: &LlamaWeights) -> Result<Self, GpuError> {
        let s = rt.stream();
        let up = |t: &HostTensor| -> Result<DeviceTensor, GpuError> { Ok(DeviceTensor::upload(s, t)?.read_only()) };
        let layers = w
            .layers
            .iter()
            .map(|l| {
                Ok(GpuLayer {
                    attn_norm: up(&vector_f32(&l.attn_norm))?,
                    wqkv: up(&fuse_rows_bf16(&[&l.wq, &l.wk, &l.wv])?)?,
                    wo: up(&fuse_rows_bf16(&[&l.wo])?)?,
                    ffn_norm: up(&vector_f32(&l.ffn_norm))?,
                    wgu: up(&fuse_rows_bf16(&[&l.w_gate, &l.w_up])?)?,
                    wd: up(&fuse_rows_bf16(&[&l.w_down])?)?,
                })
            })
            .collect::<Result<Vec<_>, GpuError>>()?;
        Ok(GpuWeights {
            config: w.config.clone(),
            embedding: up(&fuse_rows_bf16(&[&w.embedding])?)?,
            output: w.output.as_ref().map(|o| up(&fuse_rows_bf16(&[o])?)).transpose()?,
            final_norm: up(&vector_f32(&w.final_norm))?,
            layers,
        })
    }

    /// Random weights made on the device (speed runs where values do not matter): linear
    /// layers uniform in `±1/sqrt(fan_in)` like [`LlamaWeights::random`], norms at 1.
    pub fn random(rt: &Runtime, config: &LlamaConfig, seed: u64) -> Result<Self, GpuError> {
        let fill = FillUniform::new(rt)?;
        let s = rt.stream();
        let mut n = 0u64;
        let mut mat = |rows: usize, cols: usize| -> Result<DeviceTensor, GpuError> {
            let t = DeviceTensor::zeros(s, DType::BF16, &[rows, cols])?;
            n += 1;
            fill.fill(rt, &t, seed.wrapping_add(n.wrapping_mul(0x1000_0000_01b3)), 1.0 / (cols as f32).sqrt())?;
            Ok(t.read_only())
        };
        let c = config;
        let (h, q, kv, ff) = (c.hidden, c.q_dim(), c.kv_dim(), c.ffn_hidden);
        let ones = DeviceTensor::upload(s, &vector_f32(&vec![1.0; h]))?.read_only();
        let mut layers = Vec::with_capacity(c.n_layers);
        for _ in 0..c.n_layers {
            layers.push(GpuLayer {
                attn_norm: ones.clone(),
                wqkv: mat(q + 2 * kv, h)?,
                wo: mat(h, q)?,
                ffn_norm: ones.clone(),
                wgu: mat(2 * ff, h)?,
                wd: mat(h, ff)?,
            });
        }
        let embedding = mat(c.vocab, h)?;
        let output = if c.tied_embeddings { None } else { Some(mat(c.vocab, h)?) };
        rt.synchronize()?;
        Ok(GpuWeights { config: c.clone(), embedding, output, final_norm: ones, layers })
    }

    /// The output projection (the embedding when tied).
    pub fn lm_head(&self) -> &DeviceTensor {
        self.output.as_ref().unwrap_or(&self.embedding)
    }

    /// Bytes of weights on the device.
    pub fn bytes(&self) -> usize {
        let t = |x: &DeviceTensor| x.numel() * x.dtype().size_bytes();
        let layers: usize = self
            .layers
            .iter()
            .map(|l| t(&l.attn_norm) + t(&l.wqkv) + t(&l.wo) + t(&l.ffn_norm) + t(&l.wgu) + t(&l.wd))
            .sum();
        layers + t(&self.embedding) + self.output.as_ref().map_or(0, t) + t(&self.final_norm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fused_rows_keep_order_and_round_to_bf16() {
        let a = Matrix { rows: 2, cols: 3, data: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0] };
        let b = Matrix { rows: 1, cols: 3, data: vec![0.1, -0.2, 1.0 + 1.0 / 512.0] };
        let t = fuse_rows_bf16(&[&a, &b]).unwrap();
        assert_eq!(t.shape, vec![3, 3]);
        let v = t.to_f64();
        assert_eq!(&v[..6], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        // bf16 keeps 8 mantissa bits: 0.1 rounds to 0.10009765625, 1 + 2^-9 to 1 (ties to even).
        assert_eq!(v[6], 0.10009765625);
        assert_eq!(v[7], -0.2001953125);
        assert_eq!(v[8], 1.0);
        let c = Matrix { rows: 1, cols: 2, data: vec![0.0; 2] };
        assert!(matches!(fuse_rows_bf16(&[&a, &c]), Err(GpuError::Weights(_))));
    }

    #[test]
    fn vectors_stay_f32() {
        let t = vector_f32(&[0.1, 2.0]);
        assert_eq!(t.dtype(), DType::F32);
        assert_eq!(t.to_f64()[0], 0.1f32 as f64);
    }
}
