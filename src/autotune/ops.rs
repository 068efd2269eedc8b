//! The `tessera-kernels` decode ops as [`TuneTarget`]s: sink + window, block-sparse,
//! tree verification and top-k block selection, at realistic densities (sink 64 +
//! window 4096; 64 selected blocks of 128 tokens; random ancestor trees of T ∈ {16, 64}
//! nodes, depth ~ln T; top-64 of N/64 blocks).
//!
//! Worker side: inputs are fresh random bf16 (f32 landmarks) from a seeded parallel
//! xorshift, uploaded once per job. Each candidate builds its op, runs once into
//! poisoned outputs and fresh poisoned scratch, and must give finite outputs everywhere
//! and match the f64 reference on the rows of two (batch, KV head) slices (the first
//! and the last) — top-k: a valid selection everywhere, the exact top-k on the slices —
//! before it is timed through the op's `launch_with` (scratch reused; landmark sets
//! rotated so the L2 does not hold them).

use crate::autotune::decode_bucket_dims;
use std::fmt;

use anyhow::{anyhow, Result};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use tessera_codegen::host::{HostData, HostTensor};
use tessera_codegen::ir::{DType, Kernel};
use tessera_dsl_support::KernelConfig;
use tessera_kernels::block_sparse::BlockSparseDecodeSplit;
use tessera_kernels::cases::{random_selection, random_trees};
use tessera_kernels::reference::{block_sparse_positions, sink_window_positions};
use tessera_kernels::sink_window::{union_len, SinkWindowDecodeSplit};
use tessera_kernels::topk::{BlockScoresTopk, TopkMerge};
use tessera_kernels::tree::TreeVerifySplit;
use tessera_kernels::{BlockSparseDecode, Scratch, SinkWindowDecode, TopkBlockSelect, TreeParams, TreeVerify};
use tessera_runtime::{DeviceTensor, Runtime, TimingStats};
use tessera_tuning_db::ShapeBucket;

use super::common::{
    bxn_list, check_pairs, checked_run, combine_kernel, decode_refs, kerr, parse_bxn, split_candidates,
    split_kernel_config, tile_knobs, time, Qkv, RefRows, SplitConfig, D, G, HKV, N,
};
use super::target::{Failure, TuneTarget};
use crate::inputs::{bf16s, f32s, random_bf16, random_f32};

// ---------------------------------------------------------------------------------------
// Shapes

/// A split-KV decode over a sparse key set (sink + window, or selected blocks).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SparseShape {
    pub batch: usize,
    pub kv_heads: usize,
    pub group: usize,
    pub seq_len: usize,
    pub head_dim: usize,
    /// Sink tokens (sink_window; 0 for block_sparse).
    pub sink: usize,
    /// Window tokens (sink_window; 0 for block_sparse).
    pub window: usize,
    /// Tokens per block (block_sparse; 0 for sink_window).
    pub block_size: usize,
    /// Blocks selected per (batch, KV head) (block_sparse; 0 for sink_window).
    pub blocks: usize,
}

impl fmt::Display for SparseShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "B={} N={}", self.batch, self.seq_len)?;
        if self.blocks > 0 {
            write!(f, " {}x{}", self.blocks, self.block_size)?;
        }
        if self.sink + self.window > 0 {
            write!(f, " S={} W={}", self.sink, self.window)?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// sink_window

/// Sink + sliding-window decode ([`SinkWindowDecode`]), sink 64 + window 4096.
pub struct SinkWindowTarget;

/// Inputs of a split-decoder job.
pub struct SplitBench {
    shape: SparseShape,
    x: Qkv,
    out: DeviceTensor,
    refs: RefRows,
    /// block_sparse: the selection on the device.
    sel: Option<(DeviceTensor, DeviceTensor)>,
}

impl TuneTarget for SinkWindowTarget {
    type Shape = SparseShape;
    type Config = SplitConfig;
    type Bench = SplitBench;

    fn name(&self) -> &'static str {
        "sink_window"
    }

    /// `decode`: B ∈ {1, 8}, N = 128K, sink 64, window 4096.
    fn shapes(&self, spec: &str) -> Result<Vec<SparseShape>> {
        Ok(bxn_list(spec, &[(1, N), (8, N)])?
            .into_iter()
            .map(|(batch, seq_len)| SparseShape {
                batch,
                kv_heads: HKV,
                group: G,
                seq_len,
                head_dim: D,
                sink: 64,
                window: 4096,
                block_size: 0,
                blocks: 0,
            })
            .collect())
    }

    fn bucket(&self, s: &SparseShape) -> String {
        decode_bucket_dims(s.batch, s.seq_len, s.kv_heads, s.group, s.head_dim)
            .exact("sink", s.sink as u64)
            .exact("window", s.window as u64)
            .build()
    }

    fn candidates(&self, s: &SparseShape) -> Vec<SplitConfig> {
        let keys = union_len(s.seq_len.next_power_of_two(), s.sink, s.window);
        split_candidates(&tile_knobs(SinkWindowDecodeSplit::tune_space()), &[2, 4, 8, 16, 32], keys)
    }

    fn heuristic(&self, s: &SparseShape, _sm_count: usize) -> SplitConfig {
        SplitConfig::heuristic(s.group, s.head_dim)
    }

    fn kernels(&self, s: &SparseShape, c: &SplitConfig) -> Result<Vec<Kernel>> {
        Ok(vec![
            SinkWindowDecodeSplit::build(&split_kernel_config(s.group, s.head_dim, c))?,
            combine_kernel(s.head_dim, c.max_splits)?,
        ])
    }

    fn prepare(&self, rt: &Runtime, s: &SparseShape, seed: u64) -> Result<SplitBench> {
        let hq = s.kv_heads * s.group;
        let x = Qkv::new(rt, &[s.batch, hq, s.head_dim], [s.batch, s.kv_heads, s.seq_len, s.head_dim], seed)?;
        let pos = sink_window_positions(s.seq_len, s.sink, s.window);
        let refs = decode_refs(&x, s.batch, s.group, |_, _| pos.clone());
        let out = DeviceTensor::poisoned(rt.stream(), DType::BF16, &[s.batch, hq, s.head_dim])?;
        Ok(SplitBench { shape: *s, x, out, refs, sel: None })
    }

    fn run_candidate(
        &self,
        rt: &Runtime,
        b: &mut SplitBench,
        c: &SplitConfig,
        warmup: usize,
        iters: usize,
    ) -> Result<TimingStats, Failure> {
        let s = b.shape;
        let op = SinkWindowDecode::new(rt, c.params(s.group, s.head_dim)).map_err(kerr)?;
        let scratch = Scratch::new();
        let (x, out) = (&b.x, &b.out);
        let launch = || op.launch_with(rt, &scratch, &x.q, &x.k, &x.v, s.seq_len, s.sink, s.window, out, None);
        checked_run(rt, out, &b.refs, s.head_dim, launch)?;
        time(rt, warmup, iters, |_| launch())
    }
}

// ---------------------------------------------------------------------------------------
// block_sparse

/// Block-sparse decode ([`BlockSparseDecode`]): 64 random distinct blocks of 128 tokens
/// out of N/128 per (batch, KV head), no sink or window.
pub struct BlockSparseTarget;

impl TuneTarget for BlockSparseTarget {
    type Shape = SparseShape;
    type Config = SplitConfig;
    type Bench = SplitBench;

    fn name(&self) -> &'static str {
        "block_sparse"
    }

    /// `decode`: B ∈ {1, 8}, N = 128K, 64 blocks of 128 tokens.
    fn shapes(&self, spec: &str) -> Result<Vec<SparseShape>> {
        Ok(bxn_list(spec, &[(1, N), (8, N)])?
            .into_iter()
            .map(|(batch, seq_len)| SparseShape {
                batch,
                kv_heads: HKV,
                group: G,
                seq_len,
                head_dim: D,
                sink: 0,
                window: 0,
                block_size: 128,
                blocks: 64.min(seq_len / 128).max(1),
            })
            .collect())
    }

    fn bucket(&self, s: &SparseShape) -> String {
        decode_bucket_dims(s.batch, s.seq_len, s.kv_heads, s.group, s.head_dim)
            .exact("bs", s.block_size as u64)
            .pow2("blocks", s.blocks as u64)
            .build()
    }

    fn candidates(&self, s: &SparseShape) -> Vec<SplitConfig> {
        let keys = s.blocks.next_power_of_two() * s.block_size;
        split_candidates(&tile_knobs(BlockSparseDecodeSplit::tune_space()), &[4, 8, 16, 32, 64], keys)
    }

    fn heuristic(&self, s: &SparseShape, _sm_count: usize) -> SplitConfig {
        SplitConfig::heuristic(s.group, s.head_dim)
    }

    fn kernels(&self, s: &SparseShape, c: &SplitConfig) -> Result<Vec<Kernel>> {
        // The op's own configuration (one block list per KV head), so the tuned source is
        // the one dispatch runs.
        let config = BlockSparseDecode::config(&c.params(s.group, s.head_dim), s.block_size, false);
        Ok(vec![BlockSparseDecodeSplit::build(&config)?, combine_kernel(s.head_dim, c.max_splits)?])
    }

    fn prepare(&self, rt: &Runtime, s: &SparseShape, seed: u64) -> Result<SplitBench> {
        let hq = s.kv_heads * s.group;
        let x = Qkv::new(rt, &[s.batch, hq, s.head_dim], [s.batch, s.kv_heads, s.seq_len, s.head_dim], seed)?;
        let mut rng = StdRng::seed_from_u64(seed + 11);
        let nb = s.seq_len.div_ceil(s.block_size);
        let (idx, cnt) = random_selection(&mut rng, s.batch, s.kv_heads, nb, s.blocks, false, true);
        let iv = idx.to_f64();
        let refs = decode_refs(&x, s.batch, s.group, |b, h| {
            let bh = b * s.kv_heads + h;
            let blocks: Vec<i64> = iv[bh * s.blocks..(bh + 1) * s.blocks].iter().map(|&v| v as i64).collect();
            block_sparse_positions(s.seq_len, 0, 0, &blocks, s.block_size)
        });
        let sel = (DeviceTensor::upload(rt.stream(), &idx)?.read_only(), DeviceTensor::upload(rt.stream(), &cnt)?);
        let out = DeviceTensor::poisoned(rt.stream(), DType::BF16, &[s.batch, hq, s.head_dim])?;
        Ok(SplitBench { shape: *s, x, out, refs, sel: Some(sel) })
    }

    fn run_candidate(
        &self,
        rt: &Runtime,
        b: &mut SplitBench,
        c: &SplitConfig,
        warmup: usize,
        iters: usize,
    ) -> Result<TimingStats, Failure> {
        let s = b.shape;
        let op = BlockSparseDecode::new(rt, c.params(s.group, s.head_dim), s.block_size).map_err(kerr)?;
        let scratch = Scratch::new();
        let (x, out) = (&b.x, &b.out);
        let (di, dc) = b.sel.as_ref().expect("block_sparse bench has a selection");
        let launch = || op.launch_with(rt, &scratch, &x.q, &x.k, &x.v, di, dc, s.seq_len, 0, 0, out, None);
        checked_run(rt, out, &b.refs, s.head_dim, launch)?;
        time(rt, warmup, iters, |_| launch())
    }
}

// ---------------------------------------------------------------------------------------
// tree_verify

/// Tree verification ([`TreeVerify`]): `tree` draft nodes over a dense prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeShape {
    pub batch: usize,
    pub kv_heads: usize,
    pub group: usize,
    pub prefix_len: usize,
    pub head_dim: usize,
    /// Tree nodes T (≤ 64; the kernel's T_PAD).
    pub tree: usize,
}

impl fmt::Display for TreeShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "B={} N={} T={}", self.batch, self.prefix_len, self.tree)
    }
}

/// Knobs of tree verification: BLOCK_N and WARPS of the split kernel and the most splits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TreeConfig {
    pub block_n: usize,
    /// Absent from records written before WARPS was tuned: those ran 4.
    #[serde(default = "four_warps")]
    pub warps: usize,
    pub max_splits: usize,
    /// Query rows per program (ROWS); 0 in records written before it was tuned: those ran
    /// [`TreeParams::new`]'s default.
    #[serde(default)]
    pub rows: usize,
}

impl TreeConfig {
    /// The kernel's ROWS for this shape (0 = the default of [`TreeParams::new`]).
    fn rows_for(&self, s: &TreeShape) -> usize {
        if self.rows == 0 {
            TreeParams::new(s.group, s.head_dim, s.tree).rows
        } else {
            self.rows
        }
    }

    /// The [`TreeParams`] this config stands for at `s` (what [`TreeVerify`] is built
    /// with: `t_pad` = the tree size, the rest from [`TreeParams::new`]).
    pub fn params(&self, s: &TreeShape) -> TreeParams {
        TreeParams {
            block_n: self.block_n,
            warps: self.warps,
            max_splits: self.max_splits,
            rows: self.rows_for(s),
            ..TreeParams::new(s.group, s.head_dim, s.tree)
        }
    }
}

impl fmt::Display for TreeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BLOCK_N={} WARPS={} max_splits={}", self.block_n, self.warps, self.max_splits)?;
        if self.rows != 0 {
            write!(f, " ROWS={}", self.rows)?;
        }
        Ok(())
    }
}

/// WARPS of configs recorded before tree / top-k tuned it (the ops' fixed 4).
fn four_warps() -> usize {
    4
}

/// Tree verification, random trees (each node's parent uniform among the earlier nodes:
/// depth ~ ln T).
pub struct TreeVerifyTarget;

/// Inputs of a tree job.
pub struct TreeBench {
    shape: TreeShape,
    x: Qkv,
    anc: DeviceTensor,
    out: DeviceTensor,
    refs: RefRows,
}

impl TuneTarget for TreeVerifyTarget {
    type Shape = TreeShape;
    type Config = TreeConfig;
    type Bench = TreeBench;

    fn name(&self) -> &'static str {
        "tree_verify"
    }

    /// `decode`: B = 1, prefix 128K, T ∈ {16, 64}; a `BxN` list gives both T per shape,
    /// `BxNxT` that T alone (e.g. the decoder's prefill chunk: 32 tokens at Llama-3-8B's
    /// heads).
    fn shapes(&self, spec: &str) -> Result<Vec<TreeShape>> {
        let mut out = Vec::new();
        let shape =
            |batch, prefix_len, tree| TreeShape { batch, kv_heads: HKV, group: G, prefix_len, head_dim: D, tree };
        if spec == "decode" || spec == "default" {
            out.extend([16, 64].map(|t| shape(1, N, t)));
            return Ok(out);
        }
        for item in spec.split(',') {
            match item.rsplit_once('x') {
                Some((bxn, t)) if bxn.contains('x') => {
                    let tree = t.parse::<usize>().ok().filter(|t| (1..=64).contains(t));
                    let tree = tree.ok_or_else(|| anyhow!("shape `{item}`: T must be 1..=64"))?;
                    let (batch, prefix_len) = parse_bxn(bxn)?;
                    out.push(shape(batch, prefix_len, tree));
                }
                _ => {
                    let (batch, prefix_len) = parse_bxn(item)?;
                    out.extend([16, 64].map(|t| shape(batch, prefix_len, t)));
                }
            }
        }
        Ok(out)
    }

    fn bucket(&self, s: &TreeShape) -> String {
        ShapeBucket::new()
            .pow2("b", s.batch as u64)
            .pow2("n", s.prefix_len as u64)
            .exact("t", s.tree as u64)
            .exact("hkv", s.kv_heads as u64)
            .exact("g", s.group as u64)
            .exact("d", s.head_dim as u64)
            .build()
    }

    /// BLOCK_N × WARPS of the declared tune space × max_splits ∈ {8, …, 128} (above 16
    /// only while a split keeps a tile of keys).
    fn candidates(&self, s: &TreeShape) -> Vec<TreeConfig> {
        let keys = s.prefix_len.next_power_of_two() + s.tree;
        let knobs = tile_knobs(TreeVerifySplit::tune_space());
        // Fewer query rows per program: less work per KV tile, the row blocks of a split
        // re-read its tiles (mostly from the L2).
        let all_rows = s.group * s.tree;
        let row_choices: Vec<usize> = [64, 32, 16].into_iter().filter(|&r| r <= all_rows.max(16)).collect();
        let splits = split_candidates(&knobs, &[8, 16, 32, 64, 128], keys);
        row_choices
            .iter()
            .flat_map(|&rows| {
                splits.iter().map(move |c| TreeConfig {
                    block_n: c.block_n,
                    warps: c.warps,
                    max_splits: c.max_splits,
                    rows: rows.min(all_rows),
                })
            })
            .collect()
    }

    /// [`TreeParams::new`]'s defaults.
    fn heuristic(&self, s: &TreeShape, _sm_count: usize) -> TreeConfig {
        let p = TreeParams::new(s.group, s.head_dim, s.tree);
        TreeConfig { block_n: p.block_n, warps: p.warps, max_splits: p.max_splits, rows: p.rows }
    }

    fn kernels(&self, s: &TreeShape, c: &TreeConfig) -> Result<Vec<Kernel>> {
        let config = KernelConfig::from_pairs(&[
            ("GROUP", s.group as i64),
            ("T_PAD", s.tree as i64),
            ("HEAD_DIM", s.head_dim as i64),
            ("BLOCK_N", c.block_n as i64),
            ("ROWS", c.rows_for(s) as i64),
            ("WARPS", c.warps as i64),
        ]);
        Ok(vec![TreeVerifySplit::build(&config)?, combine_kernel(s.head_dim, c.max_splits)?])
    }

    fn prepare(&self, rt: &Runtime, s: &TreeShape, seed: u64) -> Result<TreeBench> {
        let (t, hq) = (s.tree, s.kv_heads * s.group);
        // The cache holds the prefix, then the tree's rows (node j at prefix + j).
        let cap = s.prefix_len + t;
        let x = Qkv::new(rt, &[s.batch, hq * t, s.head_dim], [s.batch, s.kv_heads, cap, s.head_dim], seed)?;
        let mut rng = StdRng::seed_from_u64(seed + 5);
        let bits = random_trees(&mut rng, s.batch, t);
        let anc = HostTensor { shape: vec![s.batch, t], data: HostData::I64(bits.iter().map(|&a| a as i64).collect()) };
        let sl2 = tessera_kernels::default_scale_log2(s.head_dim) as f64;
        let mut refs = Vec::new();
        for (b, h) in check_pairs(s.batch, s.kv_heads) {
            let mut rows = Vec::new();
            for g in 0..s.group {
                for i in [0, t / 2, t - 1] {
                    let mut pos: Vec<usize> = (0..s.prefix_len).collect();
                    pos.extend((0..t).filter(|j| bits[b * t + i] >> j & 1 == 1).map(|j| s.prefix_len + j));
                    rows.push((b * hq * t + (h * s.group + g) * t + i, pos));
                }
            }
            refs.extend(x.reference(b, h, rows, sl2));
        }
        let anc = DeviceTensor::upload(rt.stream(), &anc)?.read_only();
        let out = DeviceTensor::poisoned(rt.stream(), DType::BF16, &[s.batch, hq * t, s.head_dim])?;
        Ok(TreeBench { shape: *s, x, anc, out, refs })
    }

    fn run_candidate(
        &self,
        rt: &Runtime,
        b: &mut TreeBench,
        c: &TreeConfig,
        warmup: usize,
        iters: usize,
    ) -> Result<TimingStats, Failure> {
        let s = b.shape;
        let op = TreeVerify::new(rt, c.params(&s)).map_err(kerr)?;
        let scratch = Scratch::new();
        let (x, out, anc) = (&b.x, &b.out, &b.anc);
        let launch = || op.launch_with(rt, &scratch, &x.q, &x.k, &x.v, anc, s.prefix_len, out, None);
        checked_run(rt, out, &b.refs, s.head_dim, launch)?;
        time(rt, warmup, iters, |_| launch())
    }
}

// ---------------------------------------------------------------------------------------
// topk_select

/// Top-k block selection ([`TopkBlockSelect`], max over the GQA group).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopkShape {
    pub batch: usize,
    pub kv_heads: usize,
    pub group: usize,
    pub head_dim: usize,
    /// Blocks scored (N / block size).
    pub num_blocks: usize,
    /// Blocks selected.
    pub k: usize,
}

impl fmt::Display for TopkShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "B={} blocks={} k={}", self.batch, self.num_blocks, self.k)
    }
}

/// Knobs of top-k selection: LM_TILE, blocks scored per program, and WARPS of both
/// kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TopkConfig {
    pub lm_tile: usize,
    /// Absent from records written before WARPS was tuned: those ran 4.
    #[serde(default = "four_warps")]
    pub warps: usize,
}

impl fmt::Display for TopkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LM_TILE={} WARPS={}", self.lm_tile, self.warps)
    }
}

impl TopkConfig {
    /// `topk_merge`'s CAND: the candidates of every tile, rounded up to a power of two.
    fn max_cand(&self, s: &TopkShape) -> usize {
        TopkBlockSelect::candidates(s.num_blocks, self.lm_tile, s.k).max(s.k).next_power_of_two()
    }
}

/// Top-64 of N/64 blocks.
pub struct TopkSelectTarget;

/// Inputs of a top-k job.
pub struct TopkBench {
    shape: TopkShape,
    q: DeviceTensor,
    hq: HostTensor,
    /// Landmark sets rotated through while timing (together > 2× the L2).
    sets: Vec<DeviceTensor>,
    lm0: HostTensor,
    bi: DeviceTensor,
    bc: DeviceTensor,
}

impl TuneTarget for TopkSelectTarget {
    type Shape = TopkShape;
    type Config = TopkConfig;
    type Bench = TopkBench;

    fn name(&self) -> &'static str {
        "topk_select"
    }

    /// `decode`: B ∈ {1, 8}, N = 128K in blocks of 64 (2048 blocks), k = 64.
    fn shapes(&self, spec: &str) -> Result<Vec<TopkShape>> {
        Ok(bxn_list(spec, &[(1, N), (8, N)])?
            .into_iter()
            .map(|(batch, n)| {
                let num_blocks = n.div_ceil(64);
                TopkShape { batch, kv_heads: HKV, group: G, head_dim: D, num_blocks, k: 64.min(num_blocks) }
            })
            .collect())
    }

    fn bucket(&self, s: &TopkShape) -> String {
        ShapeBucket::new()
            .pow2("b", s.batch as u64)
            .pow2("nb", s.num_blocks as u64)
            .exact("k", s.k as u64)
            .exact("hkv", s.kv_heads as u64)
            .exact("g", s.group as u64)
            .exact("d", s.head_dim as u64)
            .build()
    }

    /// LM_TILE × WARPS of the declared tune space.
    fn candidates(&self, s: &TopkShape) -> Vec<TopkConfig> {
        let base = KernelConfig::from_pairs(&[("TOPK", s.k as i64)]);
        let mut out = Vec::new();
        for c in BlockScoresTopk::tune_space().configs_with(&base) {
            let warps = c.get("WARPS").unwrap_or(4) as usize;
            if let Some(t) = c.get("LM_TILE") {
                let cfg = TopkConfig { lm_tile: t as usize, warps };
                if !out.contains(&cfg) {
                    out.push(cfg);
                }
            }
        }
        out
    }

    /// LM_TILE = 64 (tiles of at most k keep every score: many small programs read the
    /// landmarks, one radix select per head picks), WARPS = 4 (what untuned callers pass).
    fn heuristic(&self, _s: &TopkShape, _sm_count: usize) -> TopkConfig {
        TopkConfig { lm_tile: 64, warps: 4 }
    }

    fn kernels(&self, s: &TopkShape, c: &TopkConfig) -> Result<Vec<Kernel>> {
        let scores = KernelConfig::from_pairs(&[
            ("LM", tessera_dsl_support::elem_code(DType::F32).expect("f32 has a code")),
            ("GROUP", s.group as i64),
            ("HEAD_DIM", s.head_dim as i64),
            ("LM_TILE", c.lm_tile as i64),
            ("TOPK", s.k as i64),
            ("SUM_HEADS", 0),
            ("WARPS", c.warps as i64),
        ]);
        let merge = KernelConfig::from_pairs(&[
            ("TOPK", s.k as i64),
            ("CAND", c.max_cand(s) as i64),
            ("WARPS", TopkBlockSelect::MERGE_WARPS as i64),
        ]);
        Ok(vec![BlockScoresTopk::build(&scores)?, TopkMerge::build(&merge)?])
    }

    fn prepare(&self, rt: &Runtime, s: &TopkShape, seed: u64) -> Result<TopkBench> {
        let hq = random_bf16(&[s.batch, s.kv_heads * s.group, s.head_dim], seed);
        let q = DeviceTensor::upload(rt.stream(), &hq)?.read_only();
        let lm_shape = [s.batch, s.kv_heads, s.num_blocks, s.head_dim];
        let one = (lm_shape.iter().product::<usize>() * 4) as f64;
        let count = ((2.0 * rt.info().l2_bytes.max(1) as f64 / one).ceil() as usize).clamp(1, 8);
        let mut sets = Vec::new();
        let mut lm0 = None;
        for i in 0..count {
            let h = random_f32(&lm_shape, seed + 100 + i as u64);
            sets.push(DeviceTensor::upload(rt.stream(), &h)?.read_only());
            lm0.get_or_insert(h);
        }
        let bi = DeviceTensor::poisoned(rt.stream(), DType::I32, &[s.batch, s.kv_heads, s.k])?;
        let bc = DeviceTensor::poisoned(rt.stream(), DType::I32, &[s.batch, s.kv_heads])?;
        Ok(TopkBench { shape: *s, q, hq, sets, lm0: lm0.expect("one set"), bi, bc })
    }

    fn run_candidate(
        &self,
        rt: &Runtime,
        b: &mut TopkBench,
        c: &TopkConfig,
        warmup: usize,
        iters: usize,
    ) -> Result<TimingStats, Failure> {
        let s = b.shape;
        let op = TopkBlockSelect::new(rt, s.group, s.head_dim, s.k, c.lm_tile, false, c.max_cand(&s), c.warps)
            .map_err(kerr)?;
        let scratch = Scratch::new();
        let io = |e: tessera_runtime::RuntimeError| Failure::classify(e.into());
        b.bi.poison().map_err(io)?;
        b.bc.poison().map_err(io)?;
        op.launch_with(rt, &scratch, &b.q, &b.sets[0], s.num_blocks, &b.bi, &b.bc).map_err(kerr)?;
        rt.synchronize().map_err(io)?;
        let idx = b.bi.download().map_err(io)?.to_f64();
        let cnt = b.bc.download().map_err(io)?.to_f64();
        check_topk(&s, &idx, &cnt, &b.hq, &b.lm0).map_err(Failure::wrong)?;
        let sets = &b.sets;
        time(rt, warmup, iters, |i| {
            op.launch_with(rt, &scratch, &b.q, &sets[i % sets.len()], s.num_blocks, &b.bi, &b.bc)
        })
    }
}

/// A top-k selection is right when every (batch, KV head) has `count = k` distinct
/// in-range indices and, on the checked slices, the selected blocks' scores (max over the
/// group of q · landmark, f64) are the k largest (within 1e-3 of the k-th, relatively).
fn check_topk(s: &TopkShape, idx: &[f64], cnt: &[f64], q: &HostTensor, lm: &HostTensor) -> Result<(), String> {
    let (k, nb, d) = (s.k, s.num_blocks, s.head_dim);
    for bh in 0..s.batch * s.kv_heads {
        if cnt[bh] as usize != k {
            return Err(format!("(b,h) {bh}: count {} != {k}", cnt[bh]));
        }
        let mut seen = std::collections::HashSet::new();
        for &x in &idx[bh * k..(bh + 1) * k] {
            if x < 0.0 || x as usize >= nb || !seen.insert(x as i64) {
                return Err(format!("(b,h) {bh}: index {x} out of range or repeated"));
            }
        }
    }
    let (qs, ls) = (bf16s(q), f32s(lm));
    let hq = s.kv_heads * s.group;
    for (b, h) in check_pairs(s.batch, s.kv_heads) {
        let bh = b * s.kv_heads + h;
        let scores: Vec<f64> = (0..nb)
            .map(|j| {
                let l = &ls[(bh * nb + j) * d..(bh * nb + j + 1) * d];
                (0..s.group)
                    .map(|g| {
                        let r = b * hq + h * s.group + g;
                        qs[r * d..(r + 1) * d].iter().zip(l).map(|(a, c)| a.to_f64() * *c as f64).sum::<f64>()
                    })
                    .fold(f64::NEG_INFINITY, f64::max)
            })
            .collect();
        let mut sorted = scores.clone();
        sorted.sort_by(|a, c| c.total_cmp(a));
        let kth = sorted[k - 1];
        let mag = sorted[0].abs().max(1.0);
        for &x in &idx[bh * k..(bh + 1) * k] {
            if (kth - scores[x as usize]) / mag > 1e-3 {
                return Err(format!("(b,h) {bh}: block {x} scores {} below the k-th best {kth}", scores[x as usize]));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autotune::common::contract;
    use crate::autotune::{DenseDecodeTarget, TARGETS};

    #[test]
    fn every_target_keeps_the_contract() {
        let dense = contract(&DenseDecodeTarget, |s| crate::decode::DecodeShape { seq_len: s.seq_len - 1000, ..*s });
        assert_eq!(dense, vec![48, 48, 48, 48]);
        let sink = contract(&SinkWindowTarget, |s| SparseShape { seq_len: s.seq_len - 1000, ..*s });
        assert_eq!(sink, vec![60, 60]);
        let bsp = contract(&BlockSparseTarget, |s| SparseShape { seq_len: s.seq_len - 1000, blocks: 63, ..*s });
        assert_eq!(bsp, vec![60, 60]);
        let tree = contract(&TreeVerifyTarget, |s| TreeShape { prefix_len: s.prefix_len - 1000, ..*s });
        assert_eq!(tree, vec![90, 90]);
        let topk = contract(&TopkSelectTarget, |s| TopkShape { num_blocks: s.num_blocks - 10, ..*s });
        assert_eq!(topk, vec![8, 8]);
    }

    /// The heuristic kernels of every preset shape of `t`: their emitted CUDA sources
    /// (deduplicated) with the entry and dynamic shared memory.
    fn heuristic_sources<T: TuneTarget>(t: &T, out: &mut Vec<(String, String, u32, String)>) {
        for s in t.shapes("decode").unwrap() {
            for k in t.kernels(&s, &t.heuristic(&s, 132)).unwrap() {
                let e = tessera_codegen::emit::emit_cuda(&k);
                if !out.iter().any(|o| o.0 == e.source) {
                    out.push((e.source, e.entry, e.shared_bytes, format!("{} {s}", t.name())));
                }
            }
        }
    }

    /// Untuned dispatch runs the heuristic: on an H200 (sm_90a, 227 KB of shared memory
    /// per block) every kernel of the new targets' heuristics fits and compiles (where
    /// NVRTC loads; its absence is a skip, a compile error a failure).
    #[test]
    fn the_new_targets_heuristics_compile_for_the_h200() {
        let mut all = Vec::new();
        heuristic_sources(&crate::autotune::DenseTarget, &mut all);
        heuristic_sources(&crate::autotune::LmInfiniteTarget, &mut all);
        heuristic_sources(&crate::autotune::HipSelectTarget, &mut all);
        heuristic_sources(&crate::autotune::CentroidDecodeTarget, &mut all);
        heuristic_sources(&crate::autotune::SnapKvTarget, &mut all);
        for (_, entry, smem, what) in &all {
            assert!(*smem as usize <= 227 * 1024, "{what}: {entry} needs {smem} B of shared memory");
        }
        if tessera_runtime::nvrtc_version().is_err() {
            eprintln!("SKIPPED: NVRTC not found");
            return;
        }
        let next = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|sc| {
            for _ in 0..std::thread::available_parallelism().map_or(2, |n| n.get()).min(8) {
                sc.spawn(|| loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some((source, entry, _, what)) = all.get(i) else { break };
                    if let Err(e) = tessera_runtime::compile_ptx(source, entry, "sm_90a") {
                        panic!("{what}: {entry}: {e}");
                    }
                });
            }
        });
    }

    #[test]
    fn configs_recorded_before_warps_was_tuned_read_as_four() {
        let t: TreeConfig = serde_json::from_str(r#"{"block_n":64,"max_splits":16}"#).unwrap();
        assert_eq!(t, TreeConfig { block_n: 64, warps: 4, max_splits: 16, rows: 0 });
        let k: TopkConfig = serde_json::from_str(r#"{"lm_tile":128}"#).unwrap();
        assert_eq!(k, TopkConfig { lm_tile: 128, warps: 4 });
    }

    #[test]
    fn a_bucket_change_can_change_the_candidates() {
        let s = SinkWindowTarget.shapes("1x2048").unwrap()[0];
        let big = SinkWindowTarget.shapes("decode").unwrap()[0];
        assert_ne!(SinkWindowTarget.bucket(&s), SinkWindowTarget.bucket(&big));
        // 2048 keys over 32 splits is less than a 128-key tile each: dropped.
        let c = SinkWindowTarget.candidates(&s);
        assert!(!c.iter().any(|c| c.max_splits == 32 && c.block_n == 128));
        assert!(c.contains(&SinkWindowTarget.heuristic(&s, 132)));
    }

    #[test]
    fn the_registry_names_the_cli_kernels() {
        let names: Vec<&str> = TARGETS.iter().map(|t| t.name()).collect();
        assert_eq!(
            names,
            [
                "hip_select",
                "snapkv",
                "topk_select",
                "lm_infinite",
                "centroid_decode",
                "sink_window",
                "block_sparse",
                "tree_verify",
                "dense_decode",
                "dense"
            ]
        );
        for n in names {
            assert!(crate::autotune::find_target(n).is_some());
        }
        assert!(crate::autotune::find_target("nope").is_none());
    }

    #[test]
    fn shape_lists_follow_the_presets() {
        let t = TreeVerifyTarget.shapes("1x4096,2x8192").unwrap();
        assert_eq!(t.len(), 4);
        assert_eq!((t[3].batch, t[3].prefix_len, t[3].tree), (2, 8192, 64));
        let t = TreeVerifyTarget.shapes("1x4096x32,2x100").unwrap();
        assert_eq!(
            t.iter().map(|s| (s.batch, s.prefix_len, s.tree)).collect::<Vec<_>>(),
            [(1, 4096, 32), (2, 100, 16), (2, 100, 64)]
        );
        assert!(TreeVerifyTarget.shapes("1x4096x65").is_err());
        assert!(TreeVerifyTarget.shapes("1x4096x0").is_err());
        assert!(TreeVerifyTarget.shapes("1xx4096").is_err());
        let k = TopkSelectTarget.shapes("8x131072").unwrap();
        assert_eq!((k[0].num_blocks, k[0].k), (2048, 64));
        assert!(BlockSparseTarget.shapes("8").is_err());
    }

    #[test]
    fn the_topk_check_refuses_a_bad_pick() {
        let s = TopkShape { batch: 1, kv_heads: 2, group: 2, head_dim: 8, num_blocks: 20, k: 4 };
        let q = random_bf16(&[1, 4, 8], 1);
        let lm = random_f32(&[1, 2, 20, 8], 2);
        // The exact top-4 per KV head, from the same scores the check computes.
        let (qs, ls) = (bf16s(&q), f32s(&lm));
        let mut idx = Vec::new();
        for h in 0..2 {
            let mut sc: Vec<(f64, usize)> = (0..20)
                .map(|j| {
                    let l = &ls[(h * 20 + j) * 8..(h * 20 + j + 1) * 8];
                    let best = (0..2)
                        .map(|g| {
                            let r = h * 2 + g;
                            qs[r * 8..(r + 1) * 8].iter().zip(l).map(|(a, c)| a.to_f64() * *c as f64).sum::<f64>()
                        })
                        .fold(f64::NEG_INFINITY, f64::max);
                    (best, j)
                })
                .collect();
            sc.sort_by(|a, b| b.0.total_cmp(&a.0));
            idx.extend(sc[..4].iter().map(|x| x.1 as f64));
        }
        let cnt = [4.0, 4.0];
        check_topk(&s, &idx, &cnt, &q, &lm).unwrap();
        let mut bad = idx.clone();
        bad[3] = (0..20).map(|j| j as f64).find(|j| !idx[..4].contains(j)).unwrap();
        assert!(check_topk(&s, &bad, &cnt, &q, &lm).is_err());
        let mut dup = idx.clone();
        dup[1] = dup[0];
        assert!(check_topk(&s, &dup, &cnt, &q, &lm).is_err());
        assert!(check_topk(&s, &idx, &[3.0, 4.0], &q, &lm).is_err());
    }
}
