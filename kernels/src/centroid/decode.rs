//! Centroid lookup decode: cluster scores, selection, packed kept rows, the attention over
//! them and the recent rows, and the host op [`CentroidDecode`].

use tessera_codegen::host::HostTensor;
use tessera_codegen::ir::DType;
use tessera_dsl_support::prelude::*;
use tessera_runtime::DeviceTensor;

use crate::block_sparse::{BlockSparseDecode, BlockSparseDecodeSplit, BlockSparseDecodeSplitKernel};
use crate::combine::LseCombine;
use crate::dense::{split_combine_cpu, DecodeParams};
use crate::error::{expect, invalid, KernelError, TensorMeta};

/// Per tile of `C_TILE` clusters, the partial log2-sum-exp of `s_gc + log2 n_c`
/// (`s = scale_log2 · q_g · c`) for each query head `g` of the group: `part_m` (the tile's
/// maximum, -inf when every cluster of the tile is empty) and `part_l` (`Σ 2^{x − m}`),
/// and the scores `s` themselves (`s_raw`, so [`centroid_select`](CentroidSelect) reads `G` floats per
/// cluster instead of its `D`-float centroid a second time). Grid `[tiles, Hkv, B]`:
/// every tile of every head at once, so the centroids stream through all SMs. `CT` is the
/// centroids' element type: f32 (`q · c` on the CUDA cores) or bf16 (half the bytes, the
/// tile staged with `cp.async` and `q · c` on the tensor cores, f32 accumulation).
#[kernel(tune(C_TILE = [64, 128, 32], WARPS = [4, 8]), example(GROUP = 4, HEAD_DIM = 128, CT = 2))]
pub fn centroid_tile_lse<CT, const GROUP: usize, const HEAD_DIM: usize, const C_TILE: usize, const WARPS: usize>(
    q: Tensor<bf16, 3>,          // [B, Hq, D]
    centroids: Tensor<CT, 4>,    // [B, Hkv, C, D]
    counts: Tensor<i32, 3>,      // [B, Hkv, C]
    part_m: &mut Tensor<f32, 4>, // [B, Hkv, T, GROUP]
    part_l: &mut Tensor<f32, 4>, // [B, Hkv, T, GROUP]
    s_raw: &mut Tensor<f32, 4>,  // [B, Hkv, GROUP, C]
    scale_log2: f32,
) {
    let tile = program_id(0);
    let kv_head = program_id(1);
    let batch = program_id(2);
    let cb = tile * C_TILE as i32;
    let nc = centroids.dim(2).cast::<i32>();
    let qt = q.load([at(batch), range(kv_head * GROUP as i32, GROUP), range(0, HEAD_DIM)]).cast::<CT>();
    let cv = arange(0, C_TILE) + cb < nc;
    let ct =
        centroids.load_masked([at(batch), at(kv_head), range(cb, C_TILE), range(0, HEAD_DIM)], cv.expand_dims(1), 0.0);
    let n = counts.load_masked([at(batch), at(kv_head), range(cb, C_TILE)], cv, 0);
    let w = where_(n > 0, log2(where_(n > 0, n.cast::<f32>(), 1.0)), f32::NEG_INFINITY);
    let s = dot_t(qt, ct) * scale_log2;
    s_raw.store_masked([at(batch), at(kv_head), range(0, GROUP), range(cb, C_TILE)], s, cv.expand_dims(0));
    let x = s + w;
    let m = x.max(1);
    let m_use = where_(m == f32::NEG_INFINITY, 0.0, m);
    let l = exp2(x - m_use.expand_dims(1)).sum(1);
    part_m.store([at(batch), at(kv_head), at(tile), range(0, GROUP)], m);
    part_l.store([at(batch), at(kv_head), at(tile), range(0, GROUP)], l);
}

/// The top-`KEEP` clusters (ties: lower id) by score `max_g (s_gc − log2 Σ_k n_k 2^{s_gk})`
/// (`s = scale_log2 · q_g · c` as [`centroid_tile_lse`](CentroidTileLse) stored it, the
/// normalizer merged from its `≤ MAX_TILES` partials; empty clusters -inf): the paper's
/// estimated per-key probability in log2, kept when `> threshold`. Output: row ranges
/// `keep_start`/`keep_len [B, Hkv, KEEP]` (the kept ones are the first `keep_count` slots;
/// unused slots 0/0). The order only decides where a cluster's rows land in the packed
/// list, so the selection is not sorted (`topk_unsorted`; a second top-k that sorted the
/// kept ids was 14 of this kernel's 45 µs at B8 by ncu). The scores are computed here, not
/// by a kernel of their own (9 µs at B8 for one pass over `G` floats per cluster). Grid
/// `[Hkv, B]`.
#[kernel(example(KEEP = 64, CAND = 1024, GROUP = 4, MAX_TILES = 16))]
pub fn centroid_select<
    const KEEP: usize,
    const CAND: usize,
    const GROUP: usize,
    const MAX_TILES: usize,
    const WARPS: usize,
>(
    s_raw: Tensor<f32, 4>,           // [B, Hkv, GROUP, C]
    counts: Tensor<i32, 3>,          // [B, Hkv, C]
    part_m: Tensor<f32, 4>,          // [B, Hkv, T, GROUP]
    part_l: Tensor<f32, 4>,          // [B, Hkv, T, GROUP]
    starts: Tensor<i32, 3>,          // [B, Hkv, C + 1]
    keep_start: &mut Tensor<i32, 3>, // [B, Hkv, KEEP]
    keep_len: &mut Tensor<i32, 3>,   // [B, Hkv, KEEP]
    keep_count: &mut Tensor<i32, 2>, // [B, Hkv]
    threshold: f32,
) {
    let kv_head = program_id(0);
    let batch = program_id(1);
    let pm = part_m.load_or([at(batch), at(kv_head), range(0, MAX_TILES), range(0, GROUP)], f32::NEG_INFINITY);
    let pl = part_l.load_or([at(batch), at(kv_head), range(0, MAX_TILES), range(0, GROUP)], 0.0);
    let m = pm.max(0);
    let m_use = where_(m == f32::NEG_INFINITY, 0.0, m);
    let l = (pl * exp2(pm - m_use.expand_dims(0))).sum(0);
    let lse = m_use + log2(where_(l > 0.0, l, 1.0));
    let raw = s_raw.load_or([at(batch), at(kv_head), range(0, GROUP), range(0, CAND)], f32::NEG_INFINITY);
    let n = counts.load_or([at(batch), at(kv_head), range(0, CAND)], 0);
    let best = (raw - lse.expand_dims(1)).max(0);
    // Empty clusters and scores at or below the threshold become -inf, so the kept ones
    // come before the -inf fill (`topk_unsorted` puts values above the k-th largest first).
    let s = where_(n > 0 && best > threshold, best, f32::NEG_INFINITY);
    let (v, cl) = topk_unsorted(s, KEEP);
    let live = v > f32::NEG_INFINITY;
    let id = where_(live, cl, 0);
    let st = starts.load([at(batch), at(kv_head), gather(id)]);
    let en = starts.load([at(batch), at(kv_head), gather(id + 1)]);
    keep_start.store([at(batch), at(kv_head), range(0, KEEP)], where_(live, st, 0));
    keep_len.store([at(batch), at(kv_head), range(0, KEEP)], where_(live, en - st, 0));
    keep_count.store([at(batch), at(kv_head)], live.cast::<i32>().sum(0));
}

/// Expands the kept row ranges into one packed row list per (batch, KV head): slot `j`'s
/// rows `[keep_start[j], keep_start[j] + keep_len[j])` land at `rows[off_j ..]`, `off_j =
/// Σ_{i<j} keep_len[i]` (a prefix sum), and `n_rows = Σ keep_len`. The attention then reads
/// whole tiles of kept rows ([`crate::block_sparse`] with one-row blocks) instead of one
/// partly masked tile per short cluster (kept clusters average ~20 rows). Program `p` of
/// `PROGRAMS` writes rows `p, p + PROGRAMS, …` of every slot, so the work splits evenly
/// whatever the cluster sizes, each program with its own prefix sum of the lengths (18 µs
/// at B8 by ncu; a program per group of slots, summing the lengths before them, was 22).
/// Grid `[PROGRAMS, Hkv, B]`.
#[kernel(tune(WARPS = [4, 8]), example(KEEP = 64, PROGRAMS = 16))]
pub fn centroid_pack_rows<const KEEP: usize, const PROGRAMS: usize, const WARPS: usize>(
    keep_start: Tensor<i32, 3>,  // [B, Hkv, KEEP]
    keep_len: Tensor<i32, 3>,    // [B, Hkv, KEEP]
    rows: &mut Tensor<i32, 3>,   // [B, Hkv, T_f]
    n_rows: &mut Tensor<i32, 2>, // [B, Hkv]
) {
    let program = program_id(0);
    let kv_head = program_id(1);
    let batch = program_id(2);
    let len = max(keep_len.load([at(batch), at(kv_head), range(0, KEEP)]), 0);
    let start = keep_start.load([at(batch), at(kv_head), range(0, KEEP)]);
    let off = len.cumsum(0) - len;
    if program == 0 {
        n_rows.store([at(batch), at(kv_head)], len.sum(0));
    }
    for r in (program..len.max(0)).step_by(PROGRAMS) {
        rows.store_masked([at(batch), at(kv_head), gather(off + r)], start + r, r < len);
    }
}

// ---- host op ------------------------------------------------------------------------------

/// Launch plan of one centroid decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CentroidPlan {
    pub batch: usize,
    pub kv_heads: usize,
    pub clusters: usize,
    /// Attention splits per (batch, KV head): `params.max_splits`, sharing the kept and
    /// recent rows evenly on the device.
    pub splits: usize,
}

impl CentroidPlan {
    pub(crate) fn new(batch: usize, kv_heads: usize, clusters: usize, p: &DecodeParams) -> Self {
        CentroidPlan { batch, kv_heads, clusters, splits: p.max_splits.max(1) }
    }
}

/// The attention step of the centroid lookups (one- and two-level): the kept row ranges
/// `[keep_start, keep_len]` are packed into one row list per (batch, KV head)
/// ([`centroid_pack_rows`](CentroidPackRows)), then attended with the recent rows `[T_f,
/// seq_len)` as the window of a block-sparse decode with one-row blocks
/// ([`crate::block_sparse`], the grid sharing the actual rows evenly), merged by
/// [`LseCombine`].
pub(crate) struct KeptRangeAttention {
    pack: CentroidPackRowsKernel,
    programs: usize,
    attn: BlockSparseDecodeSplitKernel,
    combine: LseCombine,
}

/// Scratch slots of the packed rows and their counts (above those the ops use).
const ROWS_SLOT: usize = 30;

impl KeptRangeAttention {
    /// `pack` / `attn`: the configs of [`CentroidDecode::configs`]; `splits`: the combine's
    /// bound ([`CentroidDecode::combine_splits`]).
    pub(crate) fn new(
        rt: Option<&Runtime>,
        pack: &KernelConfig,
        attn: &KernelConfig,
        p: &DecodeParams,
        splits: usize,
    ) -> Result<Self, KernelError> {
        let programs = pack.get("PROGRAMS").unwrap_or(1).max(1) as usize;
        Ok(match rt {
            None => KeptRangeAttention {
                pack: CentroidPackRows::cpu(pack)?,
                programs,
                attn: BlockSparseDecodeSplit::cpu(attn)?,
                combine: p.combine(None, splits)?,
            },
            Some(rt) => KeptRangeAttention {
                pack: CentroidPackRows::new(rt, pack)?,
                programs,
                attn: BlockSparseDecodeSplit::new(rt, attn)?,
                combine: p.combine(Some(rt), splits)?,
            },
        })
    }

    fn grids(&self, p: &CentroidPlan) -> ([u32; 3], [u32; 3]) {
        let (h, b) = (p.kv_heads as u32, p.batch as u32);
        ([self.programs as u32, h, b], [p.splits as u32, h, b])
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn run_cpu(
        &self,
        p: &CentroidPlan,
        q: &HostTensor,
        k: &HostTensor,
        v: &HostTensor,
        kept: [&HostTensor; 3],
        scale_log2: f32,
        fixed_len: usize,
        seq_len: usize,
        out: &mut HostTensor,
        lse: Option<&mut HostTensor>,
    ) -> Result<(), KernelError> {
        let [ks, kl, _] = kept;
        let (pack_grid, grid) = self.grids(p);
        let mut rows = HostTensor::full(DType::I32, &[p.batch, p.kv_heads, fixed_len.max(1)], -7.0);
        let mut n_rows = HostTensor::full(DType::I32, &[p.batch, p.kv_heads], -7.0);
        self.pack.run_cpu(pack_grid, ks, kl, &mut rows, &mut n_rows)?;
        let (n, w) = (seq_len as i32, (seq_len - fixed_len) as i32);
        split_combine_cpu(&self.combine, [q.shape[0], q.shape[1], p.splits], out, lse, |o, l| {
            Ok(self.attn.run_cpu(grid, q, k, v, &rows, &n_rows, o, l, scale_log2, n, 0, w, 0)?)
        })
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn launch_with(
        &self,
        rt: &Runtime,
        scratch: &crate::Scratch,
        p: &CentroidPlan,
        q: &DeviceTensor,
        k: &DeviceTensor,
        v: &DeviceTensor,
        kept: [&DeviceTensor; 3],
        scale_log2: f32,
        fixed_len: usize,
        seq_len: usize,
        out: &DeviceTensor,
        lse: Option<&DeviceTensor>,
    ) -> Result<(), KernelError> {
        let [ks, kl, _] = kept;
        let (pack_grid, grid) = self.grids(p);
        let rows = scratch.get(rt, ROWS_SLOT, DType::I32, &[p.batch, p.kv_heads, fixed_len.max(1)])?;
        let n_rows = scratch.get(rt, ROWS_SLOT + 1, DType::I32, &[p.batch, p.kv_heads])?;
        let st = rt.stream();
        self.pack.launch(st, pack_grid, ks, kl, &rows, &n_rows)?;
        let shape = [q.shape()[0], q.shape()[1], p.splits];
        let (n, w) = (seq_len as i32, (seq_len - fixed_len) as i32);
        crate::dense::split_combine_gpu_with(rt, scratch, &self.combine, shape, out, lse, |o, l| {
            Ok(self.attn.launch(st, grid, q, k, v, &rows, &n_rows, o, l, scale_log2, n, 0, w, 0)?)
        })
    }
}

/// Host op: centroid lookup decode (scores, select, packed kept rows, attention over them
/// and the recent rows, combine). `keep` = most clusters kept (top-k), `pack_programs`
/// programs per (batch, KV head) of [`centroid_pack_rows`](CentroidPackRows);
/// `params.max_splits` attention splits per (batch, KV head).
pub struct CentroidDecode {
    pub params: DecodeParams,
    pub keep: usize,
    /// Power of two `>=` the number of clusters (the select kernel's `topk` width).
    pub cand: usize,
    pub pack_programs: usize,
    /// Element type of `centroids`: f32 (default) or bf16 ([`Self::with_centroid_dtype`]).
    pub centroid_dtype: DType,
    tile_lse: CentroidTileLseKernel,
    select: CentroidSelectKernel,
    attention: KeptRangeAttention,
}

impl CentroidDecode {
    const NAME: &'static str = "centroid_decode";

    /// The combine's split bound: `max_splits` rounded up to a power of two.
    pub fn combine_splits(p: &DecodeParams) -> usize {
        p.max_splits.max(1).next_power_of_two()
    }

    /// The [`centroid_pack_rows`](CentroidPackRows) config for `keep` kept slots.
    pub fn pack_config(keep: usize, pack_programs: usize) -> KernelConfig {
        KernelConfig::from_pairs(&[("KEEP", keep as i64), ("PROGRAMS", pack_programs as i64), ("WARPS", 4)])
    }

    /// Clusters per scoring tile of `centroid_tile_lse`.
    pub const C_TILE: usize = 64;

    /// Warps of the select kernels: one program per (batch, KV head) is fewer programs
    /// than SMs even at B8 (64), so each takes a wide block; its radix passes and sort
    /// split over the threads (16 warps: 40 registers, no spills at CAND 8192).
    pub const SELECT_WARPS: i64 = 16;

    /// Scoring tiles for `clusters` clusters (the partial-LSE rows).
    fn tiles(clusters: usize) -> usize {
        clusters.div_ceil(Self::C_TILE).max(1)
    }

    /// The configs of the op's four kernels (tile LSE, scores + select, row packing, and
    /// the attention: a block-sparse decode split with one-row blocks) for `cand` candidate
    /// clusters (the power of two ≥ the cluster count); the split bound of its combine is
    /// [`Self::combine_splits`]. Public so that tuning keys hash exactly what the op builds.
    pub fn configs(p: &DecodeParams, keep: usize, cand: usize, pack_programs: usize) -> [KernelConfig; 4] {
        Self::configs_typed(p, keep, cand, pack_programs, DType::F32)
    }

    /// [`Self::configs`] for centroids of element type `centroid_dtype` (f32 or bf16).
    pub fn configs_typed(
        p: &DecodeParams,
        keep: usize,
        cand: usize,
        pack_programs: usize,
        centroid_dtype: DType,
    ) -> [KernelConfig; 4] {
        let (g, d) = (p.group as i64, p.head_dim as i64);
        let tile = Self::C_TILE as i64;
        let max_tiles = Self::tiles(cand).next_power_of_two() as i64;
        let ct = tessera_dsl_support::elem_code(centroid_dtype).unwrap_or(-1);
        [
            KernelConfig::from_pairs(&[("GROUP", g), ("HEAD_DIM", d), ("C_TILE", tile), ("WARPS", 4), ("CT", ct)]),
            KernelConfig::from_pairs(&[
                ("KEEP", keep as i64),
                ("CAND", cand as i64),
                ("GROUP", g),
                ("MAX_TILES", max_tiles),
                ("WARPS", Self::SELECT_WARPS),
            ]),
            Self::pack_config(keep, pack_programs),
            BlockSparseDecode::config(p, 1, false),
        ]
    }

    fn make(
        params: DecodeParams,
        keep: usize,
        clusters: usize,
        pack_programs: usize,
        centroid_dtype: DType,
        rt: Option<&Runtime>,
    ) -> Result<Self, KernelError> {
        let cand = clusters.next_power_of_two();
        if keep == 0 || pack_programs == 0 || keep > cand {
            return Err(invalid(
                Self::NAME,
                format!("need 0 < keep {keep} <= clusters (rounded up to {cand}), pack_programs {pack_programs} > 0"),
            ));
        }
        if !matches!(centroid_dtype, DType::F32 | DType::BF16) {
            return Err(invalid(Self::NAME, format!("centroids must be f32 or bf16, not {centroid_dtype:?}")));
        }
        let [t, b, pack, attn] = Self::configs_typed(&params, keep, cand, pack_programs, centroid_dtype);
        let ms = Self::combine_splits(&params);
        Ok(match rt {
            None => CentroidDecode {
                tile_lse: CentroidTileLse::cpu(&t)?,
                select: CentroidSelect::cpu(&b)?,
                attention: KeptRangeAttention::new(None, &pack, &attn, &params, ms)?,
                params,
                keep,
                cand,
                pack_programs,
                centroid_dtype,
            },
            Some(rt) => CentroidDecode {
                tile_lse: CentroidTileLse::new(rt, &t)?,
                select: CentroidSelect::new(rt, &b)?,
                attention: KeptRangeAttention::new(Some(rt), &pack, &attn, &params, ms)?,
                params,
                keep,
                cand,
                pack_programs,
                centroid_dtype,
            },
        })
    }

    /// Interpreter op for up to `clusters` clusters per KV head (f32 centroids).
    pub fn cpu(params: DecodeParams, keep: usize, clusters: usize, pack_programs: usize) -> Result<Self, KernelError> {
        Self::make(params, keep, clusters, pack_programs, DType::F32, None)
    }

    /// GPU op (f32 centroids).
    pub fn new(
        rt: &Runtime,
        params: DecodeParams,
        keep: usize,
        clusters: usize,
        pack_programs: usize,
    ) -> Result<Self, KernelError> {
        Self::make(params, keep, clusters, pack_programs, DType::F32, Some(rt))
    }

    /// The same op for centroids stored as `dtype` (f32 or bf16; on the interpreter when
    /// `rt` is `None`): bf16 halves the bytes the cluster scoring reads, and the selection
    /// is then the exact one of the rounded centroids.
    pub fn with_centroid_dtype(self, rt: Option<&Runtime>, dtype: DType) -> Result<Self, KernelError> {
        Self::make(self.params, self.keep, self.cand, self.pack_programs, dtype, rt)
    }

    /// Checks `q [B, Hkv·G, D]`, `k`/`v [B, Hkv, cap, D]` (fixed rows permuted by
    /// cluster), `centroids [B, Hkv, C, D]` ([`Self::centroid_dtype`]), `counts [B, Hkv, C] i32`, `starts [B, Hkv,
    /// C + 1] i32` (host copies: non-decreasing from 0 to `fixed_len`), `keep_start` /
    /// `keep_len [B, Hkv, keep] i32`, `keep_count [B, Hkv] i32`, `out`, `lse`.
    #[allow(clippy::too_many_arguments)]
    pub fn check_args(
        &self,
        q: &dyn TensorMeta,
        k: &dyn TensorMeta,
        v: &dyn TensorMeta,
        centroids: &dyn TensorMeta,
        counts: &dyn TensorMeta,
        starts: &dyn TensorMeta,
        fixed_len: usize,
        seq_len: usize,
        keep_start: &dyn TensorMeta,
        keep_len: &dyn TensorMeta,
        keep_count: &dyn TensorMeta,
        out: &dyn TensorMeta,
        lse: Option<&dyn TensorMeta>,
    ) -> Result<CentroidPlan, KernelError> {
        let n = Self::NAME;
        let p = &self.params;
        let (b, h, _) = p.check_qkv(n, q, k, v, seq_len, out, lse)?;
        expect(n, "centroids", centroids, self.centroid_dtype, &[Some(b), Some(h), None, Some(p.head_dim)])?;
        let c = centroids.shape()[2];
        if c == 0 || c > self.cand || fixed_len > seq_len {
            return Err(invalid(
                n,
                format!("clusters {c} not in 1..={}, or fixed_len {fixed_len} > seq_len", self.cand),
            ));
        }
        expect(n, "counts", counts, DType::I32, &[Some(b), Some(h), Some(c)])?;
        expect(n, "starts", starts, DType::I32, &[Some(b), Some(h), Some(c + 1)])?;
        for (name, t) in [("keep_start", keep_start), ("keep_len", keep_len)] {
            expect(n, name, t, DType::I32, &[Some(b), Some(h), Some(self.keep)])?;
        }
        expect(n, "keep_count", keep_count, DType::I32, &[Some(b), Some(h)])?;
        if let Some(st) = starts.host() {
            let s = st.to_f64();
            for row in s.chunks_exact(c + 1) {
                if row[0] != 0.0 || row[c] != fixed_len as f64 || row.windows(2).any(|w| w[1] < w[0]) {
                    return Err(invalid(n, format!("starts must rise from 0 to fixed_len {fixed_len}")));
                }
            }
        }
        Ok(CentroidPlan::new(b, h, c, p))
    }

    /// Scores, select (`threshold` in log2 of the estimated per-key probability; `-inf`:
    /// top-`keep` only), attention and combine on the interpreter. `keep_*` are outputs.
    #[allow(clippy::too_many_arguments)]
    pub fn run_cpu(
        &self,
        q: &HostTensor,
        k: &HostTensor,
        v: &HostTensor,
        centroids: &HostTensor,
        counts: &HostTensor,
        starts: &HostTensor,
        fixed_len: usize,
        seq_len: usize,
        threshold: f32,
        keep_start: &mut HostTensor,
        keep_len: &mut HostTensor,
        keep_count: &mut HostTensor,
        out: &mut HostTensor,
        lse: Option<&mut HostTensor>,
    ) -> Result<CentroidPlan, KernelError> {
        let lm = lse.as_deref().map(|l| l as &dyn TensorMeta);
        let p = self.check_args(
            q, k, v, centroids, counts, starts, fixed_len, seq_len, keep_start, keep_len, keep_count, out, lm,
        )?;
        let (b, h) = (p.batch as u32, p.kv_heads as u32);
        let sc = self.params.scale_log2;
        let tiles = Self::tiles(p.clusters);
        let part = [p.batch, p.kv_heads, tiles, self.params.group];
        let (mut pm, mut pl) =
            (HostTensor::full(DType::F32, &part, f64::NAN), HostTensor::full(DType::F32, &part, f64::NAN));
        let tg = [tiles as u32, h, b];
        let mut raw = HostTensor::full(DType::F32, &[p.batch, p.kv_heads, self.params.group, p.clusters], f64::NAN);
        self.tile_lse.run_cpu(tg, q, centroids, counts, &mut pm, &mut pl, &mut raw, sc)?;
        self.select.run_cpu([h, b, 1], &raw, counts, &pm, &pl, starts, keep_start, keep_len, keep_count, threshold)?;
        let kept = [&*keep_start, &*keep_len, &*keep_count];
        self.attention.run_cpu(&p, q, k, v, kept, sc, fixed_len, seq_len, out, lse)?;
        Ok(p)
    }

    /// The same launches on the GPU (nothing synchronized).
    #[allow(clippy::too_many_arguments)]
    pub fn launch(
        &self,
        rt: &Runtime,
        q: &DeviceTensor,
        k: &DeviceTensor,
        v: &DeviceTensor,
        centroids: &DeviceTensor,
        counts: &DeviceTensor,
        starts: &DeviceTensor,
        fixed_len: usize,
        seq_len: usize,
        threshold: f32,
        keep_start: &DeviceTensor,
        keep_len: &DeviceTensor,
        keep_count: &DeviceTensor,
        out: &DeviceTensor,
        lse: Option<&DeviceTensor>,
    ) -> Result<CentroidPlan, KernelError> {
        // The same launches with fresh buffers (allocated, as before, on every call).
        self.launch_with(
            rt,
            &crate::Scratch::new(),
            q,
            k,
            v,
            centroids,
            counts,
            starts,
            fixed_len,
            seq_len,
            threshold,
            keep_start,
            keep_len,
            keep_count,
            out,
            lse,
        )
    }

    /// [`Self::launch`] with the cluster scores and the split partials kept in `scratch`
    /// (for timing loops: no allocation, memset or synchronization per call). The scores
    /// kernel writes all `C` scores and the attention kernel every split before they are
    /// read.
    #[allow(clippy::too_many_arguments)]
    pub fn launch_with(
        &self,
        rt: &Runtime,
        scratch: &crate::Scratch,
        q: &DeviceTensor,
        k: &DeviceTensor,
        v: &DeviceTensor,
        centroids: &DeviceTensor,
        counts: &DeviceTensor,
        starts: &DeviceTensor,
        fixed_len: usize,
        seq_len: usize,
        threshold: f32,
        keep_start: &DeviceTensor,
        keep_len: &DeviceTensor,
        keep_count: &DeviceTensor,
        out: &DeviceTensor,
        lse: Option<&DeviceTensor>,
    ) -> Result<CentroidPlan, KernelError> {
        let lm = lse.map(|l| l as &dyn TensorMeta);
        let p = self.check_args(
            q, k, v, centroids, counts, starts, fixed_len, seq_len, keep_start, keep_len, keep_count, out, lm,
        )?;
        let (b, h) = (p.batch as u32, p.kv_heads as u32);
        let sc = self.params.scale_log2;
        let st = rt.stream();
        let tiles = Self::tiles(p.clusters);
        let part = [p.batch, p.kv_heads, tiles, self.params.group];
        let (pm, pl) = (scratch.get(rt, 4, DType::F32, &part)?, scratch.get(rt, 5, DType::F32, &part)?);
        let tg = [tiles as u32, h, b];
        let raw = scratch.get(rt, 6, DType::F32, &[p.batch, p.kv_heads, self.params.group, p.clusters])?;
        self.tile_lse.launch(st, tg, q, centroids, counts, &pm, &pl, &raw, sc)?;
        self.select.launch(
            st,
            [h, b, 1],
            &raw,
            counts,
            &pm,
            &pl,
            starts,
            keep_start,
            keep_len,
            keep_count,
            threshold,
        )?;
        let kept = [keep_start, keep_len, keep_count];
        self.attention.launch_with(rt, scratch, &p, q, k, v, kept, sc, fixed_len, seq_len, out, lse)?;
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The packed rows of one (batch, KV head) for kept ranges `(start, len)`: slots in
    /// order, empty slots contributing nothing.
    fn packed(ranges: &[(i32, i32)]) -> Vec<f64> {
        ranges.iter().flat_map(|&(s, l)| (s..s + l).map(f64::from)).collect()
    }

    /// Ranges longer than the programs, empty slots (also between full ones), KEEP not a
    /// multiple of the programs, two heads with different counts: the row list is the
    /// ranges concatenated, the count their total, rows past it untouched.
    #[test]
    fn pack_rows_concatenates_the_kept_ranges() {
        let keep = 7;
        let heads: [&[(i32, i32)]; 2] = [&[(0, 3), (10, 70), (0, 0), (200, 1), (90, 33)], &[(5, 2)]];
        let (mut ks, mut kl) = (vec![0.0; 2 * keep], vec![0.0; 2 * keep]);
        for (h, r) in heads.iter().enumerate() {
            for (j, &(s, l)) in r.iter().enumerate() {
                ks[h * keep + j] = f64::from(s);
                kl[h * keep + j] = f64::from(l);
            }
        }
        let ks = HostTensor::from_f64(DType::I32, &[1, 2, keep], &ks);
        let kl = HostTensor::from_f64(DType::I32, &[1, 2, keep], &kl);
        let cap = 300;
        let mut rows = HostTensor::full(DType::I32, &[1, 2, cap], -7.0);
        let mut n_rows = HostTensor::full(DType::I32, &[1, 2], -7.0);
        let pack = CentroidPackRows::cpu(&CentroidDecode::pack_config(keep, 3)).unwrap();
        pack.run_cpu([3, 2, 1], &ks, &kl, &mut rows, &mut n_rows).unwrap();
        let (rows, n_rows) = (rows.to_f64(), n_rows.to_f64());
        for (h, r) in heads.iter().enumerate() {
            let want = packed(r);
            assert_eq!(n_rows[h], want.len() as f64, "head {h}: row count");
            assert_eq!(&rows[h * cap..h * cap + want.len()], &want[..], "head {h}: rows");
            assert!(rows[h * cap + want.len()..(h + 1) * cap].iter().all(|&x| x == -7.0), "head {h}: past the end");
        }
    }
}
