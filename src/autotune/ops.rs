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
use tessera_kernels::combine::{AttnCombine, LseCombine};
use tessera_kernels::reference::{attend, block_sparse_positions, sink_window_positions};
use tessera_kernels::sink_window::{union_len, SinkWindowDecodeSplit};
use tessera_kernels::topk::{BlockScoresTopk, TopkMerge};
use tessera_kernels::tree::TreeVerifySplit;
use tessera_kernels::{
    BlockSparseDecode, DecodeParams, KernelError, Scratch, SinkWindowDecode, TopkBlockSelect, TreeParams, TreeVerify,
};
use tessera_runtime::{DeviceTensor, Runtime, RuntimeError, TimingStats};
use tessera_tuning_db::ShapeBucket;

use super::target::{Failure, TuneTarget};
use crate::inputs::{bf16s, f32s, random_bf16, random_f32, rows_f64};

/// bf16 outputs: largest error relative to the largest reference magnitude.
const OUT_TOL: f64 = 2e-2;
/// The preset's heads (Llama-3-8B-like): 32 query heads over 8 KV heads, d = 128.
const HKV: usize = 8;
const G: usize = 4;
const D: usize = 128;
const N: usize = 131072;

// ---------------------------------------------------------------------------------------
// Shapes and configs

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

/// Knobs of the split decoders: the split kernel's BLOCK_N and WARPS (its declared tune
/// space) and the most splits per (batch, KV head) (the combine's MAX_SPLITS).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SplitConfig {
    pub block_n: usize,
    pub warps: usize,
    pub max_splits: usize,
    /// Pipeline buffers of the split kernel (STAGES); records from before it was tuned
    /// ran 2.
    #[serde(default = "two_stages")]
    pub stages: usize,
}

fn two_stages() -> usize {
    2
}

impl fmt::Display for SplitConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BLOCK_N={} WARPS={} STAGES={} max_splits={}", self.block_n, self.warps, self.stages, self.max_splits)
    }
}

impl SplitConfig {
    fn params(&self, group: usize, head_dim: usize) -> DecodeParams {
        DecodeParams {
            block_n: self.block_n,
            warps: self.warps,
            max_splits: self.max_splits,
            stages: self.stages,
            ..DecodeParams::new(group, head_dim)
        }
    }

    /// The heuristic: [`DecodeParams::new`]'s defaults (what untuned callers build).
    fn heuristic(group: usize, head_dim: usize) -> Self {
        let p = DecodeParams::new(group, head_dim);
        SplitConfig { block_n: p.block_n, warps: p.warps, max_splits: p.max_splits, stages: p.stages }
    }
}

/// (BLOCK_N, WARPS) pairs of a split kernel's declared tune space.
fn tile_knobs(space: tessera_dsl_support::TuneSpace) -> Vec<(usize, usize, usize)> {
    let mut out = Vec::new();
    for c in space.configs() {
        let bn = c.get("BLOCK_N").unwrap_or(64) as usize;
        let w = c.get("WARPS").unwrap_or(4) as usize;
        let stages = c.get("STAGES").unwrap_or(2) as usize;
        if !out.contains(&(bn, w, stages)) {
            out.push((bn, w, stages));
        }
    }
    out
}

/// Split candidates for `keys` attended keys (the bucket's): every (BLOCK_N, WARPS) ×
/// max_splits of `splits`, dropping split counts above 16 that would leave a split less
/// than one tile of keys (the heuristic's 16 is always kept).
fn split_candidates(knobs: &[(usize, usize, usize)], splits: &[usize], keys: usize) -> Vec<SplitConfig> {
    let mut out = Vec::new();
    for &(block_n, warps, stages) in knobs {
        for &max_splits in splits {
            if max_splits <= 16 || keys.div_ceil(max_splits) >= block_n {
                out.push(SplitConfig { block_n, warps, max_splits, stages });
            }
        }
    }
    out
}

fn split_kernel_config(group: usize, head_dim: usize, c: &SplitConfig) -> KernelConfig {
    KernelConfig::from_pairs(&[
        ("GROUP", group as i64),
        ("HEAD_DIM", head_dim as i64),
        ("BLOCK_N", c.block_n as i64),
        ("WARPS", c.warps as i64),
        ("STAGES", c.stages as i64),
    ])
}

fn combine_kernel(head_dim: usize, max_splits: usize) -> Result<Kernel> {
    Ok(AttnCombine::build(&LseCombine::config(head_dim, max_splits, false))?)
}

/// `BATCHxSEQ_LEN` → (batch, seq_len).
fn parse_bxn(s: &str) -> Result<(usize, usize)> {
    s.split_once('x')
        .and_then(|(b, n)| Some((b.parse::<usize>().ok()?, n.parse::<usize>().ok()?)))
        .filter(|(b, n)| *b > 0 && *n > 0)
        .ok_or_else(|| anyhow!("shape `{s}` is not BATCHxSEQ_LEN"))
}

/// `decode`/`default` → the preset's (batch, seq_len) pairs, else the listed ones.
fn bxn_list(spec: &str, preset: &[(usize, usize)]) -> Result<Vec<(usize, usize)>> {
    if spec == "decode" || spec == "default" {
        Ok(preset.to_vec())
    } else {
        spec.split(',').map(parse_bxn).collect()
    }
}

// ---------------------------------------------------------------------------------------
// Inputs, references, checks

/// The (batch, KV head) slices checked against the reference: the first and the last.
fn check_pairs(batch: usize, kv_heads: usize) -> Vec<(usize, usize)> {
    vec![(0, 0), (batch - 1, kv_heads - 1)]
}

/// q, k, v on the device (read-only) with host copies for the references.
struct Qkv {
    q: DeviceTensor,
    k: DeviceTensor,
    v: DeviceTensor,
    hq: HostTensor,
    hk: HostTensor,
    hv: HostTensor,
    /// K/V rows per (batch, KV head).
    cap: usize,
    kv_heads: usize,
    head_dim: usize,
}

impl Qkv {
    fn new(rt: &Runtime, q_shape: &[usize], kv_shape: [usize; 4], seed: u64) -> Result<Self> {
        let hq = random_bf16(q_shape, seed);
        let hk = random_bf16(&kv_shape, seed + 1);
        let hv = random_bf16(&kv_shape, seed + 2);
        let st = rt.stream();
        Ok(Qkv {
            q: DeviceTensor::upload(st, &hq)?.read_only(),
            k: DeviceTensor::upload(st, &hk)?.read_only(),
            v: DeviceTensor::upload(st, &hv)?.read_only(),
            hq,
            hk,
            hv,
            cap: kv_shape[2],
            kv_heads: kv_shape[1],
            head_dim: kv_shape[3],
        })
    }

    /// f64 reference rows: for each `(q row, positions)` of KV slice `(b, h)`, the
    /// attention output `[D]`, keyed by its output row (= the q row).
    fn reference(&self, b: usize, h: usize, rows: Vec<(usize, Vec<usize>)>, scale_log2: f64) -> RefRows {
        let d = self.head_dim;
        let row0 = (b * self.kv_heads + h) * self.cap;
        let slab = (rows_f64(&self.hk, row0, self.cap, d), rows_f64(&self.hv, row0, self.cap, d));
        std::thread::scope(|s| {
            let hs: Vec<_> = rows
                .into_iter()
                .map(|(r, pos)| {
                    let slab = &slab;
                    s.spawn(move || {
                        let qv = rows_f64(&self.hq, r, 1, d);
                        (r, attend(&qv, &slab.0, &slab.1, 0, &pos, d, scale_log2).0)
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().expect("reference thread")).collect()
        })
    }
}

/// Reference rows: `(flat output row, expected [D])`.
type RefRows = Vec<(usize, Vec<f64>)>;

/// Every output value finite, and the reference rows within [`OUT_TOL`].
fn check_out(out: &DeviceTensor, refs: &RefRows, d: usize) -> Result<(), Failure> {
    let host = out.download().map_err(|e| Failure::classify(e.into()))?;
    let got = bf16s(&host);
    if let Some(i) = got.iter().position(|x| !x.to_f32().is_finite()) {
        return Err(Failure::wrong(format!("non-finite output at flat index {i} ({})", got[i])));
    }
    let scale = refs.iter().flat_map(|(_, w)| w.iter()).fold(f64::MIN_POSITIVE, |m, x| m.max(x.abs()));
    let mut worst: f64 = 0.0;
    for (row, want) in refs {
        for (g, w) in got[row * d..(row + 1) * d].iter().zip(want) {
            worst = worst.max((g.to_f64() - w).abs() / scale);
        }
    }
    if worst > OUT_TOL {
        return Err(Failure::wrong(format!(
            "relative error {worst:.2e} > {OUT_TOL:e} on {} reference rows",
            refs.len()
        )));
    }
    Ok(())
}

fn kerr(e: KernelError) -> Failure {
    Failure::classify(e.into())
}

/// Times `launch` with CUDA events.
fn time(
    rt: &Runtime,
    warmup: usize,
    iters: usize,
    mut launch: impl FnMut(usize) -> Result<(), KernelError>,
) -> Result<TimingStats, Failure> {
    tessera_runtime::time(rt.stream(), warmup, iters.max(1), |i| {
        launch(i).map_err(|e| RuntimeError::Driver(e.to_string()))
    })
    .map_err(|e| Failure::classify(e.into()))
}

/// Poisons `out`, runs `launch` once, synchronizes and checks `out` against `refs`.
fn checked_run(
    rt: &Runtime,
    out: &DeviceTensor,
    refs: &RefRows,
    d: usize,
    launch: impl FnOnce() -> Result<(), KernelError>,
) -> Result<(), Failure> {
    out.poison().map_err(|e| Failure::classify(e.into()))?;
    launch().map_err(kerr)?;
    rt.synchronize().map_err(|e| Failure::classify(e.into()))?;
    check_out(out, refs, d)
}

/// Reference rows of a decode (`out [B, Hq, D]`): the G query heads of each checked slice.
fn decode_refs(x: &Qkv, s: &SparseShape, positions: impl Fn(usize, usize) -> Vec<usize>) -> RefRows {
    let hq = s.kv_heads * s.group;
    let sl2 = tessera_kernels::default_scale_log2(s.head_dim) as f64;
    let mut refs = Vec::new();
    for (b, h) in check_pairs(s.batch, s.kv_heads) {
        let pos = positions(b, h);
        let rows = (0..s.group).map(|g| (b * hq + h * s.group + g, pos.clone())).collect();
        refs.extend(x.reference(b, h, rows, sl2));
    }
    refs
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
        ShapeBucket::new()
            .pow2("b", s.batch as u64)
            .pow2("n", s.seq_len as u64)
            .exact("hkv", s.kv_heads as u64)
            .exact("g", s.group as u64)
            .exact("d", s.head_dim as u64)
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
        let refs = decode_refs(&x, s, |_, _| pos.clone());
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
        ShapeBucket::new()
            .pow2("b", s.batch as u64)
            .pow2("n", s.seq_len as u64)
            .exact("hkv", s.kv_heads as u64)
            .exact("g", s.group as u64)
            .exact("d", s.head_dim as u64)
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
        let refs = decode_refs(&x, s, |b, h| {
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

    /// `decode`: B = 1, prefix 128K, T ∈ {16, 64}; a `BxN` list gives both T per shape.
    fn shapes(&self, spec: &str) -> Result<Vec<TreeShape>> {
        let mut out = Vec::new();
        for (batch, prefix_len) in bxn_list(spec, &[(1, N)])? {
            for tree in [16, 64] {
                out.push(TreeShape { batch, kv_heads: HKV, group: G, prefix_len, head_dim: D, tree });
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
        let p = TreeParams {
            block_n: c.block_n,
            warps: c.warps,
            max_splits: c.max_splits,
            rows: c.rows_for(&s),
            ..TreeParams::new(s.group, s.head_dim, s.tree)
        };
        let op = TreeVerify::new(rt, p).map_err(kerr)?;
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
            ("WARPS", c.warps as i64),
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
    use crate::autotune::{DenseDecodeTarget, TARGETS};

    /// Shapes of the preset and a neighbour in the same bucket (a smaller N of the same
    /// power of two) have the same bucket and candidates; the heuristic is a candidate
    /// and its kernels build and emit (the key's source hash) on the CPU.
    fn contract<T: TuneTarget>(t: &T, neighbour: impl Fn(&T::Shape) -> T::Shape) -> Vec<usize> {
        let mut counts = Vec::new();
        for s in t.shapes("decode").unwrap() {
            let n = neighbour(&s);
            assert_ne!(n, s);
            assert_eq!(t.bucket(&n), t.bucket(&s), "{s}");
            let c = t.candidates(&s);
            assert_eq!(t.candidates(&n), c, "{s}");
            assert!(!c.is_empty());
            for sm in [108, 132] {
                let h = t.heuristic(&s, sm);
                assert!(c.contains(&h), "{}: heuristic {h} of {s} is not a candidate {c:?}", t.name());
                let k = t.kernels(&s, &h).unwrap();
                assert!(!tessera_codegen::emit::emit_cuda(&k[0]).source.is_empty());
            }
            counts.push(c.len());
        }
        counts
    }

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
        assert_eq!(names, ["dense_decode", "sink_window", "block_sparse", "tree_verify", "topk_select"]);
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
