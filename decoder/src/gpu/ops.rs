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
    prefill: Option<PrefillOps>,
    group: usize,
    head_dim: usize,
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
    /// Compiles (through the PTX cache) and loads every decode op for `batch` sequences
    /// and a cache of `capacity` positions.
    pub fn new(rt: &Runtime, c: &LlamaConfig, batch: usize, capacity: usize) -> Result<Self, GpuError> {
        check_config(c)?;
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
        let mut dense_params = DecodeParams::new(group, c.head_dim);
        dense_params.max_splits = decode_max_splits(batch, c.n_kv_heads, rt.info().sm_count as usize);
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
            dense: DenseDecode::new(rt, dense_params)?,
            dense_scratch: Scratch::new(),
            chunk: prefill_chunk(group, c.head_dim),
            prefill: None,
            group,
            head_dim: c.head_dim,
        })
    }

    /// The prefill ops, compiled on the first call.
    pub fn prefill(&mut self, rt: &Runtime) -> Result<&PrefillOps, GpuError> {
        if self.prefill.is_none() {
            let tree = TreeVerify::new(rt, TreeParams::new(self.group, self.head_dim, self.chunk))?;
            let copy = Copy4::new(rt, self.head_dim)?;
            self.prefill = Some(PrefillOps { tree, copy, scratch: Scratch::new() });
        }
        Ok(self.prefill.as_ref().expect("just built"))
    }
}

/// A small i32 host tensor.
pub fn i32_tensor(v: Vec<i32>) -> HostTensor {
    HostTensor { shape: vec![v.len()], data: tessera_codegen::host::HostData::I32(v) }
}
