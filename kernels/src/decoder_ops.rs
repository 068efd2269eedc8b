//! Element-wise and row kernels of the decoder's GPU path (issue 7): RMSNorm (and the
//! fused residual add + RMSNorm), RoPE, SwiGLU, embedding gather and greedy argmax.
//!
//! Dtypes (f32 math everywhere; tensors are bf16 where the decoder's GPU path moves large
//! activations, f32 where precision needs it):
//!
//! | tensor | dtype | why |
//! | --- | --- | --- |
//! | residual stream (`embedding` output, `add_rms_norm` `residual`/`residual_out`) | f32 | summed over every layer; bf16 would round 2·n_layers times |
//! | norm weights | f32 | `[H]`, negligible traffic |
//! | normed activations (inputs of the linear layers), Q/K, gate/up/SwiGLU output | bf16 | cuBLAS bf16 operands |
//! | RoPE cos/sin tables | f32 | angles up to `max_pos · θ⁰`; built on the host in f64 |
//! | logits for `argmax` | f32 or bf16 | either cuBLAS output type |
//! | token ids, positions, argmax result | i32 | |
//!
//! Formulas are those of the decoder's CPU path (`decoder/src/cpu.rs`): `rms_norm`
//! (`w · x / sqrt(mean(x²) + eps)`), `CpuModel::rope` (GGUF "interleaved" pairs `(2i, 2i+1)`
//! or rotate-half pairs `(i, i + D/2)`, angle `pos / rope_scale · θ^(-2i/D)`), the SwiGLU
//! line `g / (1 + exp(-g)) · u`, and the embedding row copy.
//!
//! The IR has no `sin`/`cos`, so RoPE reads a precomputed [`RopeTable`] (`cos`, `sin`
//! `[max_pos, D/2]`), gathered by each token's position.

use tessera_codegen::host::HostTensor;
use tessera_codegen::ir::DType;
use tessera_dsl_support::prelude::*;
use tessera_runtime::DeviceTensor;

use crate::error::{expect, host_ints, invalid, KernelError, TensorMeta};

// ---------------------------------------------------------------------------------------
// Kernels
// ---------------------------------------------------------------------------------------

/// `out[r] = weight · x[r] / sqrt(mean(x[r]²) + eps)`; grid `[rows]`, tiles of `BLOCK`
/// over `H` (two passes: sum of squares, then scale).
#[kernel(tune(BLOCK = [1024, 512, 2048, 4096], WARPS = [4, 8]))]
pub fn rms_norm_rows<const BLOCK: usize, const WARPS: usize>(
    x: Tensor<f32, 2>,         // [R, H]
    weight: Tensor<f32, 1>,    // [H]
    out: &mut Tensor<bf16, 2>, // [R, H]
    eps: f32,
) {
    let row = program_id(0);
    let h = x.dim(1).cast::<i32>();
    let mut ss = zeros([BLOCK]);
    for h0 in (0..h).step_by(BLOCK) {
        let v = x.load([at(row), range(h0, BLOCK)]);
        ss += v * v;
    }
    let r = rsqrt(ss.sum(0) / h.cast::<f32>() + eps);
    for h0 in (0..h).step_by(BLOCK) {
        let v = x.load([at(row), range(h0, BLOCK)]);
        let w = weight.load([range(h0, BLOCK)]);
        out.store([at(row), range(h0, BLOCK)], (w * (v * r)).cast::<bf16>());
    }
}

/// `s = x[r] + residual[r]` (f32), `residual_out[r] = s`,
/// `out[r] = weight · s / sqrt(mean(s²) + eps)`; grid `[rows]`. Pass 2 reads back
/// `residual_out` (what pass 1 wrote).
#[kernel(tune(BLOCK = [1024, 512, 2048, 4096], WARPS = [4, 8]))]
pub fn add_rms_norm_rows<const BLOCK: usize, const WARPS: usize>(
    x: Tensor<bf16, 2>,                // [R, H] (a sublayer's output)
    residual: Tensor<f32, 2>,          // [R, H]
    weight: Tensor<f32, 1>,            // [H]
    residual_out: &mut Tensor<f32, 2>, // [R, H]
    out: &mut Tensor<bf16, 2>,         // [R, H]
    eps: f32,
) {
    let row = program_id(0);
    let h = x.dim(1).cast::<i32>();
    let mut ss = zeros([BLOCK]);
    for h0 in (0..h).step_by(BLOCK) {
        let s = x.load([at(row), range(h0, BLOCK)]).cast::<f32>() + residual.load([at(row), range(h0, BLOCK)]);
        residual_out.store([at(row), range(h0, BLOCK)], s);
        ss += s * s;
    }
    let r = rsqrt(ss.sum(0) / h.cast::<f32>() + eps);
    for h0 in (0..h).step_by(BLOCK) {
        let s = residual_out.load([at(row), range(h0, BLOCK)]);
        let w = weight.load([range(h0, BLOCK)]);
        out.store([at(row), range(h0, BLOCK)], (w * (s * r)).cast::<bf16>());
    }
}

/// RoPE in place on `q [T, Hq, D]` and `k [T, Hkv, D]`; grid
/// `[ceil(Hq/BLOCK_H) + ceil(Hkv/BLOCK_H), T]`, the first `q_blocks` programs of axis 0
/// rotate Q heads, the rest K heads. `INTERLEAVED = 1`: pairs `(2i, 2i+1)` (GGUF);
/// `0`: pairs `(i, i + D/2)` (rotate-half, HF).
#[kernel(example(HEAD_DIM = 128, BLOCK_H = 8, INTERLEAVED = 1))]
pub fn rope_qk<const HEAD_DIM: usize, const BLOCK_H: usize, const INTERLEAVED: usize, const WARPS: usize>(
    q: &mut Tensor<bf16, 3>,   // [T, Hq, D]
    k: &mut Tensor<bf16, 3>,   // [T, Hkv, D]
    positions: Tensor<i32, 1>, // [T]
    cos: Tensor<f32, 2>,       // [P, D/2]
    sin: Tensor<f32, 2>,       // [P, D/2]
    q_blocks: i32,
) {
    let hb = program_id(0);
    let t = program_id(1);
    let half = HEAD_DIM / 2;
    let pos = positions.load([at(t)]);
    let c = cos.load([at(pos), range(0, half)]).expand_dims(0);
    let s = sin.load([at(pos), range(0, half)]).expand_dims(0);
    let ia = arange(0, half) * (1 + INTERLEAVED);
    let ib = ia + (INTERLEAVED + (1 - INTERLEAVED) * half);
    if hb < q_blocks {
        let h0 = hb * BLOCK_H as i32;
        let x0 = q.load([at(t), range(h0, BLOCK_H), gather(ia)]).cast::<f32>();
        let x1 = q.load([at(t), range(h0, BLOCK_H), gather(ib)]).cast::<f32>();
        q.store([at(t), range(h0, BLOCK_H), gather(ia)], (x0 * c - x1 * s).cast::<bf16>());
        q.store([at(t), range(h0, BLOCK_H), gather(ib)], (x0 * s + x1 * c).cast::<bf16>());
    } else {
        let h0 = (hb - q_blocks) * BLOCK_H as i32;
        let x0 = k.load([at(t), range(h0, BLOCK_H), gather(ia)]).cast::<f32>();
        let x1 = k.load([at(t), range(h0, BLOCK_H), gather(ib)]).cast::<f32>();
        k.store([at(t), range(h0, BLOCK_H), gather(ia)], (x0 * c - x1 * s).cast::<bf16>());
        k.store([at(t), range(h0, BLOCK_H), gather(ib)], (x0 * s + x1 * c).cast::<bf16>());
    }
}

/// `out = silu(gate) · up = gate / (1 + exp(-gate)) · up`; grid `[ceil(F/BLOCK), R]`.
#[kernel(tune(BLOCK = [1024, 512, 2048], WARPS = [4, 8]))]
pub fn swiglu_rows<const BLOCK: usize, const WARPS: usize>(
    gate: Tensor<bf16, 2>,     // [R, F]
    up: Tensor<bf16, 2>,       // [R, F]
    out: &mut Tensor<bf16, 2>, // [R, F]
) {
    let c0 = program_id(0) * BLOCK as i32;
    let row = program_id(1);
    let g = gate.load([at(row), range(c0, BLOCK)]).cast::<f32>();
    let u = up.load([at(row), range(c0, BLOCK)]).cast::<f32>();
    out.store([at(row), range(c0, BLOCK)], (g / (1.0 + exp(-g)) * u).cast::<bf16>());
}

/// `out[t] = table[ids[t]]` (bf16 table, f32 rows); grid `[ceil(H/BLOCK), T]`.
#[kernel(tune(BLOCK = [1024, 512, 2048], WARPS = [4, 8]))]
pub fn embedding_bf16<const BLOCK: usize, const WARPS: usize>(
    ids: Tensor<i32, 1>,      // [T]
    table: Tensor<bf16, 2>,   // [V, H]
    out: &mut Tensor<f32, 2>, // [T, H]
) {
    let c0 = program_id(0) * BLOCK as i32;
    let t = program_id(1);
    let id = ids.load([at(t)]);
    out.store([at(t), range(c0, BLOCK)], table.load([at(id), range(c0, BLOCK)]).cast::<f32>());
}

/// `out[t] = table[ids[t]]` (f32 table); grid `[ceil(H/BLOCK), T]`.
#[kernel(tune(BLOCK = [1024, 512, 2048], WARPS = [4, 8]))]
pub fn embedding_f32<const BLOCK: usize, const WARPS: usize>(
    ids: Tensor<i32, 1>,      // [T]
    table: Tensor<f32, 2>,    // [V, H]
    out: &mut Tensor<f32, 2>, // [T, H]
) {
    let c0 = program_id(0) * BLOCK as i32;
    let t = program_id(1);
    let id = ids.load([at(t)]);
    out.store([at(t), range(c0, BLOCK)], table.load([at(id), range(c0, BLOCK)]));
}

/// `out[r] = argmax(logits[r])` (f32 logits), the smallest index among equal maxima;
/// NaN never wins; a row of -inf gives 0. Grid `[rows]`: each lane keeps its first
/// maximum, then the lanes reduce to (max value, smallest index holding it).
#[kernel(tune(BLOCK = [1024, 2048, 512], WARPS = [4, 8]))]
pub fn argmax_rows_f32<const BLOCK: usize, const WARPS: usize>(
    logits: Tensor<f32, 2>,   // [R, V]
    out: &mut Tensor<i32, 1>, // [R]
) {
    let row = program_id(0);
    let v = logits.dim(1).cast::<i32>();
    let mut best = full([BLOCK], f32::NEG_INFINITY);
    let mut best_id = arange(0, BLOCK);
    for c0 in (0..v).step_by(BLOCK) {
        let x = logits.load_or([at(row), range(c0, BLOCK)], f32::NEG_INFINITY);
        let take = x > best;
        best = where_(take, x, best);
        best_id = where_(take, arange(0, BLOCK) + c0, best_id);
    }
    let m = best.max(0);
    out.store([at(row)], where_(best == m, best_id, i32::MAX).min(0));
}

/// [`argmax_rows_f32`](ArgmaxRowsF32) for bf16 logits (compared in f32).
#[kernel(tune(BLOCK = [1024, 2048, 512], WARPS = [4, 8]))]
pub fn argmax_rows_bf16<const BLOCK: usize, const WARPS: usize>(
    logits: Tensor<bf16, 2>,  // [R, V]
    out: &mut Tensor<i32, 1>, // [R]
) {
    let row = program_id(0);
    let v = logits.dim(1).cast::<i32>();
    let mut best = full([BLOCK], f32::NEG_INFINITY);
    let mut best_id = arange(0, BLOCK);
    for c0 in (0..v).step_by(BLOCK) {
        let x = logits.load_or([at(row), range(c0, BLOCK)], f32::NEG_INFINITY).cast::<f32>();
        let take = x > best;
        best = where_(take, x, best);
        best_id = where_(take, arange(0, BLOCK) + c0, best_id);
    }
    let m = best.max(0);
    out.store([at(row)], where_(best == m, best_id, i32::MAX).min(0));
}

// ---------------------------------------------------------------------------------------
// Host ops
// ---------------------------------------------------------------------------------------

fn block_config(block: usize, warps: usize) -> KernelConfig {
    KernelConfig::from_pairs(&[("BLOCK", block as i64), ("WARPS", warps as i64)])
}

fn check_block(kernel: &'static str, block: usize, warps: usize) -> Result<(), KernelError> {
    if !block.is_power_of_two() || block < 32 * warps {
        return Err(invalid(kernel, format!("BLOCK {block} must be a power of two >= 32 · WARPS ({warps})")));
    }
    Ok(())
}

fn fits_i32(kernel: &'static str, what: &str, n: usize) -> Result<(), KernelError> {
    if n > i32::MAX as usize / 2 {
        return Err(invalid(kernel, format!("{what} {n} does not fit i32 indices")));
    }
    Ok(())
}

fn grid_dim(kernel: &'static str, n: usize) -> Result<u32, KernelError> {
    u32::try_from(n).ok().filter(|&g| g < (1 << 31)).ok_or_else(|| invalid(kernel, format!("grid size {n} too large")))
}

/// Host tensor indices must lie in `[0, hi)` (device tensors are not checked).
fn check_indices(kernel: &'static str, arg: &'static str, t: &dyn TensorMeta, hi: usize) -> Result<(), KernelError> {
    if let Some(v) = host_ints(t) {
        if let Some((i, &x)) = v.iter().enumerate().find(|(_, &x)| x < 0 || x >= hi as i64) {
            return Err(KernelError::IndexOutOfRange { kernel, arg, at: vec![i], value: x, lo: 0, hi: hi as i64 });
        }
    }
    Ok(())
}

/// Host op: RMSNorm of rows, f32 in, bf16 out (the first layer's attention norm, whose
/// input is the embedding / residual stream).
pub struct RmsNorm {
    pub block: usize,
    pub warps: usize,
    pub eps: f32,
    kernel: RmsNormRowsKernel,
}

/// Host op: `residual_out = x + residual`, `out = rms_norm(residual_out) · weight`.
pub struct AddRmsNorm {
    pub block: usize,
    pub warps: usize,
    pub eps: f32,
    kernel: AddRmsNormRowsKernel,
}

/// A power-of-two tile for rows of width `h`: the whole row up to 4096, else 4096.
pub fn norm_block(h: usize) -> usize {
    h.next_power_of_two().clamp(128, 4096)
}

fn check_norm_rows(
    kernel: &'static str,
    x_name: &'static str,
    x: &dyn TensorMeta,
    x_dtype: DType,
    weight: &dyn TensorMeta,
) -> Result<(usize, usize), KernelError> {
    expect(kernel, x_name, x, x_dtype, &[None, None])?;
    let (r, h) = (x.shape()[0], x.shape()[1]);
    if h == 0 {
        return Err(invalid(kernel, "rows of width 0"));
    }
    fits_i32(kernel, "row width", h)?;
    expect(kernel, "weight", weight, DType::F32, &[Some(h)])?;
    Ok((r, h))
}

impl RmsNorm {
    const NAME: &'static str = "rms_norm";

    pub fn cpu(block: usize, warps: usize, eps: f32) -> Result<Self, KernelError> {
        check_block(Self::NAME, block, warps)?;
        Ok(RmsNorm { block, warps, eps, kernel: RmsNormRows::cpu(&block_config(block, warps))? })
    }

    pub fn new(rt: &Runtime, block: usize, warps: usize, eps: f32) -> Result<Self, KernelError> {
        check_block(Self::NAME, block, warps)?;
        Ok(RmsNorm { block, warps, eps, kernel: RmsNormRows::new(rt, &block_config(block, warps))? })
    }

    /// Checks `x [R, H] f32`, `weight [H] f32`, `out [R, H] bf16`; returns the grid `[R]`.
    pub fn check_args(
        &self,
        x: &dyn TensorMeta,
        weight: &dyn TensorMeta,
        out: &dyn TensorMeta,
    ) -> Result<[u32; 3], KernelError> {
        let (r, h) = check_norm_rows(Self::NAME, "x", x, DType::F32, weight)?;
        expect(Self::NAME, "out", out, DType::BF16, &[Some(r), Some(h)])?;
        Ok([grid_dim(Self::NAME, r)?, 1, 1])
    }

    pub fn run_cpu(&self, x: &HostTensor, weight: &HostTensor, out: &mut HostTensor) -> Result<(), KernelError> {
        let grid = self.check_args(x, weight, out)?;
        if grid[0] == 0 {
            return Ok(());
        }
        Ok(self.kernel.run_cpu(grid, x, weight, out, self.eps)?)
    }

    pub fn launch(
        &self,
        rt: &Runtime,
        x: &DeviceTensor,
        weight: &DeviceTensor,
        out: &DeviceTensor,
    ) -> Result<(), KernelError> {
        let grid = self.check_args(x, weight, out)?;
        if grid[0] == 0 {
            return Ok(());
        }
        Ok(self.kernel.launch(rt.stream(), grid, x, weight, out, self.eps)?)
    }
}

impl AddRmsNorm {
    const NAME: &'static str = "add_rms_norm";

    pub fn cpu(block: usize, warps: usize, eps: f32) -> Result<Self, KernelError> {
        check_block(Self::NAME, block, warps)?;
        Ok(AddRmsNorm { block, warps, eps, kernel: AddRmsNormRows::cpu(&block_config(block, warps))? })
    }

    pub fn new(rt: &Runtime, block: usize, warps: usize, eps: f32) -> Result<Self, KernelError> {
        check_block(Self::NAME, block, warps)?;
        Ok(AddRmsNorm { block, warps, eps, kernel: AddRmsNormRows::new(rt, &block_config(block, warps))? })
    }

    /// Checks `x [R, H] bf16`, `residual`/`residual_out [R, H] f32`, `weight [H] f32`,
    /// `out [R, H] bf16`; returns the grid `[R]`.
    pub fn check_args(
        &self,
        x: &dyn TensorMeta,
        residual: &dyn TensorMeta,
        weight: &dyn TensorMeta,
        residual_out: &dyn TensorMeta,
        out: &dyn TensorMeta,
    ) -> Result<[u32; 3], KernelError> {
        let n = Self::NAME;
        let (r, h) = check_norm_rows(n, "x", x, DType::BF16, weight)?;
        expect(n, "residual", residual, DType::F32, &[Some(r), Some(h)])?;
        expect(n, "residual_out", residual_out, DType::F32, &[Some(r), Some(h)])?;
        expect(n, "out", out, DType::BF16, &[Some(r), Some(h)])?;
        Ok([grid_dim(n, r)?, 1, 1])
    }

    pub fn run_cpu(
        &self,
        x: &HostTensor,
        residual: &HostTensor,
        weight: &HostTensor,
        residual_out: &mut HostTensor,
        out: &mut HostTensor,
    ) -> Result<(), KernelError> {
        let grid = self.check_args(x, residual, weight, residual_out, out)?;
        if grid[0] == 0 {
            return Ok(());
        }
        Ok(self.kernel.run_cpu(grid, x, residual, weight, residual_out, out, self.eps)?)
    }

    /// `residual_out` should be a different buffer from `residual` (ping-pong): aliasing
    /// them has not been checked on the GPU.
    pub fn launch(
        &self,
        rt: &Runtime,
        x: &DeviceTensor,
        residual: &DeviceTensor,
        weight: &DeviceTensor,
        residual_out: &DeviceTensor,
        out: &DeviceTensor,
    ) -> Result<(), KernelError> {
        let grid = self.check_args(x, residual, weight, residual_out, out)?;
        if grid[0] == 0 {
            return Ok(());
        }
        Ok(self.kernel.launch(rt.stream(), grid, x, residual, weight, residual_out, out, self.eps)?)
    }
}

/// RoPE cos/sin tables `[max_pos, head_dim/2]` (f32, computed in f64).
#[derive(Clone, Debug)]
pub struct RopeTable {
    pub head_dim: usize,
    pub cos: HostTensor,
    pub sin: HostTensor,
}

impl RopeTable {
    /// The decoder's frequencies: `θ_i = base^(-2i/D)`, angle `pos / scale · θ_i`
    /// (`scale` = the config's linear `rope_scale`, 1 for none).
    pub fn new(head_dim: usize, max_pos: usize, base: f64, scale: f64) -> Self {
        let inv: Vec<f64> = (0..head_dim / 2).map(|i| base.powf(-((2 * i) as f64) / head_dim as f64)).collect();
        Self::from_inv_freq(head_dim, max_pos, &inv, scale)
    }

    /// Any per-pair frequencies (e.g. Llama 3's frequency-dependent scaling).
    pub fn from_inv_freq(head_dim: usize, max_pos: usize, inv_freq: &[f64], scale: f64) -> Self {
        assert_eq!(inv_freq.len(), head_dim / 2, "one frequency per pair");
        let ang: Vec<f64> = (0..max_pos).flat_map(|p| inv_freq.iter().map(move |f| p as f64 / scale * f)).collect();
        let shape = [max_pos, head_dim / 2];
        let cos = HostTensor::from_f64(DType::F32, &shape, &ang.iter().map(|a| a.cos()).collect::<Vec<_>>());
        let sin = HostTensor::from_f64(DType::F32, &shape, &ang.iter().map(|a| a.sin()).collect::<Vec<_>>());
        RopeTable { head_dim, cos, sin }
    }

    pub fn max_pos(&self) -> usize {
        self.cos.shape[0]
    }

    /// `(cos, sin)` on `rt`'s GPU.
    pub fn upload(&self, rt: &Runtime) -> Result<(DeviceTensor, DeviceTensor), KernelError> {
        Ok((DeviceTensor::upload(rt.stream(), &self.cos)?, DeviceTensor::upload(rt.stream(), &self.sin)?))
    }
}

/// Host op: RoPE in place on Q and K rows.
pub struct Rope {
    pub head_dim: usize,
    pub block_h: usize,
    /// `true`: GGUF adjacent pairs `(2i, 2i+1)`; `false`: rotate-half pairs `(i, i + D/2)`.
    pub interleaved: bool,
    kernel: RopeQkKernel,
}

impl Rope {
    const NAME: &'static str = "rope";

    fn config(head_dim: usize, block_h: usize, interleaved: bool) -> KernelConfig {
        KernelConfig::from_pairs(&[
            ("HEAD_DIM", head_dim as i64),
            ("BLOCK_H", block_h as i64),
            ("INTERLEAVED", interleaved as i64),
            ("WARPS", 4),
        ])
    }

    fn check_params(head_dim: usize, block_h: usize) -> Result<(), KernelError> {
        if head_dim < 2 || !head_dim.is_power_of_two() || !block_h.is_power_of_two() {
            return Err(invalid(
                Self::NAME,
                format!("head_dim {head_dim} and block_h {block_h} must be powers of two, head_dim >= 2"),
            ));
        }
        Ok(())
    }

    pub fn cpu(head_dim: usize, block_h: usize, interleaved: bool) -> Result<Self, KernelError> {
        Self::check_params(head_dim, block_h)?;
        let kernel = RopeQk::cpu(&Self::config(head_dim, block_h, interleaved))?;
        Ok(Rope { head_dim, block_h, interleaved, kernel })
    }

    pub fn new(rt: &Runtime, head_dim: usize, block_h: usize, interleaved: bool) -> Result<Self, KernelError> {
        Self::check_params(head_dim, block_h)?;
        let kernel = RopeQk::new(rt, &Self::config(head_dim, block_h, interleaved))?;
        Ok(Rope { head_dim, block_h, interleaved, kernel })
    }

    /// Checks `q [T, Hq, D]`, `k [T, Hkv, D]` bf16, `positions [T] i32` (host: each in
    /// `[0, P)`), `cos`/`sin [P, D/2] f32`; returns the grid and the number of Q programs.
    pub fn check_args(
        &self,
        q: &dyn TensorMeta,
        k: &dyn TensorMeta,
        positions: &dyn TensorMeta,
        cos: &dyn TensorMeta,
        sin: &dyn TensorMeta,
    ) -> Result<([u32; 3], i32), KernelError> {
        let n = Self::NAME;
        let d = self.head_dim;
        expect(n, "q", q, DType::BF16, &[None, None, Some(d)])?;
        let t = q.shape()[0];
        expect(n, "k", k, DType::BF16, &[Some(t), None, Some(d)])?;
        expect(n, "positions", positions, DType::I32, &[Some(t)])?;
        expect(n, "cos", cos, DType::F32, &[None, Some(d / 2)])?;
        let p = cos.shape()[0];
        expect(n, "sin", sin, DType::F32, &[Some(p), Some(d / 2)])?;
        fits_i32(n, "table length", p)?;
        check_indices(n, "positions", positions, p)?;
        let qb = q.shape()[1].div_ceil(self.block_h);
        let kb = k.shape()[1].div_ceil(self.block_h);
        Ok(([grid_dim(n, qb + kb)?, grid_dim(n, t)?, 1], qb as i32))
    }

    pub fn run_cpu(
        &self,
        q: &mut HostTensor,
        k: &mut HostTensor,
        positions: &HostTensor,
        table: &RopeTable,
    ) -> Result<(), KernelError> {
        let (grid, qb) = self.check_args(q, k, positions, &table.cos, &table.sin)?;
        if grid[0] == 0 || grid[1] == 0 {
            return Ok(());
        }
        Ok(self.kernel.run_cpu(grid, q, k, positions, &table.cos, &table.sin, qb)?)
    }

    /// `cos`/`sin` from [`RopeTable::upload`].
    pub fn launch(
        &self,
        rt: &Runtime,
        q: &DeviceTensor,
        k: &DeviceTensor,
        positions: &DeviceTensor,
        cos: &DeviceTensor,
        sin: &DeviceTensor,
    ) -> Result<(), KernelError> {
        let (grid, qb) = self.check_args(q, k, positions, cos, sin)?;
        if grid[0] == 0 || grid[1] == 0 {
            return Ok(());
        }
        Ok(self.kernel.launch(rt.stream(), grid, q, k, positions, cos, sin, qb)?)
    }
}

/// Host op: `out = silu(gate) · up` (bf16).
pub struct SwiGlu {
    pub block: usize,
    pub warps: usize,
    kernel: SwigluRowsKernel,
}

impl SwiGlu {
    const NAME: &'static str = "swiglu";

    pub fn cpu(block: usize, warps: usize) -> Result<Self, KernelError> {
        check_block(Self::NAME, block, warps)?;
        Ok(SwiGlu { block, warps, kernel: SwigluRows::cpu(&block_config(block, warps))? })
    }

    pub fn new(rt: &Runtime, block: usize, warps: usize) -> Result<Self, KernelError> {
        check_block(Self::NAME, block, warps)?;
        Ok(SwiGlu { block, warps, kernel: SwigluRows::new(rt, &block_config(block, warps))? })
    }

    /// Checks `gate`, `up`, `out [R, F] bf16`; returns the grid `[ceil(F/BLOCK), R]`.
    pub fn check_args(
        &self,
        gate: &dyn TensorMeta,
        up: &dyn TensorMeta,
        out: &dyn TensorMeta,
    ) -> Result<[u32; 3], KernelError> {
        let n = Self::NAME;
        expect(n, "gate", gate, DType::BF16, &[None, None])?;
        let (r, f) = (gate.shape()[0], gate.shape()[1]);
        fits_i32(n, "width", f)?;
        expect(n, "up", up, DType::BF16, &[Some(r), Some(f)])?;
        expect(n, "out", out, DType::BF16, &[Some(r), Some(f)])?;
        Ok([grid_dim(n, f.div_ceil(self.block))?, grid_dim(n, r)?, 1])
    }

    pub fn run_cpu(&self, gate: &HostTensor, up: &HostTensor, out: &mut HostTensor) -> Result<(), KernelError> {
        let grid = self.check_args(gate, up, out)?;
        if grid[0] == 0 || grid[1] == 0 {
            return Ok(());
        }
        Ok(self.kernel.run_cpu(grid, gate, up, out)?)
    }

    pub fn launch(
        &self,
        rt: &Runtime,
        gate: &DeviceTensor,
        up: &DeviceTensor,
        out: &DeviceTensor,
    ) -> Result<(), KernelError> {
        let grid = self.check_args(gate, up, out)?;
        if grid[0] == 0 || grid[1] == 0 {
            return Ok(());
        }
        Ok(self.kernel.launch(rt.stream(), grid, gate, up, out)?)
    }
}

enum EmbeddingKernel {
    Bf16(EmbeddingBf16Kernel),
    F32(EmbeddingF32Kernel),
}

/// Host op: `out[t] = table[ids[t]]`, a bf16 or f32 table (fixed at construction), f32
/// rows out (the residual stream).
pub struct Embedding {
    pub table_dtype: DType,
    pub block: usize,
    kernel: EmbeddingKernel,
}

impl Embedding {
    const NAME: &'static str = "embedding";

    fn build(rt: Option<&Runtime>, table_dtype: DType, block: usize) -> Result<Self, KernelError> {
        check_block(Self::NAME, block, 4)?;
        let cfg = block_config(block, 4);
        let kernel = match (table_dtype, rt) {
            (DType::BF16, None) => EmbeddingKernel::Bf16(EmbeddingBf16::cpu(&cfg)?),
            (DType::BF16, Some(rt)) => EmbeddingKernel::Bf16(EmbeddingBf16::new(rt, &cfg)?),
            (DType::F32, None) => EmbeddingKernel::F32(EmbeddingF32::cpu(&cfg)?),
            (DType::F32, Some(rt)) => EmbeddingKernel::F32(EmbeddingF32::new(rt, &cfg)?),
            (d, _) => return Err(invalid(Self::NAME, format!("table dtype {d:?}: expected BF16 or F32"))),
        };
        Ok(Embedding { table_dtype, block, kernel })
    }

    pub fn cpu(table_dtype: DType, block: usize) -> Result<Self, KernelError> {
        Self::build(None, table_dtype, block)
    }

    pub fn new(rt: &Runtime, table_dtype: DType, block: usize) -> Result<Self, KernelError> {
        Self::build(Some(rt), table_dtype, block)
    }

    /// Checks `ids [T] i32` (host: each in `[0, V)`), `table [V, H]` of the op's dtype,
    /// `out [T, H] f32`; returns the grid `[ceil(H/BLOCK), T]`.
    pub fn check_args(
        &self,
        ids: &dyn TensorMeta,
        table: &dyn TensorMeta,
        out: &dyn TensorMeta,
    ) -> Result<[u32; 3], KernelError> {
        let n = Self::NAME;
        expect(n, "table", table, self.table_dtype, &[None, None])?;
        let (v, h) = (table.shape()[0], table.shape()[1]);
        fits_i32(n, "vocabulary", v)?;
        fits_i32(n, "width", h)?;
        expect(n, "ids", ids, DType::I32, &[None])?;
        let t = ids.shape()[0];
        expect(n, "out", out, DType::F32, &[Some(t), Some(h)])?;
        check_indices(n, "ids", ids, v)?;
        Ok([grid_dim(n, h.div_ceil(self.block))?, grid_dim(n, t)?, 1])
    }

    pub fn run_cpu(&self, ids: &HostTensor, table: &HostTensor, out: &mut HostTensor) -> Result<(), KernelError> {
        let grid = self.check_args(ids, table, out)?;
        if grid[0] == 0 || grid[1] == 0 {
            return Ok(());
        }
        match &self.kernel {
            EmbeddingKernel::Bf16(k) => k.run_cpu(grid, ids, table, out)?,
            EmbeddingKernel::F32(k) => k.run_cpu(grid, ids, table, out)?,
        }
        Ok(())
    }

    pub fn launch(
        &self,
        rt: &Runtime,
        ids: &DeviceTensor,
        table: &DeviceTensor,
        out: &DeviceTensor,
    ) -> Result<(), KernelError> {
        let grid = self.check_args(ids, table, out)?;
        if grid[0] == 0 || grid[1] == 0 {
            return Ok(());
        }
        match &self.kernel {
            EmbeddingKernel::Bf16(k) => k.launch(rt.stream(), grid, ids, table, out)?,
            EmbeddingKernel::F32(k) => k.launch(rt.stream(), grid, ids, table, out)?,
        }
        Ok(())
    }
}

enum ArgmaxKernel {
    Bf16(ArgmaxRowsBf16Kernel),
    F32(ArgmaxRowsF32Kernel),
}

/// Host op: greedy sampling, `out[r] = argmax(logits[r])` as i32 (ties → smaller id).
pub struct Argmax {
    pub logits_dtype: DType,
    pub block: usize,
    pub warps: usize,
    kernel: ArgmaxKernel,
}

impl Argmax {
    const NAME: &'static str = "argmax";

    fn build(rt: Option<&Runtime>, logits_dtype: DType, block: usize, warps: usize) -> Result<Self, KernelError> {
        check_block(Self::NAME, block, warps)?;
        let cfg = block_config(block, warps);
        let kernel = match (logits_dtype, rt) {
            (DType::BF16, None) => ArgmaxKernel::Bf16(ArgmaxRowsBf16::cpu(&cfg)?),
            (DType::BF16, Some(rt)) => ArgmaxKernel::Bf16(ArgmaxRowsBf16::new(rt, &cfg)?),
            (DType::F32, None) => ArgmaxKernel::F32(ArgmaxRowsF32::cpu(&cfg)?),
            (DType::F32, Some(rt)) => ArgmaxKernel::F32(ArgmaxRowsF32::new(rt, &cfg)?),
            (d, _) => return Err(invalid(Self::NAME, format!("logits dtype {d:?}: expected BF16 or F32"))),
        };
        Ok(Argmax { logits_dtype, block, warps, kernel })
    }

    pub fn cpu(logits_dtype: DType, block: usize, warps: usize) -> Result<Self, KernelError> {
        Self::build(None, logits_dtype, block, warps)
    }

    pub fn new(rt: &Runtime, logits_dtype: DType, block: usize, warps: usize) -> Result<Self, KernelError> {
        Self::build(Some(rt), logits_dtype, block, warps)
    }

    /// Checks `logits [R, V]` (V ≥ 1) of the op's dtype and `out [R] i32`; grid `[R]`.
    pub fn check_args(&self, logits: &dyn TensorMeta, out: &dyn TensorMeta) -> Result<[u32; 3], KernelError> {
        let n = Self::NAME;
        expect(n, "logits", logits, self.logits_dtype, &[None, None])?;
        let (r, v) = (logits.shape()[0], logits.shape()[1]);
        if v == 0 {
            return Err(invalid(n, "empty vocabulary"));
        }
        fits_i32(n, "vocabulary", v)?;
        expect(n, "out", out, DType::I32, &[Some(r)])?;
        Ok([grid_dim(n, r)?, 1, 1])
    }

    pub fn run_cpu(&self, logits: &HostTensor, out: &mut HostTensor) -> Result<(), KernelError> {
        let grid = self.check_args(logits, out)?;
        if grid[0] == 0 {
            return Ok(());
        }
        match &self.kernel {
            ArgmaxKernel::Bf16(k) => k.run_cpu(grid, logits, out)?,
            ArgmaxKernel::F32(k) => k.run_cpu(grid, logits, out)?,
        }
        Ok(())
    }

    pub fn launch(&self, rt: &Runtime, logits: &DeviceTensor, out: &DeviceTensor) -> Result<(), KernelError> {
        let grid = self.check_args(logits, out)?;
        if grid[0] == 0 {
            return Ok(());
        }
        match &self.kernel {
            ArgmaxKernel::Bf16(k) => k.launch(rt.stream(), grid, logits, out)?,
            ArgmaxKernel::F32(k) => k.launch(rt.stream(), grid, logits, out)?,
        }
        Ok(())
    }
}
