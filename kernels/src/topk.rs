//! Top-k block selection: score every KV block by `q · landmark` (landmark = mean key of
//! the block, see [`crate::append`]), aggregate over the `GROUP` query heads of the KV
//! head, and return the `k` best block indices per (batch, KV head) in the
//! `block_idx [B, Hkv, k]` + `block_count [B, Hkv]` form [`crate::BlockSparseDecode`] reads.
//!
//! Aggregation over the group: **max** by default (ShadowKV, algorithms.md §5: "max over
//! the GQA group", so a block one head needs is kept), or **sum** (`sum_heads`, InfLLM §7
//! sums q̄·r over heads); no softmax: ranking per KV head only needs the raw scores.
//! Landmarks are f32 or bf16 ([`TopkBlockSelect::with_landmark_dtype`]): bf16 halves
//! the bytes this memory-bound pass reads and puts `q · landmark` on the tensor cores
//! (scores still accumulate in f32). Ties go to the smaller block index (IR TopK).
//! Fewer than `k` blocks: the list is padded with -1 and `block_count = num_blocks`. Selected indices are sorted by
//! descending score, never duplicated, always in `[0, num_blocks)`.
//!
//! Two launches: `block_scores_topk` (grid `[ceil(num_blocks / LM_TILE), Hkv, B]`: scores
//! of `LM_TILE` blocks; a tile larger than `k` keeps its local top-k, a smaller one all its
//! scores), then `topk_merge` (grid `[Hkv, B]`: one block-wide radix select over the
//! `tiles · min(k, LM_TILE)` candidates, ≤ `CAND` of them).

use tessera_codegen::host::HostTensor;
use tessera_codegen::ir::DType;
use tessera_dsl_support::prelude::*;
use tessera_runtime::DeviceTensor;

use crate::error::{expect, invalid, KernelError, TensorMeta};
use crate::scratch::Scratch;

/// Scores a tile of block landmarks against the GQA group's queries and keeps its top-k blocks.
///
/// A tile of at most `TOPK` landmarks keeps all of them (no per-tile selection: the merge
/// does the one radix select), so small tiles spread the landmark reads over many
/// programs; a larger tile keeps only its own top `TOPK`.
#[kernel(tune(LM_TILE = [64, 32, 128, 256], WARPS = [4, 8]), example(GROUP = 4, HEAD_DIM = 128, TOPK = 64, SUM_HEADS = 0))]
pub fn block_scores_topk<
    LM,
    const GROUP: usize,
    const HEAD_DIM: usize,
    const LM_TILE: usize,
    const TOPK: usize,
    const SUM_HEADS: usize,
    const WARPS: usize,
>(
    q: Tensor<bf16, 3>,            // [B, Hq, D]
    landmarks: Tensor<LM, 4>,      // [B, Hkv, NB_cap, D]
    cand_val: &mut Tensor<f32, 3>, // [B, Hkv, tiles * min(TOPK, LM_TILE)]
    cand_idx: &mut Tensor<i32, 3>, // [B, Hkv, tiles * min(TOPK, LM_TILE)]
    num_blocks: i32,
) {
    let tile = program_id(0);
    let kv_head = program_id(1);
    let batch = program_id(2);
    let blk0 = tile * LM_TILE as i32;
    // q in the landmarks' type: an f32 product on f32 landmarks, bf16 operands (tensor
    // cores, f32 accumulation) on bf16 ones.
    let q_tile = q.load([at(batch), range(kv_head * GROUP as i32, GROUP), range(0, HEAD_DIM)]).cast::<LM>();
    let lm = landmarks.load([at(batch), at(kv_head), range(blk0, LM_TILE), range(0, HEAD_DIM)]);
    let s = dot_t(q_tile, lm);
    let mut agg = s.max(0);
    if SUM_HEADS == 1 {
        agg = s.sum(0);
    }
    let valid = arange(0, LM_TILE) + blk0 < num_blocks;
    let scores = where_(valid, agg, f32::NEG_INFINITY);
    if TOPK < LM_TILE {
        let (vals, idx) = topk(scores, TOPK);
        cand_val.store([at(batch), at(kv_head), range(tile * TOPK as i32, TOPK)], vals);
        cand_idx.store([at(batch), at(kv_head), range(tile * TOPK as i32, TOPK)], idx + blk0);
    } else {
        cand_val.store([at(batch), at(kv_head), range(blk0, LM_TILE)], scores);
        cand_idx.store([at(batch), at(kv_head), range(blk0, LM_TILE)], arange(0, LM_TILE) + blk0);
    }
}

/// Merges the per-tile top-k candidates into the final top-k block indices per (batch, KV head).
#[kernel(example(TOPK = 64, CAND = 2048))]
pub fn topk_merge<const TOPK: usize, const CAND: usize, const WARPS: usize>(
    cand_val: Tensor<f32, 3>,         // [B, Hkv, C]
    cand_idx: Tensor<i32, 3>,         // [B, Hkv, C]
    block_idx: &mut Tensor<i32, 3>,   // [B, Hkv, TOPK]
    block_count: &mut Tensor<i32, 2>, // [B, Hkv]
) {
    let kv_head = program_id(0);
    let batch = program_id(1);
    let vals = cand_val.load_or([at(batch), at(kv_head), range(0, CAND)], f32::NEG_INFINITY);
    let (best, pos) = topk(vals, TOPK);
    let ids = cand_idx.load([at(batch), at(kv_head), gather(pos)]);
    let ok = best > f32::NEG_INFINITY;
    block_idx.store([at(batch), at(kv_head), range(0, TOPK)], where_(ok, ids, -1));
    block_count.store([at(batch), at(kv_head)], ok.cast::<i32>().sum(0));
}

/// Host op: top-k block selection.
pub struct TopkBlockSelect {
    pub group: usize,
    pub head_dim: usize,
    pub k: usize,
    pub lm_tile: usize,
    pub sum_heads: bool,
    /// Most candidates ([`TopkBlockSelect::candidates`]), comptime of `topk_merge`.
    pub max_cand: usize,
    /// WARPS of `block_scores_topk` (4 or 8, its tune space); `topk_merge` runs
    /// [`Self::MERGE_WARPS`].
    pub warps: usize,
    /// Element type of `landmarks`: f32 (default) or bf16 ([`Self::with_landmark_dtype`]).
    pub landmark_dtype: DType,
    scores: BlockScoresTopkKernel,
    merge: TopkMergeKernel,
}

impl TopkBlockSelect {
    const NAME: &'static str = "topk_block_select";

    /// Warps of `topk_merge`: one program per (batch, KV head) is fewer programs than SMs
    /// at the benchmark shapes (64 at B8), so each radix select gets a wide block.
    pub const MERGE_WARPS: usize = 16;

    /// Candidates `block_scores_topk` writes for `num_blocks` landmarks: each tile of
    /// `lm_tile` keeps `min(k, lm_tile)`. `max_cand` must be at least this.
    pub fn candidates(num_blocks: usize, lm_tile: usize, k: usize) -> usize {
        num_blocks.div_ceil(lm_tile).max(1) * k.min(lm_tile)
    }

    #[allow(clippy::too_many_arguments)]
    fn configs(
        group: usize,
        head_dim: usize,
        k: usize,
        lm_tile: usize,
        sum_heads: bool,
        max_cand: usize,
        warps: usize,
        lm_code: i64,
    ) -> [KernelConfig; 2] {
        [
            KernelConfig::from_pairs(&[
                ("LM", lm_code),
                ("GROUP", group as i64),
                ("HEAD_DIM", head_dim as i64),
                ("LM_TILE", lm_tile as i64),
                ("TOPK", k as i64),
                ("SUM_HEADS", sum_heads as i64),
                ("WARPS", warps as i64),
            ]),
            KernelConfig::from_pairs(&[
                ("TOPK", k as i64),
                ("CAND", max_cand as i64),
                ("WARPS", Self::MERGE_WARPS as i64),
            ]),
        ]
    }

    /// The selection over landmarks stored as `landmark_dtype` (f32 or bf16, as
    /// [`crate::Landmarks::typed`] / [`crate::KvAppend::typed`] write them); on the
    /// interpreter when `rt` is `None`. Arguments as [`Self::cpu`].
    #[allow(clippy::too_many_arguments)]
    pub fn typed(
        rt: Option<&Runtime>,
        group: usize,
        head_dim: usize,
        k: usize,
        lm_tile: usize,
        sum_heads: bool,
        max_cand: usize,
        warps: usize,
        landmark_dtype: DType,
    ) -> Result<Self, KernelError> {
        if k == 0 || k > max_cand || lm_tile == 0 {
            return Err(invalid(
                Self::NAME,
                format!("need 0 < k <= max_cand and lm_tile > 0 (k {k}, lm_tile {lm_tile}, max_cand {max_cand})"),
            ));
        }
        let code = crate::append::landmark_code(Self::NAME, landmark_dtype)?;
        let [a, b] = Self::configs(group, head_dim, k, lm_tile, sum_heads, max_cand, warps, code);
        let (scores, merge) = match rt {
            Some(rt) => (BlockScoresTopk::new(rt, &a)?, TopkMerge::new(rt, &b)?),
            None => (BlockScoresTopk::cpu(&a)?, TopkMerge::cpu(&b)?),
        };
        Ok(TopkBlockSelect { group, head_dim, k, lm_tile, sum_heads, max_cand, warps, landmark_dtype, scores, merge })
    }

    /// `max_cand >= k` and `>= candidates(num_blocks, lm_tile, k)` for every launch;
    /// `warps` is `block_scores_topk`'s WARPS (4 or 8; 4 is the untuned default). f32
    /// landmarks, on the interpreter.
    pub fn cpu(
        group: usize,
        head_dim: usize,
        k: usize,
        lm_tile: usize,
        sum_heads: bool,
        max_cand: usize,
        warps: usize,
    ) -> Result<Self, KernelError> {
        Self::typed(None, group, head_dim, k, lm_tile, sum_heads, max_cand, warps, DType::F32)
    }

    /// [`Self::cpu`] compiled and loaded on `rt`'s GPU.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        rt: &Runtime,
        group: usize,
        head_dim: usize,
        k: usize,
        lm_tile: usize,
        sum_heads: bool,
        max_cand: usize,
        warps: usize,
    ) -> Result<Self, KernelError> {
        Self::typed(Some(rt), group, head_dim, k, lm_tile, sum_heads, max_cand, warps, DType::F32)
    }

    /// The same selection over landmarks stored as `dtype` ([`Self::typed`]), recompiled
    /// (on the interpreter when `rt` is `None`).
    pub fn with_landmark_dtype(self, rt: Option<&Runtime>, dtype: DType) -> Result<Self, KernelError> {
        let s = self;
        Self::typed(rt, s.group, s.head_dim, s.k, s.lm_tile, s.sum_heads, s.max_cand, s.warps, dtype)
    }

    /// Checks `q [B, Hkv·G, D] bf16`, `landmarks [B, Hkv, NB_cap, D]` ([`Self::landmark_dtype`]),
    /// `num_blocks <= NB_cap`, `block_idx [B, Hkv, k] i32`, `block_count [B, Hkv] i32`.
    /// Returns the two grids and the candidate count.
    pub fn check_args(
        &self,
        q: &dyn TensorMeta,
        landmarks: &dyn TensorMeta,
        num_blocks: usize,
        block_idx: &dyn TensorMeta,
        block_count: &dyn TensorMeta,
    ) -> Result<([u32; 3], [u32; 3], usize), KernelError> {
        let n = Self::NAME;
        expect(n, "landmarks", landmarks, self.landmark_dtype, &[None, None, None, Some(self.head_dim)])?;
        let s = landmarks.shape();
        let (b, hkv, cap) = (s[0], s[1], s[2]);
        expect(n, "q", q, DType::BF16, &[Some(b), Some(hkv * self.group), Some(self.head_dim)])?;
        expect(n, "block_idx", block_idx, DType::I32, &[Some(b), Some(hkv), Some(self.k)])?;
        expect(n, "block_count", block_count, DType::I32, &[Some(b), Some(hkv)])?;
        if num_blocks > cap {
            return Err(invalid(n, format!("num_blocks {num_blocks} exceeds the landmark capacity {cap}")));
        }
        let tiles = num_blocks.div_ceil(self.lm_tile).max(1);
        let cand = Self::candidates(num_blocks, self.lm_tile, self.k);
        if cand > self.max_cand {
            return Err(invalid(n, format!("{cand} candidates exceed max_cand = {}", self.max_cand)));
        }
        Ok(([tiles as u32, hkv as u32, b as u32], [hkv as u32, b as u32, 1], cand))
    }

    pub fn run_cpu(
        &self,
        q: &HostTensor,
        landmarks: &HostTensor,
        num_blocks: usize,
        block_idx: &mut HostTensor,
        block_count: &mut HostTensor,
    ) -> Result<(), KernelError> {
        let (g1, g2, cand) = self.check_args(q, landmarks, num_blocks, block_idx, block_count)?;
        let shape = [q.shape[0], landmarks.shape[1], cand];
        let mut cv = HostTensor::full(DType::F32, &shape, f64::NAN);
        let mut ci = HostTensor::full(DType::I32, &shape, -7.0);
        self.scores.run_cpu(g1, q, landmarks, &mut cv, &mut ci, num_blocks as i32)?;
        Ok(self.merge.run_cpu(g2, &cv, &ci, block_idx, block_count)?)
    }

    pub fn launch(
        &self,
        rt: &Runtime,
        q: &DeviceTensor,
        landmarks: &DeviceTensor,
        num_blocks: usize,
        block_idx: &DeviceTensor,
        block_count: &DeviceTensor,
    ) -> Result<(), KernelError> {
        let (g1, g2, cand) = self.check_args(q, landmarks, num_blocks, block_idx, block_count)?;
        let shape = [q.shape()[0], landmarks.shape()[1], cand];
        let cv = DeviceTensor::zeros(rt.stream(), DType::F32, &shape)?;
        let ci = DeviceTensor::zeros(rt.stream(), DType::I32, &shape)?;
        self.scores.launch(rt.stream(), g1, q, landmarks, &cv, &ci, num_blocks as i32)?;
        Ok(self.merge.launch(rt.stream(), g2, &cv, &ci, block_idx, block_count)?)
    }

    /// [`Self::launch`] with the candidate buffers kept in `scratch` (slots 0–1; for
    /// timing loops).
    #[allow(clippy::too_many_arguments)]
    pub fn launch_with(
        &self,
        rt: &Runtime,
        scratch: &Scratch,
        q: &DeviceTensor,
        landmarks: &DeviceTensor,
        num_blocks: usize,
        block_idx: &DeviceTensor,
        block_count: &DeviceTensor,
    ) -> Result<(), KernelError> {
        let (g1, g2, cand) = self.check_args(q, landmarks, num_blocks, block_idx, block_count)?;
        let shape = [q.shape()[0], landmarks.shape()[1], cand];
        let cv = scratch.get(rt, 0, DType::F32, &shape)?;
        let ci = scratch.get(rt, 1, DType::I32, &shape)?;
        self.scores.launch(rt.stream(), g1, q, landmarks, &cv, &ci, num_blocks as i32)?;
        Ok(self.merge.launch(rt.stream(), g2, &cv, &ci, block_idx, block_count)?)
    }
}
