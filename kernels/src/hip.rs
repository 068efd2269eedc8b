//! HiP tree-pruned block selection (HiP Attention v1.1, algorithms.md §2), per
//! (batch, KV head), for decode.
//!
//! Keys outside sink + window, `[0, T')` with `T' = seq_len − window`, are cut into
//! `nb = ceil(T' / BK)` blocks of `BK` keys. `K` nodes (block ranges) start as an even
//! split of the `nb` blocks ([`init_nodes`]); each refinement step splits every node in two
//! (the left child takes the larger half), scores each child by its **representative
//! block** — the `BK` keys of the block at the child's centre, `(lo + hi) / 2` — as the max
//! over those keys and over the `GROUP` query heads of the KV head of `q · k` (so search
//! traffic scales with KV heads, not query heads), and keeps the top-`K` children (ties:
//! the lower child index, child `2i` / `2i + 1` = left / right of node `i`). After
//! [`refine_steps`] steps every node is one block; the selected block indices (ascending)
//! feed [`crate::BlockSparseDecode`] with block size `BK` together with sink + window.
//!
//! [`tree_search`] is the algorithm on the host with any scorer (the f64 reference and the
//! recall tool use it); the `#[kernel]`s below run it on the device, one launch pair per
//! step, driven by [`HipSelect`]'s host loop.
//!
//! **Mask refresh.** The selection is recomputed every `R` decode steps and reused in
//! between (HiP's `HIP_REFRESH_INTERVAL`, 8 in the paper's demo): host logic — the caller
//! keeps `block_idx`/`block_count` and reruns [`HipSelect`] when `step % R == 0`; tokens
//! appended since the last refresh are inside the sliding window, so they are attended
//! anyway. Survivor scores are not cached across steps (HiP v1.1 caches them so that only
//! the new child is scored): each step rescores both children, 2× the search dot products
//! for a simpler kernel.

use tessera_codegen::host::HostTensor;
use tessera_codegen::ir::DType;
use tessera_dsl_support::prelude::*;
use tessera_runtime::DeviceTensor;

use crate::error::{expect, invalid, KernelError, TensorMeta};

/// A node: the block range `[lo, hi)`; empty when `lo == hi`.
pub type Node = (usize, usize);

/// `k` nodes splitting `nb` blocks evenly (`[i·nb/k, (i+1)·nb/k)`); with fewer blocks than
/// nodes, nodes `0..nb` are the single blocks and the rest are empty.
pub fn init_nodes(nb: usize, k: usize) -> Vec<Node> {
    (0..k)
        .map(|i| {
            if nb >= k {
                (i * nb / k, (i + 1) * nb / k)
            } else if i < nb {
                (i, i + 1)
            } else {
                (nb, nb)
            }
        })
        .collect()
}

/// Refinement steps until every node is one block: `ceil(log2(ceil(nb / k)))`.
pub fn refine_steps(nb: usize, k: usize) -> usize {
    let longest = if k == 0 || nb <= k { 1 } else { nb.div_ceil(k) };
    longest.next_power_of_two().trailing_zeros() as usize
}

/// The two children of a node: left `[lo, lo + ceil(len/2))`, right the rest.
pub fn children((lo, hi): Node) -> [Node; 2] {
    let mid = lo + (hi - lo).div_ceil(2);
    [(lo, mid), (mid, hi)]
}

/// The representative (centre) block of a non-empty node.
pub fn centre((lo, hi): Node) -> Option<usize> {
    (hi > lo).then_some((lo + hi) / 2)
}

/// One refinement step: split, score each non-empty child's centre block with `score`,
/// keep the top `nodes.len()` (descending score, ties to the lower child index; empty
/// children score -inf).
pub fn refine(nodes: &[Node], score: &mut impl FnMut(usize) -> f64) -> Vec<Node> {
    let kids: Vec<Node> = nodes.iter().flat_map(|&n| children(n)).collect();
    let s: Vec<f64> = kids.iter().map(|&c| centre(c).map_or(f64::NEG_INFINITY, &mut *score)).collect();
    let mut order: Vec<usize> = (0..kids.len()).collect();
    order.sort_by(|&a, &b| s[b].total_cmp(&s[a]).then(a.cmp(&b)));
    order.truncate(nodes.len());
    order.into_iter().map(|c| kids[c]).collect()
}

/// The whole search: `k` nodes over `nb` blocks, `score(block)` the representative score
/// of a block. Returns the selected blocks in ascending order (`min(k, nb)` of them).
pub fn tree_search(nb: usize, k: usize, mut score: impl FnMut(usize) -> f64) -> Vec<usize> {
    let mut nodes = init_nodes(nb, k);
    for _ in 0..refine_steps(nb, k) {
        nodes = refine(&nodes, &mut score);
    }
    let mut out: Vec<usize> = nodes.iter().filter(|n| n.1 > n.0).map(|n| n.0).collect();
    debug_assert!(nodes.iter().all(|n| n.1 - n.0 <= 1));
    out.sort_unstable();
    out
}

/// The f64 reference selection of one problem: `q [b, hkv·g, d]`, `k [b, hkv, cap, d]`
/// (values already rounded to bf16), blocks of `bk` keys over `[0, seq_len − window)`,
/// `k_nodes` nodes; a block's score is the max over the group and its keys `< seq_len` of
/// `q · k`. Returns the selected blocks (ascending) per `(b, kv_head)`.
#[allow(clippy::too_many_arguments)]
pub fn reference_select(
    dims: crate::reference::DecodeDims,
    q: &[f64],
    k: &[f64],
    seq_len: usize,
    window: usize,
    bk: usize,
    k_nodes: usize,
) -> Vec<Vec<usize>> {
    let crate::reference::DecodeDims { batch, kv_heads, group, cap, head_dim: d } = dims;
    let nb = seq_len.saturating_sub(window).div_ceil(bk);
    let mut out = Vec::new();
    for b in 0..batch {
        for h in 0..kv_heads {
            let base = (b * kv_heads + h) * cap;
            out.push(tree_search(nb, k_nodes, |blk| {
                let mut best = f64::NEG_INFINITY;
                for j in blk * bk..((blk + 1) * bk).min(seq_len) {
                    let kr = &k[(base + j) * d..][..d];
                    for g in 0..group {
                        let qr = &q[((b * kv_heads + h) * group + g) * d..][..d];
                        best = best.max(qr.iter().zip(kr).map(|(x, y)| x * y).sum());
                    }
                }
                best
            }));
        }
    }
    out
}

/// Initial nodes ([`init_nodes`]) of every (batch, KV head); grid `[Hkv, B]`.
#[kernel(example(TOPK = 64))]
pub fn hip_init_nodes<const TOPK: usize, const WARPS: usize>(
    node_lo: &mut Tensor<i32, 3>, // [B, Hkv, TOPK]
    node_hi: &mut Tensor<i32, 3>, // [B, Hkv, TOPK]
    num_blocks: i32,
) {
    let kv_head = program_id(0);
    let batch = program_id(1);
    let i = arange(0, TOPK);
    let big = num_blocks >= TOPK as i32;
    let lo = where_(big, i * num_blocks / TOPK as i32, min(i, num_blocks));
    let hi = where_(big, (i + 1) * num_blocks / TOPK as i32, min(i + 1, num_blocks));
    node_lo.store([at(batch), at(kv_head), range(0, TOPK)], lo);
    node_hi.store([at(batch), at(kv_head), range(0, TOPK)], hi);
}

/// Scores `CHILD_TILE` of the `2·K` children (child `c` = half `c % 2` of node `c / 2`):
/// max over the group's queries and the `BK` keys of the child's centre block of `q · k`
/// (empty child: -inf). Grid `[ceil(2K / CHILD_TILE), Hkv, B]`.
#[kernel(tune(CHILD_TILE = [64, 128, 32], WARPS = [4, 8]), example(GROUP = 4, HEAD_DIM = 128, BK = 16))]
pub fn hip_score_children<
    const GROUP: usize,
    const HEAD_DIM: usize,
    const BK: usize,
    const CHILD_TILE: usize,
    const WARPS: usize,
>(
    q: Tensor<bf16, 3>,               // [B, Hq, D]
    k: Tensor<bf16, 4>,               // [B, Hkv, N, D]
    node_lo: Tensor<i32, 3>,          // [B, Hkv, K]
    node_hi: Tensor<i32, 3>,          // [B, Hkv, K]
    child_score: &mut Tensor<f32, 3>, // [B, Hkv, 2K]
    seq_len: i32,
) {
    let tile = program_id(0);
    let kv_head = program_id(1);
    let batch = program_id(2);
    let nodes = node_lo.dim(2).cast::<i32>();
    let c = arange(0, CHILD_TILE) + tile * CHILD_TILE as i32;
    let live = c < nodes * 2;
    let node = c / 2;
    let left = c % 2 == 0;
    let lo = node_lo.load_masked([at(batch), at(kv_head), gather(node)], live, 0);
    let hi = node_hi.load_masked([at(batch), at(kv_head), gather(node)], live, 0);
    let mid = lo + (hi - lo + 1) / 2;
    let c_lo = where_(left, lo, mid);
    let c_hi = where_(left, mid, hi);
    let nonempty = live && c_hi > c_lo;
    let rep = (c_lo + c_hi) / 2;
    let q_tile = q.load([at(batch), range(kv_head * GROUP as i32, GROUP), range(0, HEAD_DIM)]);
    let mut best = full([CHILD_TILE], f32::NEG_INFINITY);
    for t in 0..BK as i32 {
        let pos = rep * BK as i32 + t;
        let valid = nonempty && pos < seq_len;
        let keys = k.load_masked([at(batch), at(kv_head), gather(pos), range(0, HEAD_DIM)], valid.expand_dims(1), 0.0);
        let s = dot_t(q_tile, keys).max(0);
        best = max(best, where_(valid, s, f32::NEG_INFINITY));
    }
    child_score.store_masked([at(batch), at(kv_head), range(tile * CHILD_TILE as i32, CHILD_TILE)], best, live);
}

/// Keeps the top-`TOPK` of the `2·TOPK` children (ties: lower child index) and writes
/// them as the next nodes. Grid `[Hkv, B]`.
#[kernel(example(TOPK = 64))]
pub fn hip_select_children<const TOPK: usize, const WARPS: usize>(
    child_score: Tensor<f32, 3>, // [B, Hkv, 2K]
    node_lo: Tensor<i32, 3>,     // [B, Hkv, K]
    node_hi: Tensor<i32, 3>,     // [B, Hkv, K]
    new_lo: &mut Tensor<i32, 3>, // [B, Hkv, K]
    new_hi: &mut Tensor<i32, 3>, // [B, Hkv, K]
) {
    let kv_head = program_id(0);
    let batch = program_id(1);
    let scores = child_score.load_or([at(batch), at(kv_head), range(0, 2 * TOPK)], f32::NEG_INFINITY);
    let (_best, c) = topk(scores, TOPK);
    let node = c / 2;
    let left = c % 2 == 0;
    let lo = node_lo.load([at(batch), at(kv_head), gather(node)]);
    let hi = node_hi.load([at(batch), at(kv_head), gather(node)]);
    let mid = lo + (hi - lo + 1) / 2;
    new_lo.store([at(batch), at(kv_head), range(0, TOPK)], where_(left, lo, mid));
    new_hi.store([at(batch), at(kv_head), range(0, TOPK)], where_(left, mid, hi));
}

/// Final nodes (one block each, or empty) to `block_idx [B, Hkv, K]` (ascending, -1
/// padding) + `block_count [B, Hkv]`, the input of [`crate::BlockSparseDecode`]. Grid
/// `[Hkv, B]`.
#[kernel(example(TOPK = 64))]
pub fn hip_finalize<const TOPK: usize, const WARPS: usize>(
    node_lo: Tensor<i32, 3>,          // [B, Hkv, K]
    node_hi: Tensor<i32, 3>,          // [B, Hkv, K]
    block_idx: &mut Tensor<i32, 3>,   // [B, Hkv, K]
    block_count: &mut Tensor<i32, 2>, // [B, Hkv]
) {
    let kv_head = program_id(0);
    let batch = program_id(1);
    let lo = node_lo.load([at(batch), at(kv_head), range(0, TOPK)]);
    let hi = node_hi.load([at(batch), at(kv_head), range(0, TOPK)]);
    let key = where_(hi > lo, -(lo.cast::<f32>()), f32::NEG_INFINITY);
    let (v, slot) = topk(key, TOPK);
    let ok = v > f32::NEG_INFINITY;
    let ids = node_lo.load([at(batch), at(kv_head), gather(slot)]);
    block_idx.store([at(batch), at(kv_head), range(0, TOPK)], where_(ok, ids, -1));
    block_count.store([at(batch), at(kv_head)], ok.cast::<i32>().sum(0));
}

/// Host op: HiP block selection for decode. `k_nodes` = `mask_k / bk` (HiP: 512 / 2).
///
/// Block size: the paper's `bk = 2` keeps 256 scattered 2-key blocks; on the GPU a step
/// gathers `2K · BK` key rows either way (`BK · 2K · D · 2` bytes), so the block size
/// trades selection granularity against the number of nodes (the `topk` width) and of
/// steps; the attention kernel gathers rows per token, so any `BK` works with it. The
/// recall tool (`tessera recall`) measures `bk = 2` against `bk = 16`.
pub struct HipSelect {
    pub group: usize,
    pub head_dim: usize,
    pub bk: usize,
    pub k_nodes: usize,
    pub child_tile: usize,
    init: HipInitNodesKernel,
    score: HipScoreChildrenKernel,
    select: HipSelectChildrenKernel,
    finalize: HipFinalizeKernel,
}

/// Shapes and launch plan of one selection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HipPlan {
    pub batch: usize,
    pub kv_heads: usize,
    pub num_blocks: usize,
    pub steps: usize,
    pub score_grid: [u32; 3],
    pub head_grid: [u32; 3],
}

impl HipSelect {
    const NAME: &'static str = "hip_select";

    /// The configs of the op's kernels: `[nodes, score]` — `nodes` for init, select and
    /// finalize (TOPK = `k` nodes), `score` for the child scoring. Public so that tuning
    /// keys hash exactly what the op builds.
    pub fn configs(group: usize, head_dim: usize, bk: usize, k: usize, child_tile: usize) -> [KernelConfig; 2] {
        [
            KernelConfig::from_pairs(&[("TOPK", k as i64), ("WARPS", 4)]),
            KernelConfig::from_pairs(&[
                ("GROUP", group as i64),
                ("HEAD_DIM", head_dim as i64),
                ("BK", bk as i64),
                ("CHILD_TILE", child_tile as i64),
                ("WARPS", 4),
            ]),
        ]
    }

    fn validate(bk: usize, k: usize, child_tile: usize) -> Result<(), KernelError> {
        if bk == 0 || k == 0 || child_tile == 0 {
            return Err(invalid(Self::NAME, format!("need bk, k_nodes, child_tile > 0 (got {bk}, {k}, {child_tile})")));
        }
        Ok(())
    }

    pub fn cpu(
        group: usize,
        head_dim: usize,
        bk: usize,
        k_nodes: usize,
        child_tile: usize,
    ) -> Result<Self, KernelError> {
        Self::validate(bk, k_nodes, child_tile)?;
        let [a, b] = Self::configs(group, head_dim, bk, k_nodes, child_tile);
        Ok(HipSelect {
            group,
            head_dim,
            bk,
            k_nodes,
            child_tile,
            init: HipInitNodes::cpu(&a)?,
            score: HipScoreChildren::cpu(&b)?,
            select: HipSelectChildren::cpu(&a)?,
            finalize: HipFinalize::cpu(&a)?,
        })
    }

    pub fn new(
        rt: &Runtime,
        group: usize,
        head_dim: usize,
        bk: usize,
        k_nodes: usize,
        child_tile: usize,
    ) -> Result<Self, KernelError> {
        Self::validate(bk, k_nodes, child_tile)?;
        let [a, b] = Self::configs(group, head_dim, bk, k_nodes, child_tile);
        Ok(HipSelect {
            group,
            head_dim,
            bk,
            k_nodes,
            child_tile,
            init: HipInitNodes::new(rt, &a)?,
            score: HipScoreChildren::new(rt, &b)?,
            select: HipSelectChildren::new(rt, &a)?,
            finalize: HipFinalize::new(rt, &a)?,
        })
    }

    /// Checks `q [B, Hkv·G, D] bf16`, `k [B, Hkv, cap, D] bf16` with `seq_len <= cap`,
    /// `block_idx [B, Hkv, K] i32`, `block_count [B, Hkv] i32`; the searched keys are
    /// `[0, seq_len − window)`.
    pub fn check_args(
        &self,
        q: &dyn TensorMeta,
        k: &dyn TensorMeta,
        seq_len: usize,
        window: usize,
        block_idx: &dyn TensorMeta,
        block_count: &dyn TensorMeta,
    ) -> Result<HipPlan, KernelError> {
        let n = Self::NAME;
        expect(n, "k", k, DType::BF16, &[None, None, None, Some(self.head_dim)])?;
        let s = k.shape();
        let (b, hkv, cap) = (s[0], s[1], s[2]);
        expect(n, "q", q, DType::BF16, &[Some(b), Some(hkv * self.group), Some(self.head_dim)])?;
        expect(n, "block_idx", block_idx, DType::I32, &[Some(b), Some(hkv), Some(self.k_nodes)])?;
        expect(n, "block_count", block_count, DType::I32, &[Some(b), Some(hkv)])?;
        if seq_len > cap || seq_len > i32::MAX as usize / 2 {
            return Err(invalid(n, format!("seq_len {seq_len} exceeds the cache capacity {cap} (or i32)")));
        }
        let num_blocks = seq_len.saturating_sub(window).div_ceil(self.bk);
        let tiles = (2 * self.k_nodes).div_ceil(self.child_tile);
        Ok(HipPlan {
            batch: b,
            kv_heads: hkv,
            num_blocks,
            steps: refine_steps(num_blocks, self.k_nodes),
            score_grid: [tiles as u32, hkv as u32, b as u32],
            head_grid: [hkv as u32, b as u32, 1],
        })
    }

    /// Runs the search on the interpreter: init, `plan.steps` × (score, select), finalize.
    pub fn run_cpu(
        &self,
        q: &HostTensor,
        k: &HostTensor,
        seq_len: usize,
        window: usize,
        block_idx: &mut HostTensor,
        block_count: &mut HostTensor,
    ) -> Result<HipPlan, KernelError> {
        let p = self.check_args(q, k, seq_len, window, block_idx, block_count)?;
        let nodes = [p.batch, p.kv_heads, self.k_nodes];
        let mk = || HostTensor::full(DType::I32, &nodes, -3.0);
        let (mut lo, mut hi, mut lo2, mut hi2) = (mk(), mk(), mk(), mk());
        let mut cs = HostTensor::full(DType::F32, &[p.batch, p.kv_heads, 2 * self.k_nodes], f64::NAN);
        self.init.run_cpu(p.head_grid, &mut lo, &mut hi, p.num_blocks as i32)?;
        for _ in 0..p.steps {
            self.score.run_cpu(p.score_grid, q, k, &lo, &hi, &mut cs, seq_len as i32)?;
            self.select.run_cpu(p.head_grid, &cs, &lo, &hi, &mut lo2, &mut hi2)?;
            std::mem::swap(&mut lo, &mut lo2);
            std::mem::swap(&mut hi, &mut hi2);
        }
        self.finalize.run_cpu(p.head_grid, &lo, &hi, block_idx, block_count)?;
        Ok(p)
    }

    /// The same launches on the GPU (node buffers ping-pong; nothing is synchronised).
    #[allow(clippy::too_many_arguments)]
    pub fn launch(
        &self,
        rt: &Runtime,
        q: &DeviceTensor,
        k: &DeviceTensor,
        seq_len: usize,
        window: usize,
        block_idx: &DeviceTensor,
        block_count: &DeviceTensor,
    ) -> Result<HipPlan, KernelError> {
        // The same launches with fresh buffers (allocated, as before, on every call).
        self.launch_with(rt, &crate::Scratch::new(), q, k, seq_len, window, block_idx, block_count)
    }

    /// [`Self::launch`] with the node and score buffers kept in `scratch` (for timing
    /// loops: no allocation, memset or synchronization per call). Every buffer is fully
    /// written before it is read (init writes the nodes, each step all `2K` scores and
    /// all `K` next nodes), so stale contents never leak into the result.
    #[allow(clippy::too_many_arguments)]
    pub fn launch_with(
        &self,
        rt: &Runtime,
        scratch: &crate::Scratch,
        q: &DeviceTensor,
        k: &DeviceTensor,
        seq_len: usize,
        window: usize,
        block_idx: &DeviceTensor,
        block_count: &DeviceTensor,
    ) -> Result<HipPlan, KernelError> {
        let p = self.check_args(q, k, seq_len, window, block_idx, block_count)?;
        let st = rt.stream();
        let nodes = [p.batch, p.kv_heads, self.k_nodes];
        let node = |slot| scratch.get(rt, slot, DType::I32, &nodes);
        let (mut lo, mut hi, mut lo2, mut hi2) = (node(0)?, node(1)?, node(2)?, node(3)?);
        let cs = scratch.get(rt, 4, DType::F32, &[p.batch, p.kv_heads, 2 * self.k_nodes])?;
        self.init.launch(st, p.head_grid, &lo, &hi, p.num_blocks as i32)?;
        for _ in 0..p.steps {
            self.score.launch(st, p.score_grid, q, k, &lo, &hi, &cs, seq_len as i32)?;
            self.select.launch(st, p.head_grid, &cs, &lo, &hi, &lo2, &hi2)?;
            std::mem::swap(&mut lo, &mut lo2);
            std::mem::swap(&mut hi, &mut hi2);
        }
        self.finalize.launch(st, p.head_grid, &lo, &hi, block_idx, block_count)?;
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_and_steps() {
        assert_eq!(init_nodes(10, 4), vec![(0, 2), (2, 5), (5, 7), (7, 10)]);
        assert_eq!(init_nodes(2, 4), vec![(0, 1), (1, 2), (2, 2), (2, 2)]);
        assert_eq!(refine_steps(10, 4), 2);
        assert_eq!(refine_steps(8, 4), 1);
        assert_eq!(refine_steps(3, 4), 0);
        assert_eq!(refine_steps(4096, 32), 7);
        assert_eq!(children((3, 6)), [(3, 5), (5, 6)]);
        assert_eq!(children((3, 4)), [(3, 4), (4, 4)]);
        assert_eq!(centre((3, 5)), Some(4));
        assert_eq!(centre((3, 3)), None);
    }

    #[test]
    fn search_finds_a_planted_block_and_covers_small_inputs() {
        // Score peaks at block 77: the search must keep it.
        for k in [3, 8] {
            let sel = tree_search(200, k, |b| -((b as f64) - 77.0).abs());
            assert!(sel.contains(&77), "k {k}: {sel:?}");
            assert_eq!(sel.len(), k);
        }
        // One node: a greedy descent that ends next to the peak (ties go left).
        assert_eq!(tree_search(200, 1, |b| -((b as f64) - 77.0).abs()), vec![76]);
        assert_eq!(tree_search(3, 8, |_| 0.0), vec![0, 1, 2]);
        assert_eq!(tree_search(0, 4, |_| 0.0), Vec::<usize>::new());
        // Monotone score: the k largest blocks.
        assert_eq!(tree_search(64, 4, |b| b as f64), vec![60, 61, 62, 63]);
    }
}
