//! Tree verification: `T` draft-tree tokens (`T <= 64`) attend to the whole prefix
//! `[0, prefix_len)` (dense) and to their ancestors-or-self in the tree, whose K/V rows
//! are the cache rows `prefix_len + j` (node `j`, written by `kv_append` beforehand).
//! `anc [B, T] i64`: bit `j` of `anc[b, i]` is set iff node `j` is an ancestor of node `i`
//! or `i` itself (Medusa/Lookahead ancestors-or-self mask; RoPE positions `prefix + depth`
//! are the caller's business, keys are stored rotated).
//!
//! One launch for every branch: the program of (split, KV head, batch) holds the query
//! tile `[GROUP · T_PAD, D]` (all tree nodes of all query heads of the KV head), so each
//! prefix K/V tile is read once for the `GROUP · T` queries. Queries are passed as
//! `q [B, Hq · T, D]` (a `[B, Hq, T, D]` tensor viewed flat), outputs likewise
//! `[B, Hq · T, D]`; row `h · T + i` is head `h`, node `i`. Split grid
//! `[num_splits, kv_heads, batch]` over the virtual sequence `[0, prefix_len + T)`, then
//! the shared combine over `Hq · T` rows. When `GROUP · T_PAD` exceeds `ROWS` (T = 64 at
//! GQA 4: 256 query rows, too many for one program's registers and shared memory), axis 0
//! also enumerates row blocks of `ROWS` rows: program `split · row_blocks + rb`. The row
//! blocks of one split are neighbours in the grid, so they run together and their
//! repeated K/V reads mostly hit the L2.

use tessera_codegen::host::HostTensor;
use tessera_codegen::ir::DType;
use tessera_dsl_support::prelude::*;
use tessera_runtime::DeviceTensor;

use crate::combine::LseCombine;
use crate::dense::{split_combine_cpu, split_combine_gpu, split_combine_gpu_with};
use crate::error::{expect, host_ints, invalid, unravel, KernelError, TensorMeta};
use crate::online_softmax::{online_softmax, online_softmax_masked};
use crate::scratch::Scratch;

/// Tree verification split: T draft-tree tokens attend to the prefix and their ancestors in one launch.
#[kernel(tune(BLOCK_N = [64, 32, 128], WARPS = [4, 8]), example(GROUP = 4, T_PAD = 16, HEAD_DIM = 128, ROWS = 64))]
pub fn tree_verify_split<
    const GROUP: usize,
    const T_PAD: usize,
    const HEAD_DIM: usize,
    const BLOCK_N: usize,
    const ROWS: usize,
    const WARPS: usize,
>(
    q: Tensor<bf16, 3>,            // [B, Hq * T, D]
    k: Tensor<bf16, 4>,            // [B, Hkv, N, D]
    v: Tensor<bf16, 4>,            // [B, Hkv, N, D]
    anc: Tensor<i64, 2>,           // [B, T]
    o_part: &mut Tensor<f32, 4>,   // [B, Hq * T, S, D]
    lse_part: &mut Tensor<f32, 3>, // [B, Hq * T, S]
    scale_log2: f32,
    prefix_len: i32,
    tree_len: i32,
    split_len: i32,
) {
    let row_blocks = ((GROUP * T_PAD + ROWS - 1) / ROWS) as i32;
    let split = program_id(0) / row_blocks;
    let kv_head = program_id(1);
    let batch = program_id(2);
    let r = arange(0, ROWS) + (program_id(0) % row_blocks) * ROWS as i32;
    let node = r % T_PAD as i32;
    let row_ok = node < tree_len && r < (GROUP * T_PAD) as i32;
    let q_row = where_(row_ok, (kv_head * GROUP as i32 + r / T_PAD as i32) * tree_len + node, -1);
    let total = prefix_len + tree_len;
    let v0 = split * split_len;
    let v1 = min(v0 + split_len, total);
    if v0 >= v1 {
        o_part.store([at(batch), gather(q_row), at(split), range(0, HEAD_DIM)], zeros([ROWS, HEAD_DIM]));
        lse_part.store([at(batch), gather(q_row), at(split)], full([ROWS], f32::NEG_INFINITY));
        return;
    }
    let q_tile = q.load([at(batch), gather(q_row), range(0, HEAD_DIM)]);
    let anc_row = anc.load([at(batch), gather(where_(row_ok, node, -1))]).expand_dims(1);
    let mut row_max = full([ROWS], f32::NEG_INFINITY);
    let mut row_sum = zeros([ROWS]);
    let mut acc = zeros([ROWS, HEAD_DIM]);
    // Whole tiles of the prefix need no mask (every node sees every prefix key): only the
    // last partial tile and the tiles of tree keys pay for the ancestor test.
    let plain_end = max(v0, v0 + (min(v1, prefix_len) - v0) / BLOCK_N as i32 * BLOCK_N as i32);
    for kv_start in (v0..plain_end).step_by(BLOCK_N) {
        let k_tile = k.load([at(batch), at(kv_head), range(kv_start, BLOCK_N), range(0, HEAD_DIM)]);
        let v_tile = v.load([at(batch), at(kv_head), range(kv_start, BLOCK_N), range(0, HEAD_DIM)]);
        let (m_new, alpha, probs) = online_softmax(dot_t(q_tile, k_tile) * scale_log2, row_max);
        row_sum = row_sum * alpha + probs.sum(1);
        acc = acc * alpha.expand_dims(1) + dot(probs.cast::<bf16>(), v_tile);
        row_max = m_new;
    }
    for kv_start in (plain_end..v1).step_by(BLOCK_N) {
        let key = arange(0, BLOCK_N) + kv_start;
        let col_ok = key < v1;
        let rows = col_ok.expand_dims(1);
        let k_tile = k.load_masked([at(batch), at(kv_head), range(kv_start, BLOCK_N), range(0, HEAD_DIM)], rows, 0.0);
        let v_tile = v.load_masked([at(batch), at(kv_head), range(kv_start, BLOCK_N), range(0, HEAD_DIM)], rows, 0.0);
        let tnode = key - prefix_len;
        let bit = (anc_row >> max(tnode, 0).cast::<i64>().expand_dims(0)) & 1;
        let allowed = col_ok.expand_dims(0) && ((tnode < 0).expand_dims(0) || bit == 1);
        let scores = where_(allowed, dot_t(q_tile, k_tile) * scale_log2, f32::NEG_INFINITY);
        // Rows may be fully masked in a tile (tree keys that are not ancestors; pad rows).
        let (m_new, alpha, probs) = online_softmax_masked(scores, row_max);
        row_sum = row_sum * alpha + probs.sum(1);
        acc = acc * alpha.expand_dims(1) + dot(probs.cast::<bf16>(), v_tile);
        row_max = m_new;
    }
    let nonempty = row_sum > 0.0;
    let denom = where_(nonempty, row_sum, 1.0);
    o_part.store([at(batch), gather(q_row), at(split), range(0, HEAD_DIM)], acc / denom.expand_dims(1));
    lse_part.store([at(batch), gather(q_row), at(split)], where_(nonempty, row_max + log2(denom), f32::NEG_INFINITY));
}

/// Host op: tree verification.
pub struct TreeVerify {
    pub group: usize,
    pub head_dim: usize,
    /// Comptime tree capacity (≥ T, ≤ 64).
    pub t_pad: usize,
    pub block_n: usize,
    /// WARPS of the split kernel (its tune space declares 4 and 8).
    pub warps: usize,
    /// Query rows per program (see [`TreeParams::rows`]).
    pub rows: usize,
    pub max_splits: usize,
    pub write_lse: bool,
    pub scale_log2: f32,
    split: TreeVerifySplitKernel,
    combine: LseCombine,
}

/// Build-time choices of [`TreeVerify`].
#[derive(Clone, Debug)]
pub struct TreeParams {
    pub group: usize,
    pub head_dim: usize,
    pub t_pad: usize,
    pub block_n: usize,
    /// WARPS of the split kernel (4 or 8, its tune space; default 4).
    pub warps: usize,
    /// Query rows per program (`ROWS`); `GROUP · t_pad` rows take `ceil(GROUP · t_pad /
    /// rows)` programs per split. Default: all of them up to 64.
    pub rows: usize,
    pub max_splits: usize,
    pub write_lse: bool,
    pub scale_log2: f32,
}

impl TreeParams {
    pub fn new(group: usize, head_dim: usize, t_pad: usize) -> Self {
        TreeParams {
            group,
            head_dim,
            t_pad,
            block_n: 64,
            warps: 4,
            rows: (group * t_pad).min(64),
            max_splits: 16,
            write_lse: false,
            scale_log2: crate::default_scale_log2(head_dim),
        }
    }
}

impl TreeVerify {
    const NAME: &'static str = "tree_verify";

    fn config(p: &TreeParams) -> KernelConfig {
        KernelConfig::from_pairs(&[
            ("GROUP", p.group as i64),
            ("T_PAD", p.t_pad as i64),
            ("HEAD_DIM", p.head_dim as i64),
            ("BLOCK_N", p.block_n as i64),
            ("ROWS", p.rows as i64),
            ("WARPS", p.warps as i64),
        ])
    }

    /// Programs per split along grid axis 0.
    pub fn row_blocks(&self) -> usize {
        (self.group * self.t_pad).div_ceil(self.rows)
    }

    fn from_parts(p: TreeParams, split: TreeVerifySplitKernel, combine: LseCombine) -> Self {
        let TreeParams { group, head_dim, t_pad, block_n, warps, rows, max_splits, write_lse, scale_log2 } = p;
        TreeVerify { group, head_dim, t_pad, block_n, warps, rows, max_splits, write_lse, scale_log2, split, combine }
    }

    pub fn cpu(p: TreeParams) -> Result<Self, KernelError> {
        if p.t_pad == 0 || p.t_pad > 64 || p.rows == 0 {
            return Err(invalid(Self::NAME, format!("t_pad {} is not in 1..=64 or rows is 0", p.t_pad)));
        }
        let split = TreeVerifySplit::cpu(&Self::config(&p))?;
        let combine = LseCombine::cpu(p.head_dim, p.max_splits, p.write_lse)?;
        Ok(Self::from_parts(p, split, combine))
    }

    pub fn new(rt: &Runtime, p: TreeParams) -> Result<Self, KernelError> {
        if p.t_pad == 0 || p.t_pad > 64 || p.rows == 0 {
            return Err(invalid(Self::NAME, format!("t_pad {} is not in 1..=64 or rows is 0", p.t_pad)));
        }
        let split = TreeVerifySplit::new(rt, &Self::config(&p))?;
        let combine = LseCombine::new(rt, p.head_dim, p.max_splits, p.write_lse)?;
        Ok(Self::from_parts(p, split, combine))
    }

    /// Checks `q [B, Hq·T, D]`, caches `[B, Hkv, N, D]` (bf16, `Hq = Hkv·G`),
    /// `anc [B, T] i64`, `1 <= T <= t_pad`, `prefix_len + T <= N`, `out [B, Hq·T, D]`,
    /// `lse [B, Hq·T]`; for a host `anc`, no bit at or above `T` may be set. Returns the
    /// split grid and `split_len`.
    #[allow(clippy::too_many_arguments)]
    pub fn check_args(
        &self,
        q: &dyn TensorMeta,
        k: &dyn TensorMeta,
        v: &dyn TensorMeta,
        anc: &dyn TensorMeta,
        prefix_len: usize,
        out: &dyn TensorMeta,
        lse: Option<&dyn TensorMeta>,
    ) -> Result<([u32; 3], usize), KernelError> {
        let n = Self::NAME;
        let d = Some(self.head_dim);
        expect(n, "k", k, DType::BF16, &[None, None, None, d])?;
        let s = k.shape().to_vec();
        let (b, hkv, cap) = (s[0], s[1], s[2]);
        expect(n, "v", v, DType::BF16, &[Some(b), Some(hkv), Some(cap), d])?;
        expect(n, "anc", anc, DType::I64, &[Some(b), None])?;
        let t = anc.shape()[1];
        if t == 0 || t > self.t_pad {
            return Err(invalid(n, format!("tree size {t} is not in 1..={}", self.t_pad)));
        }
        let rows = hkv * self.group * t;
        expect(n, "q", q, DType::BF16, &[Some(b), Some(rows), d])?;
        expect(n, "out", out, DType::BF16, &[Some(b), Some(rows), d])?;
        match (self.write_lse, lse) {
            (true, Some(l)) => expect(n, "lse", l, DType::F32, &[Some(b), Some(rows)])?,
            (true, None) => return Err(invalid(n, "write_lse is set but no `lse` tensor was given")),
            _ => {}
        }
        if prefix_len + t > cap {
            return Err(invalid(n, format!("prefix {prefix_len} + tree {t} exceed the cache length {cap}")));
        }
        if let Some(bits) = host_ints(anc) {
            for (i, &x) in bits.iter().enumerate() {
                if t < 64 && (x as u64) >> t != 0 {
                    return Err(KernelError::IndexOutOfRange {
                        kernel: n,
                        arg: "anc",
                        at: unravel(i, anc.shape()),
                        value: 64 - (x as u64).leading_zeros() as i64 - 1,
                        lo: 0,
                        hi: t as i64,
                    });
                }
            }
        }
        let (split_len, splits) = crate::split_plan(prefix_len + t, self.block_n, self.max_splits);
        Ok(([(splits * self.row_blocks()) as u32, hkv as u32, b as u32], split_len))
    }

    #[allow(clippy::too_many_arguments)]
    pub fn run_cpu(
        &self,
        q: &HostTensor,
        k: &HostTensor,
        v: &HostTensor,
        anc: &HostTensor,
        prefix_len: usize,
        out: &mut HostTensor,
        lse: Option<&mut HostTensor>,
    ) -> Result<(), KernelError> {
        let (grid, split_len) =
            self.check_args(q, k, v, anc, prefix_len, out, lse.as_deref().map(|l| l as &dyn TensorMeta))?;
        let shape = [q.shape[0], q.shape[1], grid[0] as usize / self.row_blocks()];
        let t = anc.shape[1] as i32;
        split_combine_cpu(&self.combine, shape, out, lse, |o, l| {
            Ok(self.split.run_cpu(grid, q, k, v, anc, o, l, self.scale_log2, prefix_len as i32, t, split_len as i32)?)
        })
    }

    #[allow(clippy::too_many_arguments)]
    pub fn launch(
        &self,
        rt: &Runtime,
        q: &DeviceTensor,
        k: &DeviceTensor,
        v: &DeviceTensor,
        anc: &DeviceTensor,
        prefix_len: usize,
        out: &DeviceTensor,
        lse: Option<&DeviceTensor>,
    ) -> Result<(), KernelError> {
        let (grid, split_len) = self.check_args(q, k, v, anc, prefix_len, out, lse.map(|l| l as &dyn TensorMeta))?;
        let shape = [q.shape()[0], q.shape()[1], grid[0] as usize / self.row_blocks()];
        let t = anc.shape()[1] as i32;
        let sc = self.scale_log2;
        split_combine_gpu(rt, &self.combine, shape, out, lse, |o, l| {
            Ok(self.split.launch(rt.stream(), grid, q, k, v, anc, o, l, sc, prefix_len as i32, t, split_len as i32)?)
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
        anc: &DeviceTensor,
        prefix_len: usize,
        out: &DeviceTensor,
        lse: Option<&DeviceTensor>,
    ) -> Result<(), KernelError> {
        let (grid, split_len) = self.check_args(q, k, v, anc, prefix_len, out, lse.map(|l| l as &dyn TensorMeta))?;
        let shape = [q.shape()[0], q.shape()[1], grid[0] as usize / self.row_blocks()];
        let t = anc.shape()[1] as i32;
        let sc = self.scale_log2;
        split_combine_gpu_with(rt, scratch, &self.combine, shape, out, lse, |o, l| {
            Ok(self.split.launch(rt.stream(), grid, q, k, v, anc, o, l, sc, prefix_len as i32, t, split_len as i32)?)
        })
    }
}
