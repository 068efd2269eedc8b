//! Sink + sliding window decode (StreamingLLM / LM-Infinite Λ-shape): each query attends
//! to the keys `[0, min(S, n))` ∪ `[max(n - W, 0), n)` — a union, so overlapping ranges
//! (`S + W >= n`, or a window longer than the sequence) count every key once.
//!
//! The union is laid out as one virtual sequence `[0, sink_end) ++ [win_start, n)`
//! (`win_start = max(n - W, sink_end)`) that is split over programs like dense decode;
//! each program walks its part of the sink segment and of the window segment with
//! contiguous (`range`) loads. Split kernel grid `[num_splits, kv_heads, batch]`, then
//! the shared combine. The LM-Infinite variant with the distance cap (keys stored before RoPE,
//! rotated in the kernel) is [`crate::lm_infinite`].

use tessera_codegen::host::HostTensor;
use tessera_dsl_support::prelude::*;
use tessera_runtime::DeviceTensor;

use crate::combine::LseCombine;
use crate::dense::{split_combine_cpu, split_combine_gpu, split_combine_gpu_with, DecodeParams};
use crate::error::{KernelError, TensorMeta};
use crate::online_softmax::online_softmax;
use crate::scratch::Scratch;

/// Sink + sliding-window decode split (StreamingLLM Λ-shape): the first S and last W keys only.
#[kernel(tune(BLOCK_N = [64, 32, 128], WARPS = [4, 8], STAGES = [2, 3]), example(GROUP = 4, HEAD_DIM = 128))]
pub fn sink_window_decode_split<
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
    sink: i32,
    window: i32,
    split_len: i32,
) {
    let split = program_id(0);
    let kv_head = program_id(1);
    let batch = program_id(2);
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
    let q_tile = q.load([at(batch), range(q_head0, GROUP), range(0, HEAD_DIM)]);
    let mut row_max = full([GROUP], f32::NEG_INFINITY);
    // Per-column partial sums, summed across the tile once after the loop: a row sum per
    // tile would cost a cross-warp reduction (a barrier) each time.
    let mut sum_part = zeros([GROUP, BLOCK_N]);
    let mut acc = zeros([GROUP, HEAD_DIM]);
    // Sink segment: virtual = real positions [v0, min(v1, sink_end)).
    let s_stop = min(v1, sink_end);
    for kv_start in (v0..s_stop).step_by(BLOCK_N) {
        let valid = arange(0, BLOCK_N) + kv_start < s_stop;
        let rows = valid.expand_dims(1);
        let k_tile = k.load_masked([at(batch), at(kv_head), range(kv_start, BLOCK_N), range(0, HEAD_DIM)], rows, 0.0);
        let v_tile = v.load_masked([at(batch), at(kv_head), range(kv_start, BLOCK_N), range(0, HEAD_DIM)], rows, 0.0);
        let scores = where_(valid, dot_t(q_tile, k_tile) * scale_log2, f32::NEG_INFINITY);
        let (m_new, alpha, probs) = online_softmax(scores, row_max);
        sum_part = sum_part * alpha.expand_dims(1) + probs;
        acc = acc * alpha.expand_dims(1) + dot(probs.cast::<KV>(), v_tile);
        row_max = m_new;
    }
    // Window segment: virtual [max(v0, sink_end), v1) is real + (win_start - sink_end).
    let shift = win_start - sink_end;
    let w_start = max(v0, sink_end) + shift;
    let w_stop = v1 + shift;
    for kv_start in (w_start..w_stop).step_by(BLOCK_N) {
        let valid = arange(0, BLOCK_N) + kv_start < w_stop;
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

/// Number of keys attended with `sink`/`window` over `seq_len` keys (the union's size).
pub fn union_len(seq_len: usize, sink: usize, window: usize) -> usize {
    let sink_end = sink.min(seq_len);
    let win_start = seq_len.saturating_sub(window).max(sink_end);
    sink_end + (seq_len - win_start)
}

/// Host op: sink + window split decode + combine.
pub struct SinkWindowDecode {
    pub params: DecodeParams,
    split: SinkWindowDecodeSplitKernel,
    combine: LseCombine,
}

impl SinkWindowDecode {
    const NAME: &'static str = "sink_window_decode";

    pub fn cpu(params: DecodeParams) -> Result<Self, KernelError> {
        let split = SinkWindowDecodeSplit::cpu(&params.split_config())?;
        let combine = params.combine(None, params.max_splits)?;
        Ok(SinkWindowDecode { params, split, combine })
    }

    pub fn new(rt: &Runtime, params: DecodeParams) -> Result<Self, KernelError> {
        let split = SinkWindowDecodeSplit::new(rt, &params.split_config())?;
        let combine = params.combine(Some(rt), params.max_splits)?;
        Ok(SinkWindowDecode { params, split, combine })
    }

    /// Checks every argument; returns the split grid and `split_len`.
    #[allow(clippy::too_many_arguments)]
    pub fn check_args(
        &self,
        q: &dyn TensorMeta,
        k: &dyn TensorMeta,
        v: &dyn TensorMeta,
        seq_len: usize,
        sink: usize,
        window: usize,
        out: &dyn TensorMeta,
        lse: Option<&dyn TensorMeta>,
    ) -> Result<([u32; 3], usize), KernelError> {
        let p = &self.params;
        let (b, hkv, _) = p.check_qkv(Self::NAME, q, k, v, seq_len, out, lse)?;
        if sink > i32::MAX as usize || window > i32::MAX as usize {
            return Err(crate::error::invalid(Self::NAME, "sink/window do not fit i32"));
        }
        let (split_len, splits) = crate::split_plan(union_len(seq_len, sink, window), p.block_n, p.max_splits);
        Ok(([splits as u32, hkv as u32, b as u32], split_len))
    }

    #[allow(clippy::too_many_arguments)]
    pub fn run_cpu(
        &self,
        q: &HostTensor,
        k: &HostTensor,
        v: &HostTensor,
        seq_len: usize,
        sink: usize,
        window: usize,
        out: &mut HostTensor,
        lse: Option<&mut HostTensor>,
    ) -> Result<(), KernelError> {
        let (grid, split_len) =
            self.check_args(q, k, v, seq_len, sink, window, out, lse.as_deref().map(|l| l as &dyn TensorMeta))?;
        let shape = [q.shape[0], q.shape[1], grid[0] as usize];
        let sc = self.params.scale_log2;
        split_combine_cpu(&self.combine, shape, out, lse, |o, l| {
            let (n, s, w) = (seq_len as i32, sink as i32, window as i32);
            Ok(self.split.run_cpu(grid, q, k, v, o, l, sc, n, s, w, split_len as i32)?)
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
        sink: usize,
        window: usize,
        out: &DeviceTensor,
        lse: Option<&DeviceTensor>,
    ) -> Result<(), KernelError> {
        let (grid, split_len) =
            self.check_args(q, k, v, seq_len, sink, window, out, lse.map(|l| l as &dyn TensorMeta))?;
        let shape = [q.shape()[0], q.shape()[1], grid[0] as usize];
        let sc = self.params.scale_log2;
        split_combine_gpu(rt, &self.combine, shape, out, lse, |o, l| {
            let (n, s, w) = (seq_len as i32, sink as i32, window as i32);
            Ok(self.split.launch(rt.stream(), grid, q, k, v, o, l, sc, n, s, w, split_len as i32)?)
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
        sink: usize,
        window: usize,
        out: &DeviceTensor,
        lse: Option<&DeviceTensor>,
    ) -> Result<(), KernelError> {
        let (grid, split_len) =
            self.check_args(q, k, v, seq_len, sink, window, out, lse.map(|l| l as &dyn TensorMeta))?;
        let shape = [q.shape()[0], q.shape()[1], grid[0] as usize];
        let sc = self.params.scale_log2;
        split_combine_gpu_with(rt, scratch, &self.combine, shape, out, lse, |o, l| {
            let (n, s, w) = (seq_len as i32, sink as i32, window as i32);
            Ok(self.split.launch(rt.stream(), grid, q, k, v, o, l, sc, n, s, w, split_len as i32)?)
        })
    }
}
