//! The compiled ops of one model's forward pass, built once per [`super::GpuModel`]: the
//! cuBLAS handle, tessera-kernels' decoder ops and attention ops, and the RoPE tables.
//! The prefill-only ops (`TreeVerify`, the transposing copy) are built on first use, so a
//! decode-only speed run never compiles them.

use tessera_codegen::host::HostTensor;
use tessera_codegen::ir::DType;
use tessera_kernels::decoder_ops::norm_block;
use tessera_kernels::{
    AddRmsNorm, Argmax, DecodeParams, DenseDecode, Embedding, KvAppend, RmsNorm, Rope, RopeTable, Scratch, SwiGlu,
    TreeParams, TreeVerify,
};
use tessera_runtime::{Blas, DeviceTensor, Runtime};

use super::kernels::Copy4;
use super::plan::{decode_max_splits, prefill_chunk};
use super::GpuError;
use crate::config::{LlamaConfig, RopePairing};

/// The configurations of the attention ops of one model: decode attention
/// ([`DenseDecode`]) and prefill chunks ([`TreeVerify`] with a causal chain mask, `t_pad`
/// = the chunk length). The decoder picks no configuration itself beyond
/// [`Self::heuristic`]: a caller with a tuning database (the `tessera` CLI) resolves them
/// there and passes them to [`super::GpuModel::with_choices`].
#[derive(Clone, Debug)]
pub struct KernelChoices {
    /// Decode attention (one token per sequence).
    pub dense: DecodeParams,
    /// Prefill chunks of [`prefill_chunk`] tokens.
    pub prefill: TreeParams,
}

impl KernelChoices {
    /// The untuned choice for `c` at `batch` sequences on a GPU of `sm_count` SMs:
    /// [`DecodeParams::new`] with [`decode_max_splits`] for decode, [`TreeParams::new`]
    /// at the prefill chunk length for prefill.
    pub fn heuristic(c: &LlamaConfig, batch: usize, sm_count: usize) -> Self {
        let group = c.n_heads / c.n_kv_heads.max(1);
        let mut dense = DecodeParams::new(group, c.head_dim);
        dense.max_splits = decode_max_splits(batch, c.n_kv_heads, sm_count);
        let prefill = TreeParams::new(group, c.head_dim, prefill_chunk(group, c.head_dim));
        KernelChoices { dense, prefill }
    }

    /// Checks that the choices fit `c`: the GQA group and head dim of both ops, bf16
    /// data, no LSE output (the forward pass passes none), the prefill chunk's `t_pad`.
    pub fn check(&self, c: &LlamaConfig) -> Result<(), GpuError> {
        let group = c.n_heads / c.n_kv_heads.max(1);
        let (d, p) = (&self.dense, &self.prefill);
        let bad = |what: String| Err(GpuError::Config(format!("kernel choices: {what}")));
        if (d.group, d.head_dim, p.group, p.head_dim) != (group, c.head_dim, group, c.head_dim) {
            return bad(format!(
                "decode GQA group {} / head dim {}, prefill {} / {}; the model has {group} / {}",
                d.group, d.head_dim, p.group, p.head_dim, c.head_dim
            ));
        }
        if d.dtype != DType::BF16 || d.write_lse || p.write_lse {
            return bad("decode attention must be bf16, and neither op may write an LSE".into());
        }
        let chunk = prefill_chunk(group, c.head_dim);
        if p.t_pad != chunk {
            return bad(format!("prefill t_pad {} is not the chunk length {chunk}", p.t_pad));
        }
        Ok(())
    }
}

/// Ops of the prefill path, built on first use.
pub struct PrefillOps {
    pub tree: TreeVerify,
    pub copy: Copy4,
    pub scratch: Scratch,
}

/// Every op the forward pass launches.
pub struct Ops {
    pub blas: Blas,
    pub rms_norm: RmsNorm,
    pub add_rms_norm: AddRmsNorm,
    pub rope: Rope,
    pub cos: DeviceTensor,
    pub sin: DeviceTensor,
    pub swiglu: SwiGlu,
    pub embedding: Embedding,
    pub argmax: Argmax,
    pub append: KvAppend,
    /// `[batch, kv_heads, 1, head_dim]` f32: the landmarks argument `KvAppend` takes (not
    /// updated: built without landmark updates).
    pub landmarks: DeviceTensor,
    pub dense: DenseDecode,
    pub dense_scratch: Scratch,
    /// Tokens per prefill chunk ([`prefill_chunk`]).
    pub chunk: usize,
    /// The attention configurations the ops are (or will be) built with.
    pub choices: KernelChoices,
    prefill: Option<PrefillOps>,
}

/// Checks that the kernels can take this configuration.
pub fn check_config(c: &LlamaConfig) -> Result<(), GpuError> {
    if !c.head_dim.is_power_of_two() || !(16..=256).contains(&c.head_dim) {
        return Err(GpuError::Config(format!("head_dim {} must be a power of two in 16..=256", c.head_dim)));
    }
    if c.n_kv_heads == 0 || !c.n_heads.is_multiple_of(c.n_kv_heads) {
        return Err(GpuError::Config(format!("{} query heads do not group over {} kv heads", c.n_heads, c.n_kv_heads)));
    }
    Ok(())
}

impl Ops {
    /// Compiles (through the kernel cache) and loads every decode op for `batch` sequences
    /// and a cache of `capacity` positions, attention with [`KernelChoices::heuristic`].
    pub fn new(rt: &Runtime, c: &LlamaConfig, batch: usize, capacity: usize) -> Result<Self, GpuError> {
        check_config(c)?;
        let choices = KernelChoices::heuristic(c, batch, rt.info().sm_count as usize);
        Self::with_choices(rt, c, batch, capacity, choices)
    }

    /// [`Self::new`] with the attention ops configured by `choices` (checked against `c`).
    pub fn with_choices(
        rt: &Runtime,
        c: &LlamaConfig,
        batch: usize,
        capacity: usize,
        choices: KernelChoices,
    ) -> Result<Self, GpuError> {
        check_config(c)?;
        choices.check(c)?;
        let group = c.n_heads / c.n_kv_heads;
        let nb = norm_block(c.hidden);
        let warps = if nb >= 4096 { 8 } else { 4 };
        let table = RopeTable::from_inv_freq(
            c.head_dim,
            capacity,
            &c.rope_inv_freq(),
            c.rope_scaling.position_divisor() as f64,
        );
        let (cos, sin) = table.upload(rt)?;
        let block_h = c.n_heads.max(c.n_kv_heads).next_power_of_two().min(32);
        let landmarks = DeviceTensor::zeros(rt.stream(), DType::F32, &[batch, c.n_kv_heads, 1, c.head_dim])?;
        Ok(Ops {
            blas: Blas::new(rt)?,
            rms_norm: RmsNorm::new(rt, nb, warps, c.rms_eps)?,
            add_rms_norm: AddRmsNorm::new(rt, nb, warps, c.rms_eps)?,
            rope: Rope::new(rt, c.head_dim, block_h, c.rope_pairing == RopePairing::Interleaved)?,
            cos: cos.read_only(),
            sin: sin.read_only(),
            swiglu: SwiGlu::new(rt, 1024, 4)?,
            embedding: Embedding::new(rt, DType::BF16, norm_block(c.hidden).min(1024))?,
            argmax: Argmax::new(rt, DType::F32, 1024, 4)?,
            append: KvAppend::new(rt, c.head_dim, 64, false)?,
            landmarks,
            dense: DenseDecode::new(rt, choices.dense.clone())?,
            dense_scratch: Scratch::new(),
            chunk: prefill_chunk(group, c.head_dim),
            choices,
            prefill: None,
        })
    }

    /// The prefill ops, compiled on the first call.
    pub fn prefill(&mut self, rt: &Runtime) -> Result<&PrefillOps, GpuError> {
        if self.prefill.is_none() {
            let tree = TreeVerify::new(rt, self.choices.prefill.clone())?;
            let copy = Copy4::new(rt, self.choices.prefill.head_dim)?;
            self.prefill = Some(PrefillOps { tree, copy, scratch: Scratch::new() });
        }
        Ok(self.prefill.as_ref().expect("just built"))
    }
}

/// A small i32 host tensor.
pub fn i32_tensor(v: Vec<i32>) -> HostTensor {
    HostTensor { shape: vec![v.len()], data: tessera_codegen::host::HostData::I32(v) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SmolLM2-135M's attention shapes: 9 query heads over 3 KV heads of 64.
    fn smollm2() -> LlamaConfig {
        LlamaConfig { n_heads: 9, n_kv_heads: 3, head_dim: 64, hidden: 576, ..LlamaConfig::llama3_8b_shapes() }
    }

    #[test]
    fn the_heuristic_is_what_the_ops_were_built_with() {
        for (c, batch, sm, splits, chunk) in
            [(smollm2(), 1, 132, 128, 64), (LlamaConfig::llama3_8b_shapes(), 8, 132, 16, 32)]
        {
            let h = KernelChoices::heuristic(&c, batch, sm);
            let group = c.n_heads / c.n_kv_heads;
            let mut dense = DecodeParams::new(group, c.head_dim);
            dense.max_splits = decode_max_splits(batch, c.n_kv_heads, sm);
            assert_eq!(h.dense, dense);
            assert_eq!(h.dense.max_splits, splits);
            let tree = TreeParams::new(group, c.head_dim, chunk);
            assert_eq!(format!("{:?}", h.prefill), format!("{tree:?}"));
            h.check(&c).unwrap();
        }
    }

    #[test]
    fn choices_that_do_not_fit_the_model_are_refused() {
        let c = LlamaConfig::llama3_8b_shapes();
        let h = KernelChoices::heuristic(&c, 1, 132);
        let refused = |k: KernelChoices| matches!(k.check(&c), Err(GpuError::Config(_)));
        // Tuned for another model: SmolLM2's group and head dim.
        assert!(refused(KernelChoices::heuristic(&smollm2(), 1, 132)));
        assert!(refused(KernelChoices { prefill: TreeParams { t_pad: 64, ..h.prefill.clone() }, ..h.clone() }));
        assert!(refused(KernelChoices { dense: DecodeParams { write_lse: true, ..h.dense.clone() }, ..h.clone() }));
        assert!(refused(KernelChoices { dense: DecodeParams { dtype: DType::F16, ..h.dense.clone() }, ..h.clone() }));
        // Other tiles and split counts are the tuner's business.
        let tuned = KernelChoices {
            dense: DecodeParams { block_n: 32, warps: 8, stages: 3, max_splits: 8, ..h.dense.clone() },
            prefill: TreeParams { block_n: 128, warps: 8, rows: 16, max_splits: 64, ..h.prefill.clone() },
        };
        tuned.check(&c).unwrap();
    }
}
