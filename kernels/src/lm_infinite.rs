//! LM-Infinite decode (algorithms.md §1): the Λ-shaped key set of [`crate::sink_window`]
//! (first `S` keys ∪ last `W` keys) **with the distance cap**: the cache holds keys
//! *before* RoPE, and the kernel rotates each key it reads at position
//! `max(p, n − 1 − cap)` — so no query–key distance the model sees exceeds `cap` (its
//! pre-training length), whatever the context length `n`. The query arrives rotated at its
//! own position `n − 1` (as in ordinary decode).
//!
//! RoPE pairs are rotate-half (`(i, i + D/2)`, the HF layout) with the decoder's tables
//! ([`crate::RopeTable`]: `cos`/`sin [P, D/2]` f32, any base and scaling, `P ≥ n`). Each
//! K tile is read as two halves, rotated in f32 and rounded to bf16 for the tensor-core
//! product `q_lo · k_lo' + q_hi · k_hi'`.
//!
//! Work layout as in sink + window: the union `[0, sink_end) ++ [win_start, n)` is one
//! virtual sequence split over `[num_splits, kv_heads, batch]` programs, then the shared
//! LSE combine. Tiles may straddle the sink/window boundary, so K/V rows are gathered by
//! position.

use tessera_codegen::host::HostTensor;
use tessera_codegen::ir::DType;
use tessera_dsl_support::prelude::*;
use tessera_runtime::DeviceTensor;

use crate::combine::LseCombine;
use crate::dense::{split_combine_cpu, split_combine_gpu_with, DecodeParams};
use crate::error::{expect, invalid, KernelError, TensorMeta};
use crate::online_softmax::online_softmax;
use crate::scratch::Scratch;
use crate::sink_window::union_len;

/// LM-Infinite decode split: sink + window keys, RoPE applied here with distances capped.
#[kernel(tune(BLOCK_N = [64, 32], WARPS = [4, 8]), example(GROUP = 4, HEAD_DIM = 128))]
pub fn lm_infinite_decode_split<const GROUP: usize, const HEAD_DIM: usize, const BLOCK_N: usize, const WARPS: usize>(
    q: Tensor<bf16, 3>,            // [B, Hq, D], rotated at position n - 1
    k: Tensor<bf16, 4>,            // [B, Hkv, N, D], keys before RoPE
    v: Tensor<bf16, 4>,            // [B, Hkv, N, D]
    cos: Tensor<f32, 2>,           // [P, D/2]
    sin: Tensor<f32, 2>,           // [P, D/2]
    o_part: &mut Tensor<f32, 4>,   // [B, Hq, S, D]
    lse_part: &mut Tensor<f32, 3>, // [B, Hq, S]
    scale_log2: f32,
    seq_len: i32,
    sink: i32,
    window: i32,
    cap: i32,
    split_len: i32,
) {
    let split = program_id(0);
    let kv_head = program_id(1);
    let batch = program_id(2);
    let half = HEAD_DIM / 2;
    let sink_end = min(max(sink, 0), seq_len);
    let win_start = max(max(seq_len - max(window, 0), 0), sink_end);
    let total = sink_end + (seq_len - win_start);
    let v0 = split * split_len;
    let v1 = min(v0 + split_len, total);
    let q_head0 = kv_head * GROUP as i32;
    if v0 >= v1 {
        o_part.store([at(batch), range(q_head0, GROUP), at(split), range(0, HEAD_DIM)], zeros([GROUP, HEAD_DIM]));
        lse_part.store([at(batch), range(q_head0, GROUP), at(split)], full([GROUP], f32::NEG_INFINITY));
        return;
    }
    let q_lo = q.load([at(batch), range(q_head0, GROUP), range(0, half)]);
    let q_hi = q.load([at(batch), range(q_head0, GROUP), range(half, half)]);
    // Keys older than this are rotated as if they were this old: distance ≤ cap.
    let oldest = seq_len - 1 - max(cap, 0);
    let shift = win_start - sink_end;
    let mut row_max = full([GROUP], f32::NEG_INFINITY);
    // Per-column partial sums, summed across the tile once after the loop: a row sum per
    // tile would cost a cross-warp reduction (a barrier) each time.
    let mut sum_part = zeros([GROUP, BLOCK_N]);
    let mut acc = zeros([GROUP, HEAD_DIM]);
    for t0 in (v0..v1).step_by(BLOCK_N) {
        let t = arange(0, BLOCK_N) + t0;
        let valid = t < v1;
        let pos = where_(t < sink_end, t, t + shift);
        let rows = valid.expand_dims(1);
        let k_lo = k.load_masked([at(batch), at(kv_head), gather(pos), range(0, half)], rows, 0.0).cast::<f32>();
        let k_hi = k.load_masked([at(batch), at(kv_head), gather(pos), range(half, half)], rows, 0.0).cast::<f32>();
        let rot = max(pos, oldest);
        let c = cos.load_masked([gather(rot), range(0, half)], rows, 0.0);
        let s = sin.load_masked([gather(rot), range(0, half)], rows, 0.0);
        let kr_lo = (k_lo * c - k_hi * s).cast::<bf16>();
        let kr_hi = (k_hi * c + k_lo * s).cast::<bf16>();
        let v_tile = v.load_masked([at(batch), at(kv_head), gather(pos), range(0, HEAD_DIM)], rows, 0.0);
        let logits = dot_t(q_lo, kr_lo) + dot_t(q_hi, kr_hi);
        let scores = where_(valid, logits * scale_log2, f32::NEG_INFINITY);
        let (m_new, alpha, probs) = online_softmax(scores, row_max);
        sum_part = sum_part * alpha.expand_dims(1) + probs;
        acc = acc * alpha.expand_dims(1) + dot(probs.cast::<bf16>(), v_tile);
        row_max = m_new;
    }
    let row_sum = sum_part.sum(1);
    o_part.store([at(batch), range(q_head0, GROUP), at(split), range(0, HEAD_DIM)], acc / row_sum.expand_dims(1));
    lse_part.store([at(batch), range(q_head0, GROUP), at(split)], row_max + log2(row_sum));
}

/// Host op: LM-Infinite split decode + combine.
pub struct LmInfiniteDecode {
    pub params: DecodeParams,
    split: LmInfiniteDecodeSplitKernel,
    combine: LseCombine,
}

/// The runtime arguments besides the tensors: sequence length, the Λ shape and the cap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LmInfiniteArgs {
    pub seq_len: usize,
    pub sink: usize,
    pub window: usize,
    /// Largest query–key distance the rotation shows (the pre-training context).
    pub cap: usize,
}

impl LmInfiniteDecode {
    const NAME: &'static str = "lm_infinite_decode";

    /// The split kernel's config (public so that tuning keys hash what the op builds).
    pub fn config(params: &DecodeParams) -> KernelConfig {
        KernelConfig::from_pairs(&[
            ("GROUP", params.group as i64),
            ("HEAD_DIM", params.head_dim as i64),
            ("BLOCK_N", params.block_n as i64),
            ("WARPS", params.warps as i64),
        ])
    }

    /// Interpreter op.
    pub fn cpu(params: DecodeParams) -> Result<Self, KernelError> {
        let split = LmInfiniteDecodeSplit::cpu(&Self::config(&params))?;
        let combine = LseCombine::cpu(params.head_dim, params.max_splits, params.write_lse)?;
        Ok(LmInfiniteDecode { params, split, combine })
    }

    /// GPU op.
    pub fn new(rt: &Runtime, params: DecodeParams) -> Result<Self, KernelError> {
        let split = LmInfiniteDecodeSplit::new(rt, &Self::config(&params))?;
        let combine = LseCombine::new(rt, params.head_dim, params.max_splits, params.write_lse)?;
        Ok(LmInfiniteDecode { params, split, combine })
    }

    /// Checks every argument (`cos`/`sin [P, D/2] f32` with `P ≥ seq_len`, an even head
    /// dim, `cap ≥ 1`); returns the split grid and `split_len`.
    #[allow(clippy::too_many_arguments)]
    pub fn check_args(
        &self,
        q: &dyn TensorMeta,
        k: &dyn TensorMeta,
        v: &dyn TensorMeta,
        cos: &dyn TensorMeta,
        sin: &dyn TensorMeta,
        a: LmInfiniteArgs,
        out: &dyn TensorMeta,
        lse: Option<&dyn TensorMeta>,
    ) -> Result<([u32; 3], usize), KernelError> {
        let n = Self::NAME;
        let p = &self.params;
        let (b, hkv, _) = p.check_qkv(n, q, k, v, a.seq_len, out, lse)?;
        let half = p.head_dim / 2;
        expect(n, "cos", cos, DType::F32, &[None, Some(half)])?;
        expect(n, "sin", sin, DType::F32, &[Some(cos.shape()[0]), Some(half)])?;
        if cos.shape()[0] < a.seq_len {
            return Err(invalid(
                n,
                format!("the RoPE tables hold {} positions, fewer than seq_len {}", cos.shape()[0], a.seq_len),
            ));
        }
        if a.cap == 0 || [a.sink, a.window, a.cap].iter().any(|&x| x > i32::MAX as usize) {
            return Err(invalid(n, format!("cap must be in 1..=i32::MAX (cap {}), sink/window must fit i32", a.cap)));
        }
        let (split_len, splits) = crate::split_plan(union_len(a.seq_len, a.sink, a.window), p.block_n, p.max_splits);
        Ok(([splits as u32, hkv as u32, b as u32], split_len))
    }

    /// On the interpreter.
    #[allow(clippy::too_many_arguments)]
    pub fn run_cpu(
        &self,
        q: &HostTensor,
        k: &HostTensor,
        v: &HostTensor,
        cos: &HostTensor,
        sin: &HostTensor,
        a: LmInfiniteArgs,
        out: &mut HostTensor,
        lse: Option<&mut HostTensor>,
    ) -> Result<(), KernelError> {
        let lse_meta = lse.as_deref().map(|l| l as &dyn TensorMeta);
        let (grid, split_len) = self.check_args(q, k, v, cos, sin, a, out, lse_meta)?;
        let shape = [q.shape[0], q.shape[1], grid[0] as usize];
        let sc = self.params.scale_log2;
        let [n, s, w, c] = [a.seq_len, a.sink, a.window, a.cap].map(|x| x as i32);
        split_combine_cpu(&self.combine, shape, out, lse, |o, l| {
            Ok(self.split.run_cpu(grid, q, k, v, cos, sin, o, l, sc, n, s, w, c, split_len as i32)?)
        })
    }

    /// On the GPU (checked first, nothing launched on a bad argument), with fresh
    /// intermediates.
    #[allow(clippy::too_many_arguments)]
    pub fn launch(
        &self,
        rt: &Runtime,
        q: &DeviceTensor,
        k: &DeviceTensor,
        v: &DeviceTensor,
        cos: &DeviceTensor,
        sin: &DeviceTensor,
        a: LmInfiniteArgs,
        out: &DeviceTensor,
        lse: Option<&DeviceTensor>,
    ) -> Result<(), KernelError> {
        self.launch_with(rt, &Scratch::new(), q, k, v, cos, sin, a, out, lse)
    }

    /// [`Self::launch`] with the partial outputs kept in `scratch` (for timing loops and
    /// decode steps: no allocation, memset or synchronization once it holds the shapes).
    #[allow(clippy::too_many_arguments)]
    pub fn launch_with(
        &self,
        rt: &Runtime,
        scratch: &Scratch,
        q: &DeviceTensor,
        k: &DeviceTensor,
        v: &DeviceTensor,
        cos: &DeviceTensor,
        sin: &DeviceTensor,
        a: LmInfiniteArgs,
        out: &DeviceTensor,
        lse: Option<&DeviceTensor>,
    ) -> Result<(), KernelError> {
        let (grid, split_len) = self.check_args(q, k, v, cos, sin, a, out, lse.map(|l| l as &dyn TensorMeta))?;
        let shape = [q.shape()[0], q.shape()[1], grid[0] as usize];
        let sc = self.params.scale_log2;
        let [n, s, w, c] = [a.seq_len, a.sink, a.window, a.cap].map(|x| x as i32);
        split_combine_gpu_with(rt, scratch, &self.combine, shape, out, lse, |o, l| {
            Ok(self.split.launch(rt.stream(), grid, q, k, v, cos, sin, o, l, sc, n, s, w, c, split_len as i32)?)
        })
    }
}
