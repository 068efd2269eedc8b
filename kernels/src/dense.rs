//! Dense decode (flash-decoding): split the keys `[0, seq_len)` over programs, online
//! softmax per split, then [`crate::combine`]. One program serves the `GROUP` query heads
//! of a KV head, so each KV byte is read once.
//!
//! Split kernel grid: `[num_splits, kv_heads, batch]`.

use tessera_codegen::host::HostTensor;
use tessera_codegen::ir::DType;
use tessera_dsl_support::prelude::*;
use tessera_runtime::DeviceTensor;

use crate::combine::LseCombine;
use crate::error::{expect, invalid, KernelError, TensorMeta};
use crate::online_softmax::online_softmax;
use crate::scratch::Scratch;

/// Dense flash-decoding split: one program per (split, KV head, batch) serves the GQA group, online softmax.
#[kernel(tune(BLOCK_N = [64, 32, 128], WARPS = [4, 8], STAGES = [2, 3]), example(GROUP = 4, HEAD_DIM = 128))]
pub fn dense_decode_split<
    KV,
    const GROUP: usize,
    const HEAD_DIM: usize,
    const BLOCK_N: usize,
    const WARPS: usize,
    const STAGES: usize,
>(
    q: Tensor<KV, 3>,              // [B, Hq, D]
    k: Tensor<KV, 4>,              // [B, Hkv, N, D]
    v: Tensor<KV, 4>,              // [B, Hkv, N, D]
    o_part: &mut Tensor<f32, 4>,   // [B, Hq, S, D]
    lse_part: &mut Tensor<f32, 3>, // [B, Hq, S]
    scale_log2: f32,
    seq_len: i32,
    split_len: i32,
) {
    let split = program_id(0);
    let kv_head = program_id(1);
    let batch = program_id(2);
    let split_start = split * split_len;
    let split_stop = min(split_start + split_len, seq_len);
    let q_head0 = kv_head * GROUP as i32;
    if split_start >= split_stop {
        o_part.store([at(batch), range(q_head0, GROUP), at(split), range(0, HEAD_DIM)], zeros([GROUP, HEAD_DIM]));
        lse_part.store([at(batch), range(q_head0, GROUP), at(split)], full([GROUP], f32::NEG_INFINITY));
        return;
    }
    let q_tile = q.load([at(batch), range(q_head0, GROUP), range(0, HEAD_DIM)]);
    let mut row_max = full([GROUP], f32::NEG_INFINITY);
    // Per-column partial sums, summed across the tile once after the loop: a row sum per
    // tile would cost a cross-warp reduction (a barrier) each time.
    let mut sum_part = zeros([GROUP, BLOCK_N]);
    let mut acc = zeros([GROUP, HEAD_DIM]);
    for kv_start in (split_start..split_stop).step_by(BLOCK_N) {
        let valid = arange(0, BLOCK_N) + kv_start < split_stop;
        let rows = valid.expand_dims(1);
        let k_tile = k.load_masked([at(batch), at(kv_head), range(kv_start, BLOCK_N), range(0, HEAD_DIM)], rows, 0.0);
        let v_tile = v.load_masked([at(batch), at(kv_head), range(kv_start, BLOCK_N), range(0, HEAD_DIM)], rows, 0.0);
        let scores = where_(valid, dot_t(q_tile, k_tile) * scale_log2, f32::NEG_INFINITY);
        let (m_new, alpha, probs) = online_softmax(scores, row_max);
        sum_part = sum_part * alpha.expand_dims(1) + probs;
        acc = acc * alpha.expand_dims(1) + dot(probs.cast::<KV>(), v_tile);
        row_max = m_new;
    }
    let row_sum = sum_part.sum(1);
    o_part.store([at(batch), range(q_head0, GROUP), at(split), range(0, HEAD_DIM)], acc / row_sum.expand_dims(1));
    lse_part.store([at(batch), range(q_head0, GROUP), at(split)], row_max + log2(row_sum));
}

/// Parameters shared by the split-KV decoders.
#[derive(Clone, Debug, PartialEq)]
pub struct DecodeParams {
    /// Query heads per KV head (GQA ratio), comptime.
    pub group: usize,
    /// 64 or 128 (any value the emitter takes), comptime.
    pub head_dim: usize,
    /// Keys per inner tile, comptime.
    pub block_n: usize,
    pub warps: usize,
    /// Buffers per pipelined K/V load of the split kernel (`STAGES`, 2 or 3): 3 keeps two
    /// tiles in flight per program, for shapes with few programs per SM.
    pub stages: usize,
    /// Element type of `q`, `k`, `v` and `out`: bf16 (default) or f16 (`KV`).
    pub dtype: DType,
    /// Most splits per (batch, KV head); the combine's comptime `MAX_SPLITS`.
    pub max_splits: usize,
    /// The combine also writes the final LSE `[B, Hq]` (log2 units).
    pub write_lse: bool,
    /// `softmax_scale · log2(e)`.
    pub scale_log2: f32,
    /// Programs per SM the block-sparse split kernel asks the compiler to fit
    /// (`__launch_bounds__` minimum blocks, `MIN_BLOCKS`; 0 leaves registers to it). On the
    /// H200, 3 at BLOCK_N 64 (199 → 168 registers) made the block-sparse decode ~5 % faster;
    /// 5–6 at BLOCK_N 32 made the one-row (centroid) decode ~10 % slower.
    pub min_blocks: usize,
}

impl DecodeParams {
    pub fn new(group: usize, head_dim: usize) -> Self {
        DecodeParams {
            group,
            head_dim,
            block_n: 64,
            warps: 4,
            stages: 2,
            dtype: DType::BF16,
            max_splits: 16,
            write_lse: false,
            scale_log2: crate::default_scale_log2(head_dim),
            min_blocks: 0,
        }
    }

    pub(crate) fn split_config(&self) -> KernelConfig {
        KernelConfig::from_pairs(&[
            ("GROUP", self.group as i64),
            ("HEAD_DIM", self.head_dim as i64),
            ("BLOCK_N", self.block_n as i64),
            ("WARPS", self.warps as i64),
            ("STAGES", self.stages as i64),
            ("KV", tessera_dsl_support::elem_code(self.dtype).unwrap_or(-1)),
        ])
    }

    /// The LSE combine writing `out` in [`Self::dtype`]; on the interpreter when `rt` is
    /// `None`.
    pub(crate) fn combine(&self, rt: Option<&Runtime>, max_splits: usize) -> Result<LseCombine, KernelError> {
        LseCombine::typed(rt, self.head_dim, max_splits, self.write_lse, self.dtype)
    }

    /// Checks `q [B, Hkv·GROUP, D]`, `k`/`v [B, Hkv, N, D]`, `out [B, Hq, D]` (all of
    /// [`Self::dtype`]), `seq_len <= N` and `lse [B, Hq]` f32; returns `(B, Hkv, N)`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn check_qkv(
        &self,
        kernel: &'static str,
        q: &dyn TensorMeta,
        k: &dyn TensorMeta,
        v: &dyn TensorMeta,
        seq_len: usize,
        out: &dyn TensorMeta,
        lse: Option<&dyn TensorMeta>,
    ) -> Result<(usize, usize, usize), KernelError> {
        expect(kernel, "k", k, self.dtype, &[None, None, None, Some(self.head_dim)])?;
        let s = k.shape();
        let (b, hkv, n) = (s[0], s[1], s[2]);
        let hq = hkv * self.group;
        expect(kernel, "v", v, self.dtype, &[Some(b), Some(hkv), Some(n), Some(self.head_dim)])?;
        expect(kernel, "q", q, self.dtype, &[Some(b), Some(hq), Some(self.head_dim)])?;
        expect(kernel, "out", out, self.dtype, &[Some(b), Some(hq), Some(self.head_dim)])?;
        if seq_len > n {
            return Err(invalid(kernel, format!("seq_len {seq_len} exceeds the cache length {n}")));
        }
        if n > i32::MAX as usize / 2 {
            return Err(invalid(kernel, format!("cache length {n} does not fit i32 positions")));
        }
        match (self.write_lse, lse) {
            (true, Some(l)) => expect(kernel, "lse", l, DType::F32, &[Some(b), Some(hq)])?,
            (true, None) => return Err(invalid(kernel, "write_lse is set but no `lse` tensor was given")),
            _ => {}
        }
        Ok((b, hkv, n))
    }
}

/// Runs a split kernel into fresh scratch, then the combine (interpreter).
pub(crate) fn split_combine_cpu(
    combine: &LseCombine,
    shape: [usize; 3], // [B, rows, splits]
    out: &mut HostTensor,
    lse: Option<&mut HostTensor>,
    split: impl FnOnce(&mut HostTensor, &mut HostTensor) -> Result<(), KernelError>,
) -> Result<(), KernelError> {
    let [b, rows, splits] = shape;
    let mut o_part = HostTensor::full(DType::F32, &[b, rows, splits, combine.head_dim], f64::NAN);
    let mut lse_part = HostTensor::full(DType::F32, &[b, rows, splits], f64::NAN);
    split(&mut o_part, &mut lse_part)?;
    combine.run_cpu(&o_part, &lse_part, out, lse)
}

/// Runs a split kernel into fresh device scratch, then the combine (GPU, `rt`'s stream).
pub(crate) fn split_combine_gpu(
    rt: &Runtime,
    combine: &LseCombine,
    shape: [usize; 3],
    out: &DeviceTensor,
    lse: Option<&DeviceTensor>,
    split: impl FnOnce(&DeviceTensor, &DeviceTensor) -> Result<(), KernelError>,
) -> Result<(), KernelError> {
    let [b, rows, splits] = shape;
    let o_part = DeviceTensor::zeros(rt.stream(), DType::F32, &[b, rows, splits, combine.head_dim])?;
    let lse_part = DeviceTensor::zeros(rt.stream(), DType::F32, &[b, rows, splits])?;
    split(&o_part, &lse_part)?;
    combine.launch(rt, &o_part, &lse_part, out, lse)
}

/// [`split_combine_gpu`] with the intermediates taken from `scratch` (slots 0–2): no
/// allocation, memset or synchronization once the scratch holds the shapes.
pub(crate) fn split_combine_gpu_with(
    rt: &Runtime,
    scratch: &Scratch,
    combine: &LseCombine,
    shape: [usize; 3],
    out: &DeviceTensor,
    lse: Option<&DeviceTensor>,
    split: impl FnOnce(&DeviceTensor, &DeviceTensor) -> Result<(), KernelError>,
) -> Result<(), KernelError> {
    let [b, rows, splits] = shape;
    let o_part = scratch.get(rt, 0, DType::F32, &[b, rows, splits, combine.head_dim])?;
    let lse_part = scratch.get(rt, 1, DType::F32, &[b, rows, splits])?;
    split(&o_part, &lse_part)?;
    let dummy;
    let lse = match lse {
        Some(l) => l,
        None => {
            dummy = scratch.get(rt, 2, DType::F32, &[1, 1])?;
            &dummy
        }
    };
    combine.launch(rt, &o_part, &lse_part, out, Some(lse))
}

/// Host op: dense split-KV decode + combine.
pub struct DenseDecode {
    pub params: DecodeParams,
    split: DenseDecodeSplitKernel,
    combine: LseCombine,
}

impl DenseDecode {
    const NAME: &'static str = "dense_decode";

    /// For the interpreter.
    pub fn cpu(params: DecodeParams) -> Result<Self, KernelError> {
        let split = DenseDecodeSplit::cpu(&params.split_config())?;
        let combine = params.combine(None, params.max_splits)?;
        Ok(DenseDecode { params, split, combine })
    }

    /// Compiled and loaded on `rt`'s GPU.
    pub fn new(rt: &Runtime, params: DecodeParams) -> Result<Self, KernelError> {
        let split = DenseDecodeSplit::new(rt, &params.split_config())?;
        let combine = params.combine(Some(rt), params.max_splits)?;
        Ok(DenseDecode { params, split, combine })
    }

    /// Checks every argument; returns the split grid and `split_len`.
    pub fn check_args(
        &self,
        q: &dyn TensorMeta,
        k: &dyn TensorMeta,
        v: &dyn TensorMeta,
        seq_len: usize,
        out: &dyn TensorMeta,
        lse: Option<&dyn TensorMeta>,
    ) -> Result<([u32; 3], usize), KernelError> {
        let p = &self.params;
        let (b, hkv, _) = p.check_qkv(Self::NAME, q, k, v, seq_len, out, lse)?;
        let (split_len, splits) = crate::split_plan(seq_len, p.block_n, p.max_splits);
        Ok(([splits as u32, hkv as u32, b as u32], split_len))
    }

    /// `out[b, h] = softmax(scale · q[b, h]·k[b, h/G, :seq_len]ᵀ) · v[b, h/G, :seq_len]`.
    pub fn run_cpu(
        &self,
        q: &HostTensor,
        k: &HostTensor,
        v: &HostTensor,
        seq_len: usize,
        out: &mut HostTensor,
        lse: Option<&mut HostTensor>,
    ) -> Result<(), KernelError> {
        let (grid, split_len) = self.check_args(q, k, v, seq_len, out, lse.as_deref().map(|l| l as &dyn TensorMeta))?;
        let shape = [q.shape[0], q.shape[1], grid[0] as usize];
        split_combine_cpu(&self.combine, shape, out, lse, |o, l| {
            Ok(self.split.run_cpu(grid, q, k, v, o, l, self.params.scale_log2, seq_len as i32, split_len as i32)?)
        })
    }

    #[allow(clippy::too_many_arguments)]
    pub fn launch(
        &self,
        rt: &Runtime,
        q: &DeviceTensor,
        k: &DeviceTensor,
        v: &DeviceTensor,
        seq_len: usize,
        out: &DeviceTensor,
        lse: Option<&DeviceTensor>,
    ) -> Result<(), KernelError> {
        let (grid, split_len) = self.check_args(q, k, v, seq_len, out, lse.map(|l| l as &dyn TensorMeta))?;
        let shape = [q.shape()[0], q.shape()[1], grid[0] as usize];
        split_combine_gpu(rt, &self.combine, shape, out, lse, |o, l| {
            Ok(self.split.launch(
                rt.stream(),
                grid,
                q,
                k,
                v,
                o,
                l,
                self.params.scale_log2,
                seq_len as i32,
                split_len as i32,
            )?)
        })
    }

    /// [`Self::launch`] with the intermediates kept in `scratch` (for timing loops).
    #[allow(clippy::too_many_arguments)]
    pub fn launch_with(
        &self,
        rt: &Runtime,
        scratch: &Scratch,
        q: &DeviceTensor,
        k: &DeviceTensor,
        v: &DeviceTensor,
        seq_len: usize,
        out: &DeviceTensor,
        lse: Option<&DeviceTensor>,
    ) -> Result<(), KernelError> {
        let (grid, split_len) = self.check_args(q, k, v, seq_len, out, lse.map(|l| l as &dyn TensorMeta))?;
        let shape = [q.shape()[0], q.shape()[1], grid[0] as usize];
        let (sc, n, sl) = (self.params.scale_log2, seq_len as i32, split_len as i32);
        split_combine_gpu_with(rt, scratch, &self.combine, shape, out, lse, |o, l| {
            Ok(self.split.launch(rt.stream(), grid, q, k, v, o, l, sc, n, sl)?)
        })
    }
}
