//! GPU-checkable cases: random inputs, poisoned outputs, an f64 reference, and the same
//! case runnable on the interpreter (`run_cpu`) or a GPU (`run_gpu`: upload, launch the
//! host op's `launch` — i.e. the generated `Name::new(&rt, &cfg)?.launch(..)` — download).
//!
//! ```ignore
//! let rt = Runtime::new(0)?;
//! for mut c in tessera_kernels::all_gpu_cases(7) {
//!     c.run_gpu(&rt)?;
//!     println!("{} rel_err {:e}", c.name(), c.check()?);
//! }
//! ```

mod two_level;

pub use two_level::{centroid_two_level_gpu_cases, CentroidTwoLevelCase};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use tessera_codegen::host::{HostData, HostTensor};
use tessera_codegen::ir::DType;
use tessera_runtime::{DeviceTensor, Runtime};

use crate::centroid::{CentroidDecode, ClusterOut, KMeansCluster};
use crate::dense::DecodeParams;
use crate::error::{KernelError, TensorMeta};
use crate::hip::HipSelect;
use crate::lm_infinite::{LmInfiniteArgs, LmInfiniteDecode};
use crate::reference::{self as r, DecodeDims};
use crate::sink_window::union_len;
use crate::snapkv::{Pool, SnapKvCompress};
use crate::tree::TreeParams;
use crate::{
    BlockSparseDecode, DenseDecode, KvAppend, Landmarks, RopeTable, SinkWindowDecode, TopkBlockSelect, TreeVerify,
};

/// bf16 outputs: relative error (of the largest reference magnitude) allowed.
pub const BF16_TOL: f64 = 1e-2;
/// f16 outputs: the same, three more mantissa bits.
pub const F16_TOL: f64 = 5e-3;
/// LSE (f32, log2 units): error allowed relative to max(1, |largest LSE|).
pub const LSE_TOL: f64 = 1e-3;

/// One kernel problem with inputs, outputs and reference.
pub trait KernelCase {
    fn name(&self) -> String;
    /// Fills every output with NaN (integers: -12345).
    fn poison(&mut self);
    /// Poisons the outputs, then runs on the CPU interpreter.
    fn run_cpu(&mut self) -> Result<(), KernelError>;
    /// Poisons the outputs, uploads, launches on `rt`, synchronizes and downloads.
    fn run_gpu(&mut self, rt: &Runtime) -> Result<(), KernelError>;
    /// The worst relative error against the f64 reference, or why the outputs are wrong.
    fn check(&self) -> Result<f64, String>;
    /// Bytes the kernel(s) must read (the KV bytes attended, plus queries / landmarks).
    fn bytes_read(&self) -> u64;
}

/// The clusters a centroid lookup kept for (b, h) `bh`, decoded from its outputs
/// `(keep_start, keep_len, keep_count)` (host copies, `keep` slots per head) against that
/// head's cluster `starts` / `counts`: every range one non-empty cluster, at most `keep`,
/// ascending ids.
fn kept_cluster_ids(
    bh: usize,
    (ks, kl, kc): (&[f64], &[f64], &[f64]),
    keep: usize,
    starts: &[f64],
    counts: &[usize],
) -> Result<Vec<usize>, String> {
    let n = kc[bh] as usize;
    if kc[bh] < 0.0 || n > keep {
        return Err(format!("(b,h) {bh}: keep_count {} not in 0..={keep}", kc[bh]));
    }
    let mut got = Vec::with_capacity(n);
    for i in 0..n {
        let (s0, len) = (ks[bh * keep + i], kl[bh * keep + i]);
        match (0..counts.len()).find(|&c| starts[c] == s0 && counts[c] > 0) {
            Some(c) if counts[c] as f64 == len => got.push(c),
            _ => return Err(format!("(b,h) {bh}: slot {i} range ({s0}, {len}) is no cluster")),
        }
    }
    if !got.windows(2).all(|w| w[0] < w[1]) {
        return Err(format!("(b,h) {bh}: kept clusters not ascending: {got:?}"));
    }
    Ok(got)
}

fn poison(t: &mut HostTensor) {
    match &mut t.data {
        HostData::I32(v) => v.iter_mut().for_each(|x| *x = -12345),
        HostData::I64(v) => v.iter_mut().for_each(|x| *x = -12345),
        HostData::U32(v) => v.iter_mut().for_each(|x| *x = 12345),
        _ => *t = HostTensor::full(t.dtype(), &t.shape.clone(), f64::NAN),
    }
}

fn up(rt: &Runtime, t: &HostTensor) -> Result<DeviceTensor, KernelError> {
    Ok(DeviceTensor::upload(rt.stream(), t)?)
}

fn rand_bf16(rng: &mut StdRng, shape: &[usize], amp: f64) -> HostTensor {
    HostTensor::random(DType::BF16, shape, -amp, amp, rng)
}

fn within(what: &str, err: f64, tol: f64) -> Result<f64, String> {
    if err <= tol {
        Ok(err)
    } else {
        Err(format!("{what}: relative error {err:e} > {tol:e}"))
    }
}

fn check_lse(got: &HostTensor, want: &[f64]) -> Result<f64, String> {
    let g = got.to_f64();
    let scale = want.iter().filter(|x| x.is_finite()).fold(1.0f64, |m, x| m.max(x.abs()));
    let mut worst: f64 = 0.0;
    for (i, (a, b)) in g.iter().zip(want).enumerate() {
        let e = if a == b { 0.0 } else { (a - b).abs() / scale };
        if e.is_nan() || e > LSE_TOL {
            return Err(format!("lse element {i}: got {a}, want {b}"));
        }
        worst = worst.max(e);
    }
    Ok(worst)
}

/// Which split decoder a [`DecodeCase`] runs.
#[derive(Clone, Debug)]
pub enum DecodeKind {
    Dense,
    SinkWindow {
        sink: usize,
        window: usize,
    },
    /// `idx [B, Hkv, max_blocks] i32`, `count [B, Hkv] i32`.
    BlockSparse {
        block_size: usize,
        sink: usize,
        window: usize,
        idx: HostTensor,
        count: HostTensor,
    },
}

/// A random block selection: `count[b, h]` uniform in `[0, max_blocks]` (or `max_blocks`
/// when `full`), distinct indices of `[0, nb)` unless `dups` (then drawn with repetition).
pub fn random_selection(
    rng: &mut StdRng,
    batch: usize,
    kv_heads: usize,
    nb: usize,
    max_blocks: usize,
    dups: bool,
    full: bool,
) -> (HostTensor, HostTensor) {
    let mut idx = vec![-1.0; batch * kv_heads * max_blocks];
    let mut cnt = Vec::new();
    for bh in 0..batch * kv_heads {
        let hi = if dups { max_blocks } else { max_blocks.min(nb) };
        let c = if full { hi } else { rng.random_range(0..=hi) };
        let mut all: Vec<usize> = (0..nb).collect();
        all.shuffle(rng);
        for j in 0..c {
            idx[bh * max_blocks + j] = if dups { rng.random_range(0..nb) as f64 } else { all[j] as f64 };
        }
        cnt.push(c as f64);
    }
    (
        HostTensor::from_f64(DType::I32, &[batch, kv_heads, max_blocks], &idx),
        HostTensor::from_f64(DType::I32, &[batch, kv_heads], &cnt),
    )
}

/// Dense / sink+window / block-sparse decode.
pub struct DecodeCase {
    pub name: String,
    pub kind: DecodeKind,
    pub dims: DecodeDims,
    pub seq_len: usize,
    pub params: DecodeParams,
    pub q: HostTensor,
    pub k: HostTensor,
    pub v: HostTensor,
    pub out: HostTensor,
    /// `[B, Hq]`, written when `params.write_lse`.
    pub lse: HostTensor,
}

impl DecodeCase {
    pub fn new(
        name: &str,
        kind: DecodeKind,
        dims: DecodeDims,
        seq_len: usize,
        params: DecodeParams,
        seed: u64,
    ) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let DecodeDims { batch, kv_heads, group, cap, head_dim: d } = dims;
        let hq = kv_heads * group;
        DecodeCase {
            name: name.to_string(),
            kind,
            dims,
            seq_len,
            params,
            q: rand_bf16(&mut rng, &[batch, hq, d], 2.0),
            k: rand_bf16(&mut rng, &[batch, kv_heads, cap, d], 1.0),
            v: rand_bf16(&mut rng, &[batch, kv_heads, cap, d], 1.0),
            out: HostTensor::full(DType::BF16, &[batch, hq, d], f64::NAN),
            lse: HostTensor::full(DType::F32, &[batch, hq], f64::NAN),
        }
    }

    /// The same case with q, k, v and out in `dtype` (f16 or bf16; the values are the
    /// bf16-rounded ones, which f16 holds exactly at these magnitudes).
    pub fn in_dtype(mut self, dtype: DType) -> Self {
        let conv = |t: &HostTensor| HostTensor::from_f64(dtype, &t.shape, &t.to_f64());
        self.q = conv(&self.q);
        self.k = conv(&self.k);
        self.v = conv(&self.v);
        self.out = HostTensor::full(dtype, &self.out.shape.clone(), f64::NAN);
        self.params.dtype = dtype;
        self.name = format!("{} {dtype:?}", self.name);
        self
    }

    /// A block-sparse case with a random selection (`max_blocks` slots per (b, h)).
    #[allow(clippy::too_many_arguments)]
    pub fn block_sparse(
        name: &str,
        dims: DecodeDims,
        seq_len: usize,
        params: DecodeParams,
        block_size: usize,
        max_blocks: usize,
        sink: usize,
        window: usize,
        dups: bool,
        seed: u64,
    ) -> Self {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
        let nb = seq_len.div_ceil(block_size);
        let (idx, count) = random_selection(&mut rng, dims.batch, dims.kv_heads, nb, max_blocks, dups, false);
        let kind = DecodeKind::BlockSparse { block_size, sink, window, idx, count };
        DecodeCase::new(name, kind, dims, seq_len, params, seed)
    }

    /// The reference `(out, lse)`.
    pub fn reference(&self) -> (Vec<f64>, Vec<f64>) {
        let (q, k, v) = (self.q.to_f64(), self.k.to_f64(), self.v.to_f64());
        let n = self.seq_len;
        let sc = self.params.scale_log2 as f64;
        match &self.kind {
            DecodeKind::Dense => r::decode_with(self.dims, &q, &k, &v, sc, |_, _| (0..n).collect()),
            DecodeKind::SinkWindow { sink, window } => {
                let pos = r::sink_window_positions(n, *sink, *window);
                r::decode_with(self.dims, &q, &k, &v, sc, |_, _| pos.clone())
            }
            DecodeKind::BlockSparse { block_size, sink, window, idx, count } => {
                let (idx, count) = (idx.to_f64(), count.to_f64());
                let mb = idx.len() / count.len().max(1);
                let hkv = self.dims.kv_heads;
                r::decode_with(self.dims, &q, &k, &v, sc, |b, h| {
                    let bh = b * hkv + h;
                    let blocks: Vec<i64> =
                        idx[bh * mb..bh * mb + count[bh] as usize].iter().map(|&x| x as i64).collect();
                    r::block_sparse_positions(n, *sink, *window, &blocks, *block_size)
                })
            }
        }
    }
}

impl KernelCase for DecodeCase {
    fn name(&self) -> String {
        let d = self.dims;
        format!("{} B{} Hkv{} G{} D{} N{}/{}", self.name, d.batch, d.kv_heads, d.group, d.head_dim, self.seq_len, d.cap)
    }

    fn poison(&mut self) {
        poison(&mut self.out);
        poison(&mut self.lse);
    }

    fn run_cpu(&mut self) -> Result<(), KernelError> {
        self.poison();
        let p = self.params.clone();
        let lse = if p.write_lse { Some(&mut self.lse) } else { None };
        let (q, k, v, n) = (&self.q, &self.k, &self.v, self.seq_len);
        match &self.kind {
            DecodeKind::Dense => DenseDecode::cpu(p)?.run_cpu(q, k, v, n, &mut self.out, lse),
            DecodeKind::SinkWindow { sink, window } => {
                SinkWindowDecode::cpu(p)?.run_cpu(q, k, v, n, *sink, *window, &mut self.out, lse)
            }
            DecodeKind::BlockSparse { block_size, sink, window, idx, count } => BlockSparseDecode::cpu(p, *block_size)?
                .run_cpu(q, k, v, idx, count, n, *sink, *window, &mut self.out, lse),
        }
    }

    fn run_gpu(&mut self, rt: &Runtime) -> Result<(), KernelError> {
        self.poison();
        let p = self.params.clone();
        let (q, k, v) = (up(rt, &self.q)?, up(rt, &self.k)?, up(rt, &self.v)?);
        let out = DeviceTensor::poisoned(rt.stream(), self.params.dtype, &self.out.shape)?;
        let lse_d = DeviceTensor::poisoned(rt.stream(), DType::F32, &self.lse.shape)?;
        let lse = if p.write_lse { Some(&lse_d) } else { None };
        let n = self.seq_len;
        match &self.kind {
            DecodeKind::Dense => DenseDecode::new(rt, p)?.launch(rt, &q, &k, &v, n, &out, lse)?,
            DecodeKind::SinkWindow { sink, window } => {
                SinkWindowDecode::new(rt, p)?.launch(rt, &q, &k, &v, n, *sink, *window, &out, lse)?
            }
            DecodeKind::BlockSparse { block_size, sink, window, idx, count } => {
                let op = BlockSparseDecode::new(rt, p, *block_size)?;
                // Index ranges are checked on the host copies before anything is uploaded.
                let host_lse = self.params.write_lse.then_some(&self.lse as &dyn TensorMeta);
                op.check_args(&self.q, &self.k, &self.v, idx, count, n, *sink, *window, &self.out, host_lse)?;
                let (idx, count) = (up(rt, idx)?, up(rt, count)?);
                op.launch(rt, &q, &k, &v, &idx, &count, n, *sink, *window, &out, lse)?
            }
        }
        rt.synchronize()?;
        self.out = out.download()?;
        if self.params.write_lse {
            self.lse = lse_d.download()?;
        }
        Ok(())
    }

    fn check(&self) -> Result<f64, String> {
        let (o, l) = self.reference();
        let tol = if self.params.dtype == DType::F16 { F16_TOL } else { BF16_TOL };
        let e = within("out", r::rel_err(&self.out.to_f64(), &o)?, tol)?;
        if self.params.write_lse {
            check_lse(&self.lse, &l)?;
        }
        Ok(e)
    }

    fn bytes_read(&self) -> u64 {
        let d = self.dims;
        let keys = match &self.kind {
            DecodeKind::Dense => self.seq_len,
            DecodeKind::SinkWindow { sink, window } => union_len(self.seq_len, *sink, *window),
            DecodeKind::BlockSparse { block_size, sink, window, count, .. } => {
                let per: f64 = count.to_f64().iter().sum::<f64>() / count.numel().max(1) as f64;
                union_len(self.seq_len, *sink, *window) + (per * *block_size as f64) as usize
            }
        };
        (2 * d.batch * d.kv_heads * keys * d.head_dim * 2 + self.q.numel() * 2) as u64
    }
}

/// Landmarks from scratch + top-k block selection.
pub struct TopkCase {
    pub name: String,
    pub dims: DecodeDims,
    pub seq_len: usize,
    pub block_size: usize,
    pub k: usize,
    pub lm_tile: usize,
    pub sum_heads: bool,
    /// WARPS of [`TopkBlockSelect`] (4 from [`TopkCase::new`]).
    pub warps: usize,
    pub q: HostTensor,
    pub kc: HostTensor,
    /// `[B, Hkv, NB_cap, D]` f32 output of the landmarks kernel.
    pub landmarks: HostTensor,
    pub block_idx: HostTensor,
    pub block_count: HostTensor,
}

impl TopkCase {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: &str,
        dims: DecodeDims,
        seq_len: usize,
        block_size: usize,
        k: usize,
        lm_tile: usize,
        sum_heads: bool,
        seed: u64,
    ) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let DecodeDims { batch, kv_heads, group, cap, head_dim: d } = dims;
        let nb_cap = cap.div_ceil(block_size);
        TopkCase {
            name: name.to_string(),
            dims,
            seq_len,
            block_size,
            k,
            lm_tile,
            sum_heads,
            warps: 4,
            q: rand_bf16(&mut rng, &[batch, kv_heads * group, d], 2.0),
            kc: rand_bf16(&mut rng, &[batch, kv_heads, cap, d], 1.0),
            landmarks: HostTensor::full(DType::F32, &[batch, kv_heads, nb_cap, d], f64::NAN),
            block_idx: HostTensor::full(DType::I32, &[batch, kv_heads, k], 0.0),
            block_count: HostTensor::full(DType::I32, &[batch, kv_heads], 0.0),
        }
    }

    fn nb(&self) -> usize {
        self.seq_len.div_ceil(self.block_size)
    }

    fn max_cand(&self) -> usize {
        TopkBlockSelect::candidates(self.nb(), self.lm_tile, self.k).max(self.k).next_power_of_two()
    }
}

impl KernelCase for TopkCase {
    fn name(&self) -> String {
        let d = self.dims;
        format!(
            "{} B{} Hkv{} G{} D{} N{} bs{} k{} lm_tile{}{}",
            self.name,
            d.batch,
            d.kv_heads,
            d.group,
            d.head_dim,
            self.seq_len,
            self.block_size,
            self.k,
            self.lm_tile,
            if self.sum_heads { " sum" } else { " max" }
        )
    }

    fn poison(&mut self) {
        poison(&mut self.landmarks);
        poison(&mut self.block_idx);
        poison(&mut self.block_count);
    }

    fn run_cpu(&mut self) -> Result<(), KernelError> {
        self.poison();
        let d = self.dims;
        Landmarks::cpu(d.head_dim, self.block_size)?.run_cpu(&self.kc, &mut self.landmarks, self.seq_len)?;
        let op = TopkBlockSelect::cpu(
            d.group,
            d.head_dim,
            self.k,
            self.lm_tile,
            self.sum_heads,
            self.max_cand(),
            self.warps,
        )?;
        op.run_cpu(&self.q, &self.landmarks, self.nb(), &mut self.block_idx, &mut self.block_count)
    }

    fn run_gpu(&mut self, rt: &Runtime) -> Result<(), KernelError> {
        self.poison();
        let d = self.dims;
        let (q, kc) = (up(rt, &self.q)?, up(rt, &self.kc)?);
        let lm = DeviceTensor::poisoned(rt.stream(), DType::F32, &self.landmarks.shape)?;
        let bi = DeviceTensor::poisoned(rt.stream(), DType::I32, &self.block_idx.shape)?;
        let bc = DeviceTensor::poisoned(rt.stream(), DType::I32, &self.block_count.shape)?;
        Landmarks::new(rt, d.head_dim, self.block_size)?.launch(rt, &kc, &lm, self.seq_len)?;
        let op = TopkBlockSelect::new(
            rt,
            d.group,
            d.head_dim,
            self.k,
            self.lm_tile,
            self.sum_heads,
            self.max_cand(),
            self.warps,
        )?;
        op.launch(rt, &q, &lm, self.nb(), &bi, &bc)?;
        rt.synchronize()?;
        self.landmarks = lm.download()?;
        self.block_idx = bi.download()?;
        self.block_count = bc.download()?;
        Ok(())
    }

    /// Landmarks within f32 tolerance; the selection: `count = min(k, nb)`, indices
    /// distinct and in range, sorted by descending score, and their reference scores equal
    /// the reference top-k scores (up to 1e-4 relative: near-ties may swap blocks).
    fn check(&self) -> Result<f64, String> {
        let d = self.dims;
        let (nb, nb_cap) = (self.nb(), self.landmarks.shape[2]);
        let want_lm =
            r::landmarks(&self.kc.to_f64(), d.batch, d.kv_heads, d.cap, d.head_dim, self.seq_len, self.block_size);
        let got_all = self.landmarks.to_f64();
        let mut got_lm = Vec::with_capacity(want_lm.len());
        for bh in 0..d.batch * d.kv_heads {
            got_lm.extend_from_slice(&got_all[bh * nb_cap * d.head_dim..][..nb * d.head_dim]);
        }
        let e = within("landmarks", r::rel_err(&got_lm, &want_lm)?, 1e-5)?;
        // Scores from the exact landmarks.
        let mut lm_cap = vec![0.0; got_all.len()];
        for bh in 0..d.batch * d.kv_heads {
            lm_cap[bh * nb_cap * d.head_dim..][..nb * d.head_dim]
                .copy_from_slice(&want_lm[bh * nb * d.head_dim..][..nb * d.head_dim]);
        }
        let scores = r::block_scores(&self.q.to_f64(), &lm_cap, d, nb_cap, nb, self.sum_heads);
        let (idx, cnt) = (self.block_idx.to_f64(), self.block_count.to_f64());
        let want_cnt = self.k.min(nb);
        for bh in 0..d.batch * d.kv_heads {
            let row = &scores[bh * nb..(bh + 1) * nb];
            if cnt[bh] as usize != want_cnt {
                return Err(format!("(b,h) {bh}: count {} want {want_cnt}", cnt[bh]));
            }
            let sel = &idx[bh * self.k..(bh + 1) * self.k];
            let mut seen = std::collections::BTreeSet::new();
            let mut sorted: Vec<f64> = row.to_vec();
            sorted.sort_by(|a, b| b.total_cmp(a));
            let mag = row.iter().fold(1e-30f64, |m, x| m.max(x.abs()));
            for (j, &x) in sel.iter().enumerate() {
                if j >= want_cnt {
                    if x != -1.0 {
                        return Err(format!("(b,h) {bh}: padding slot {j} = {x}, want -1"));
                    }
                    continue;
                }
                let b = x as i64;
                if b < 0 || b as usize >= nb || !seen.insert(b) {
                    return Err(format!("(b,h) {bh}: slot {j} = {x} out of range or repeated"));
                }
                if (row[b as usize] - sorted[j]).abs() > 1e-4 * mag {
                    return Err(format!(
                        "(b,h) {bh}: slot {j} block {b} scores {} but rank {j} is {}",
                        row[b as usize], sorted[j]
                    ));
                }
            }
        }
        Ok(e)
    }

    fn bytes_read(&self) -> u64 {
        let d = self.dims;
        (d.batch * d.kv_heads * self.nb() * d.head_dim * 4 + self.q.numel() * 2) as u64
    }
}

/// Random ancestor-or-self masks of `t`-node trees (node `i > 0` has a random parent
/// `< i`), one tree per batch.
pub fn random_trees(rng: &mut StdRng, batch: usize, t: usize) -> Vec<u64> {
    let mut out = Vec::new();
    for _ in 0..batch {
        let mut m: Vec<u64> = Vec::with_capacity(t);
        for i in 0..t {
            let parent = if i == 0 { 0 } else { m[rng.random_range(0..i)] };
            m.push(parent | (1u64 << i));
        }
        out.extend(m);
    }
    out
}

/// Tree verification.
pub struct TreeCase {
    pub name: String,
    pub dims: DecodeDims,
    pub prefix: usize,
    pub t: usize,
    pub params: TreeParams,
    pub anc: HostTensor,
    pub q: HostTensor,
    pub k: HostTensor,
    pub v: HostTensor,
    pub out: HostTensor,
    pub lse: HostTensor,
}

impl TreeCase {
    pub fn new(name: &str, dims: DecodeDims, prefix: usize, t: usize, params: TreeParams, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let DecodeDims { batch, kv_heads, group, cap, head_dim: d } = dims;
        let rows = kv_heads * group * t;
        let anc = random_trees(&mut rng, batch, t);
        TreeCase {
            name: name.to_string(),
            dims,
            prefix,
            t,
            params,
            anc: HostTensor { shape: vec![batch, t], data: HostData::I64(anc.iter().map(|&x| x as i64).collect()) },
            q: rand_bf16(&mut rng, &[batch, rows, d], 2.0),
            k: rand_bf16(&mut rng, &[batch, kv_heads, cap, d], 1.0),
            v: rand_bf16(&mut rng, &[batch, kv_heads, cap, d], 1.0),
            out: HostTensor::full(DType::BF16, &[batch, rows, d], f64::NAN),
            lse: HostTensor::full(DType::F32, &[batch, rows], f64::NAN),
        }
    }

    fn anc_bits(&self) -> Vec<u64> {
        match &self.anc.data {
            HostData::I64(v) => v.iter().map(|&x| x as u64).collect(),
            _ => unreachable!("anc is i64"),
        }
    }
}

impl KernelCase for TreeCase {
    fn name(&self) -> String {
        let d = self.dims;
        format!(
            "{} B{} Hkv{} G{} D{} prefix{} T{}",
            self.name, d.batch, d.kv_heads, d.group, d.head_dim, self.prefix, self.t
        )
    }

    fn poison(&mut self) {
        poison(&mut self.out);
        poison(&mut self.lse);
    }

    fn run_cpu(&mut self) -> Result<(), KernelError> {
        self.poison();
        let lse = if self.params.write_lse { Some(&mut self.lse) } else { None };
        TreeVerify::cpu(self.params.clone())?.run_cpu(
            &self.q,
            &self.k,
            &self.v,
            &self.anc,
            self.prefix,
            &mut self.out,
            lse,
        )
    }

    fn run_gpu(&mut self, rt: &Runtime) -> Result<(), KernelError> {
        self.poison();
        let op = TreeVerify::new(rt, self.params.clone())?;
        let host_lse = self.params.write_lse.then_some(&self.lse as &dyn TensorMeta);
        op.check_args(&self.q, &self.k, &self.v, &self.anc, self.prefix, &self.out, host_lse)?;
        let (q, k, v, anc) = (up(rt, &self.q)?, up(rt, &self.k)?, up(rt, &self.v)?, up(rt, &self.anc)?);
        let out = DeviceTensor::poisoned(rt.stream(), DType::BF16, &self.out.shape)?;
        let lse_d = DeviceTensor::poisoned(rt.stream(), DType::F32, &self.lse.shape)?;
        let lse = if self.params.write_lse { Some(&lse_d) } else { None };
        op.launch(rt, &q, &k, &v, &anc, self.prefix, &out, lse)?;
        rt.synchronize()?;
        self.out = out.download()?;
        if self.params.write_lse {
            self.lse = lse_d.download()?;
        }
        Ok(())
    }

    fn check(&self) -> Result<f64, String> {
        let sc = self.params.scale_log2 as f64;
        let (q, k, v) = (self.q.to_f64(), self.k.to_f64(), self.v.to_f64());
        let (o, l) = r::tree_verify(self.dims, &q, &k, &v, &self.anc_bits(), self.prefix, self.t, sc);
        let e = within("out", r::rel_err(&self.out.to_f64(), &o)?, BF16_TOL)?;
        if self.params.write_lse {
            check_lse(&self.lse, &l)?;
        }
        Ok(e)
    }

    fn bytes_read(&self) -> u64 {
        let d = self.dims;
        (2 * d.batch * d.kv_heads * (self.prefix + self.t) * d.head_dim * 2 + self.q.numel() * 2) as u64
    }
}

/// KV append with incremental landmark update, starting from a cache whose first
/// `pos[b]` rows are filled and whose landmarks are exact for them.
pub struct AppendCase {
    pub name: String,
    pub dims: DecodeDims,
    pub block_size: usize,
    pub pos: HostTensor,
    pub k_new: HostTensor,
    pub v_new: HostTensor,
    pub k_cache: HostTensor,
    pub v_cache: HostTensor,
    pub landmarks: HostTensor,
    k0: HostTensor,
    v0: HostTensor,
    lm0: HostTensor,
}

impl AppendCase {
    pub fn new(name: &str, dims: DecodeDims, block_size: usize, pos: &[usize], t_new: usize, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let DecodeDims { batch, kv_heads, cap, head_dim: d, .. } = dims;
        assert_eq!(pos.len(), batch);
        let k0 = rand_bf16(&mut rng, &[batch, kv_heads, cap, d], 1.0);
        let v0 = rand_bf16(&mut rng, &[batch, kv_heads, cap, d], 1.0);
        let nb_cap = cap.div_ceil(block_size);
        // Exact landmarks of each batch's first pos[b] rows; NaN past them (must not be read).
        let kf = k0.to_f64();
        let mut lm = vec![f64::NAN; batch * kv_heads * nb_cap * d];
        for (b, &p) in pos.iter().enumerate() {
            let one = &kf[b * kv_heads * cap * d..(b + 1) * kv_heads * cap * d];
            let l = r::landmarks(one, 1, kv_heads, cap, d, p, block_size);
            let nb = p.div_ceil(block_size);
            for h in 0..kv_heads {
                let dst = ((b * kv_heads + h) * nb_cap) * d;
                lm[dst..dst + nb * d].copy_from_slice(&l[h * nb * d..(h + 1) * nb * d]);
            }
        }
        let lm0 = HostTensor::from_f64(DType::F32, &[batch, kv_heads, nb_cap, d], &lm);
        let pos_t = HostTensor::from_f64(DType::I32, &[batch], &pos.iter().map(|&x| x as f64).collect::<Vec<_>>());
        AppendCase {
            name: name.to_string(),
            dims,
            block_size,
            pos: pos_t,
            k_new: rand_bf16(&mut rng, &[batch, kv_heads, t_new, d], 1.0),
            v_new: rand_bf16(&mut rng, &[batch, kv_heads, t_new, d], 1.0),
            k_cache: k0.clone(),
            v_cache: v0.clone(),
            landmarks: lm0.clone(),
            k0,
            v0,
            lm0,
        }
    }

    fn reset(&mut self) {
        self.k_cache = self.k0.clone();
        self.v_cache = self.v0.clone();
        self.landmarks = self.lm0.clone();
    }
}

impl KernelCase for AppendCase {
    fn name(&self) -> String {
        let d = self.dims;
        format!(
            "{} B{} Hkv{} D{} N{} bs{} T{}",
            self.name, d.batch, d.kv_heads, d.head_dim, d.cap, self.block_size, self.k_new.shape[2]
        )
    }

    /// The cache is in-place: poisoning means restoring the initial cache.
    fn poison(&mut self) {
        self.reset();
    }

    fn run_cpu(&mut self) -> Result<(), KernelError> {
        self.reset();
        let op = KvAppend::cpu(self.dims.head_dim, self.block_size, true)?;
        op.run_cpu(&self.k_new, &self.v_new, &self.pos, &mut self.k_cache, &mut self.v_cache, &mut self.landmarks)
    }

    fn run_gpu(&mut self, rt: &Runtime) -> Result<(), KernelError> {
        self.reset();
        let op = KvAppend::new(rt, self.dims.head_dim, self.block_size, true)?;
        let (kn, vn, pos) = (up(rt, &self.k_new)?, up(rt, &self.v_new)?, up(rt, &self.pos)?);
        let (kc, vc, lm) = (up(rt, &self.k_cache)?, up(rt, &self.v_cache)?, up(rt, &self.landmarks)?);
        op.check_args(&self.k_new, &self.v_new, &self.pos, &self.k_cache, &self.v_cache, &self.landmarks)?;
        op.launch(rt, &kn, &vn, &pos, &kc, &vc, &lm)?;
        rt.synchronize()?;
        self.k_cache = kc.download()?;
        self.v_cache = vc.download()?;
        self.landmarks = lm.download()?;
        Ok(())
    }

    /// Caches: exact (new rows in place, every other row untouched); landmarks of every
    /// block below `ceil((pos + T) / bs)`: the from-scratch means within 1e-5.
    #[allow(clippy::needless_range_loop)]
    fn check(&self) -> Result<f64, String> {
        let DecodeDims { batch, kv_heads, cap, head_dim: d, .. } = self.dims;
        let t = self.k_new.shape[2];
        let pos = self.pos.to_f64();
        let nb_cap = self.landmarks.shape[2];
        let (mut wk, mut wv) = (self.k0.to_f64(), self.v0.to_f64());
        let (kn, vn) = (self.k_new.to_f64(), self.v_new.to_f64());
        for b in 0..batch {
            for h in 0..kv_heads {
                for i in 0..t {
                    let dst = ((b * kv_heads + h) * cap + pos[b] as usize + i) * d;
                    let src = ((b * kv_heads + h) * t + i) * d;
                    wk[dst..dst + d].copy_from_slice(&kn[src..src + d]);
                    wv[dst..dst + d].copy_from_slice(&vn[src..src + d]);
                }
            }
        }
        if self.k_cache.to_f64() != wk || self.v_cache.to_f64() != wv {
            return Err("cache rows differ from the expected append".into());
        }
        let got = self.landmarks.to_f64();
        let mut worst: f64 = 0.0;
        for b in 0..batch {
            let n = pos[b] as usize + t;
            let one = &wk[b * kv_heads * cap * d..(b + 1) * kv_heads * cap * d];
            let want = r::landmarks(one, 1, kv_heads, cap, d, n, self.block_size);
            let nb = n.div_ceil(self.block_size);
            for h in 0..kv_heads {
                let g = &got[((b * kv_heads + h) * nb_cap) * d..][..nb * d];
                let e = r::rel_err(g, &want[h * nb * d..(h + 1) * nb * d])?;
                worst = worst.max(within("landmarks", e, 1e-5)?);
            }
        }
        Ok(worst)
    }

    fn bytes_read(&self) -> u64 {
        (self.k_new.numel() * 2 * 2) as u64
    }
}

fn dims(batch: usize, kv_heads: usize, group: usize, cap: usize, head_dim: usize) -> DecodeDims {
    DecodeDims { batch, kv_heads, group, cap, head_dim }
}

fn lse_params(group: usize, head_dim: usize) -> DecodeParams {
    DecodeParams { write_lse: true, ..DecodeParams::new(group, head_dim) }
}

/// The GPU suite: every kernel on fresh random inputs (seeded), odd lengths, GQA 1–8,
/// head dims 64 and 128, edge cases (empty selections, window > sequence, T = 1 trees).
/// LM-Infinite decode: keys before RoPE, rotated in the kernel with distances capped.
pub struct LmInfiniteCase {
    pub dims: DecodeDims,
    pub args: LmInfiniteArgs,
    pub params: DecodeParams,
    pub q: HostTensor,
    pub k: HostTensor,
    pub v: HostTensor,
    pub rope: RopeTable,
    pub out: HostTensor,
    pub lse: HostTensor,
}

impl LmInfiniteCase {
    pub fn new(dims: DecodeDims, args: LmInfiniteArgs, params: DecodeParams, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let hq = dims.kv_heads * dims.group;
        let kv = [dims.batch, dims.kv_heads, dims.cap, dims.head_dim];
        LmInfiniteCase {
            dims,
            args,
            q: rand_bf16(&mut rng, &[dims.batch, hq, dims.head_dim], 1.0),
            k: rand_bf16(&mut rng, &kv, 1.0),
            v: rand_bf16(&mut rng, &kv, 1.0),
            rope: RopeTable::new(dims.head_dim, dims.cap, 500000.0, 1.0),
            out: HostTensor::full(DType::BF16, &[dims.batch, hq, dims.head_dim], 0.0),
            lse: HostTensor::full(DType::F32, &[dims.batch, hq], 0.0),
            params,
        }
    }
}

impl KernelCase for LmInfiniteCase {
    fn name(&self) -> String {
        let (d, a) = (self.dims, self.args);
        format!(
            "lm_infinite B{} Hkv{} G{} D{} N{} sink{} window{} cap{}",
            d.batch, d.kv_heads, d.group, d.head_dim, a.seq_len, a.sink, a.window, a.cap
        )
    }

    fn poison(&mut self) {
        poison(&mut self.out);
        poison(&mut self.lse);
    }

    fn run_cpu(&mut self) -> Result<(), KernelError> {
        self.poison();
        let op = LmInfiniteDecode::cpu(self.params.clone())?;
        let (c, s) = (&self.rope.cos, &self.rope.sin);
        op.run_cpu(&self.q, &self.k, &self.v, c, s, self.args, &mut self.out, Some(&mut self.lse))
    }

    fn run_gpu(&mut self, rt: &Runtime) -> Result<(), KernelError> {
        self.poison();
        let op = LmInfiniteDecode::new(rt, self.params.clone())?;
        let (q, k, v) = (up(rt, &self.q)?, up(rt, &self.k)?, up(rt, &self.v)?);
        let (cos, sin) = self.rope.upload(rt)?;
        let out = DeviceTensor::poisoned(rt.stream(), DType::BF16, &self.out.shape)?;
        let lse = DeviceTensor::poisoned(rt.stream(), DType::F32, &self.lse.shape)?;
        op.launch(rt, &q, &k, &v, &cos, &sin, self.args, &out, Some(&lse))?;
        rt.synchronize()?;
        self.out = out.download()?;
        self.lse = lse.download()?;
        Ok(())
    }

    fn check(&self) -> Result<f64, String> {
        let a = self.args;
        let (o, l) = r::lm_infinite(
            self.dims,
            &self.q.to_f64(),
            &self.k.to_f64(),
            &self.v.to_f64(),
            &self.rope.cos.to_f64(),
            &self.rope.sin.to_f64(),
            (a.seq_len, a.sink, a.window, a.cap),
            self.params.scale_log2 as f64,
        );
        let e = within("out", r::rel_err(&self.out.to_f64(), &o)?, BF16_TOL)?;
        check_lse(&self.lse, &l)?;
        Ok(e)
    }

    fn bytes_read(&self) -> u64 {
        let (d, a) = (self.dims, self.args);
        let keys = union_len(a.seq_len, a.sink, a.window);
        (2 * d.batch * d.kv_heads * keys * d.head_dim * 2 + keys * d.head_dim * 4 + self.q.numel() * 2) as u64
    }
}

/// LM-Infinite cases: the cap inside the window, and a long context with a short cap.
pub fn lm_infinite_gpu_cases(seed: u64) -> Vec<LmInfiniteCase> {
    let args = |seq_len, sink, window, cap| LmInfiniteArgs { seq_len, sink, window, cap };
    vec![
        LmInfiniteCase::new(dims(2, 8, 4, 9000, 128), args(8999, 64, 2048, 1024), lse_params(4, 128), seed),
        LmInfiniteCase::new(dims(1, 2, 3, 3001, 64), args(3001, 4, 1000, 300), lse_params(3, 64), seed + 1),
    ]
}

pub fn all_gpu_cases(seed: u64) -> Vec<Box<dyn KernelCase>> {
    let mut v: Vec<Box<dyn KernelCase>> = Vec::new();
    for c in lm_infinite_gpu_cases(seed) {
        v.push(Box::new(c));
    }
    for c in dense_gpu_cases(seed) {
        v.push(Box::new(c));
    }
    for c in sink_window_gpu_cases(seed) {
        v.push(Box::new(c));
    }
    for c in block_sparse_gpu_cases(seed) {
        v.push(Box::new(c));
    }
    for c in topk_gpu_cases(seed) {
        v.push(Box::new(c));
    }
    for c in tree_gpu_cases(seed) {
        v.push(Box::new(c));
    }
    for c in append_gpu_cases(seed) {
        v.push(Box::new(c));
    }
    for c in hip_gpu_cases(seed) {
        v.push(Box::new(c));
    }
    for c in snapkv_gpu_cases(seed) {
        v.push(Box::new(c));
    }
    for c in centroid_gpu_cases(seed) {
        v.push(Box::new(c));
    }
    for c in centroid_two_level_gpu_cases(seed) {
        v.push(Box::new(c));
    }
    v
}

/// [`lse_params`] with three pipeline buffers (the `STAGES` tune value besides 2).
fn staged3(group: usize, head_dim: usize) -> DecodeParams {
    DecodeParams { stages: 3, ..lse_params(group, head_dim) }
}

pub fn dense_gpu_cases(seed: u64) -> Vec<DecodeCase> {
    vec![
        DecodeCase::new("dense", DecodeKind::Dense, dims(2, 8, 4, 8191, 128), 8191, lse_params(4, 128), seed),
        DecodeCase::new("dense", DecodeKind::Dense, dims(3, 2, 8, 5000, 64), 4097, lse_params(8, 64), seed + 1),
        DecodeCase::new("dense", DecodeKind::Dense, dims(1, 3, 1, 777, 128), 777, DecodeParams::new(1, 128), seed + 2),
        DecodeCase::new("dense", DecodeKind::Dense, dims(2, 2, 3, 1000, 64), 999, lse_params(3, 64), seed + 3),
        DecodeCase::new("dense STAGES=3", DecodeKind::Dense, dims(2, 4, 4, 6001, 128), 6000, staged3(4, 128), seed + 4),
        DecodeCase::new("dense", DecodeKind::Dense, dims(2, 8, 4, 5000, 128), 4999, lse_params(4, 128), seed + 5)
            .in_dtype(DType::F16),
    ]
}

pub fn sink_window_gpu_cases(seed: u64) -> Vec<DecodeCase> {
    let sw = |s, w| DecodeKind::SinkWindow { sink: s, window: w };
    vec![
        DecodeCase::new("sink_window", sw(64, 4096), dims(2, 8, 4, 20001, 128), 20001, lse_params(4, 128), seed),
        DecodeCase::new("sink_window", sw(4, 10000), dims(2, 2, 8, 3001, 64), 3001, lse_params(8, 64), seed + 1),
        DecodeCase::new("sink_window", sw(300, 300), dims(1, 2, 3, 555, 64), 555, lse_params(3, 64), seed + 2),
        DecodeCase::new(
            "sink_window STAGES=3",
            sw(17, 3000),
            dims(2, 4, 4, 9000, 128),
            8999,
            staged3(4, 128),
            seed + 3,
        ),
        DecodeCase::new("sink_window", sw(32, 1000), dims(1, 2, 8, 4000, 64), 3999, lse_params(8, 64), seed + 4)
            .in_dtype(DType::F16),
    ]
}

pub fn block_sparse_gpu_cases(seed: u64) -> Vec<DecodeCase> {
    vec![
        DecodeCase::block_sparse(
            "block_sparse",
            dims(2, 8, 4, 30000, 128),
            30000,
            lse_params(4, 128),
            128,
            64,
            64,
            1024,
            false,
            seed,
        ),
        DecodeCase::block_sparse(
            "block_sparse STAGES=3",
            dims(2, 4, 4, 20000, 128),
            19999,
            staged3(4, 128),
            128,
            40,
            16,
            512,
            false,
            seed + 7,
        ),
        DecodeCase::block_sparse(
            "block_sparse",
            dims(2, 2, 8, 5001, 64),
            5001,
            lse_params(8, 64),
            64,
            20,
            0,
            0,
            false,
            seed + 1,
        ),
        DecodeCase::block_sparse(
            "block_sparse",
            dims(1, 3, 3, 2000, 64),
            1999,
            lse_params(3, 64),
            16,
            40,
            16,
            100,
            true,
            seed + 2,
        ),
        DecodeCase::block_sparse(
            "block_sparse",
            dims(2, 2, 4, 9000, 128),
            9000,
            lse_params(4, 128),
            64,
            24,
            8,
            256,
            false,
            seed + 8,
        )
        .in_dtype(DType::F16),
    ]
}

pub fn topk_gpu_cases(seed: u64) -> Vec<TopkCase> {
    vec![
        TopkCase::new("topk_block_select", dims(2, 8, 4, 32768, 128), 32700, 64, 64, 128, false, seed),
        TopkCase::new("topk_block_select", dims(2, 8, 4, 32768, 128), 32700, 64, 64, 32, false, seed + 2),
        TopkCase::new("topk_block_select", dims(2, 2, 8, 5000, 64), 4999, 16, 16, 64, true, seed + 1),
    ]
}

pub fn tree_gpu_cases(seed: u64) -> Vec<TreeCase> {
    vec![
        TreeCase::new(
            "tree_verify",
            dims(1, 8, 4, 16400, 128),
            16000,
            16,
            TreeParams { write_lse: true, ..TreeParams::new(4, 128, 16) },
            seed,
        ),
        TreeCase::new("tree_verify", dims(2, 2, 3, 3000, 64), 2900, 64, TreeParams::new(3, 64, 64), seed + 1),
        TreeCase::new(
            "tree_verify",
            dims(2, 2, 8, 900, 64),
            777,
            1,
            TreeParams { write_lse: true, ..TreeParams::new(8, 64, 1) },
            seed + 2,
        ),
    ]
}

pub fn append_gpu_cases(seed: u64) -> Vec<AppendCase> {
    vec![
        AppendCase::new("kv_append", dims(2, 8, 1, 4096, 128), 64, &[1000, 4000], 17, seed),
        AppendCase::new("kv_append", dims(3, 2, 1, 600, 64), 16, &[0, 15, 577], 1, seed + 1),
    ]
}

/// HiP tree-search selection ([`crate::hip::HipSelect`]) vs [`crate::hip::reference_select`].
pub struct HipCase {
    pub name: String,
    pub dims: DecodeDims,
    pub seq_len: usize,
    pub window: usize,
    pub bk: usize,
    pub k_nodes: usize,
    pub child_tile: usize,
    pub q: HostTensor,
    pub k: HostTensor,
    pub block_idx: HostTensor,
    pub block_count: HostTensor,
}

impl HipCase {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: &str,
        dims: DecodeDims,
        seq_len: usize,
        window: usize,
        bk: usize,
        k_nodes: usize,
        child_tile: usize,
        seed: u64,
    ) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let DecodeDims { batch, kv_heads, group, cap, head_dim: d } = dims;
        HipCase {
            name: name.to_string(),
            dims,
            seq_len,
            window,
            bk,
            k_nodes,
            child_tile,
            q: rand_bf16(&mut rng, &[batch, kv_heads * group, d], 2.0),
            k: rand_bf16(&mut rng, &[batch, kv_heads, cap, d], 1.0),
            block_idx: HostTensor::full(DType::I32, &[batch, kv_heads, k_nodes], 0.0),
            block_count: HostTensor::full(DType::I32, &[batch, kv_heads], 0.0),
        }
    }
}

impl KernelCase for HipCase {
    fn name(&self) -> String {
        let d = self.dims;
        format!(
            "{} B{} Hkv{} G{} D{} N{} w{} bk{} K{}",
            self.name, d.batch, d.kv_heads, d.group, d.head_dim, self.seq_len, self.window, self.bk, self.k_nodes
        )
    }

    fn poison(&mut self) {
        poison(&mut self.block_idx);
        poison(&mut self.block_count);
    }

    fn run_cpu(&mut self) -> Result<(), KernelError> {
        self.poison();
        let d = self.dims;
        let op = HipSelect::cpu(d.group, d.head_dim, self.bk, self.k_nodes, self.child_tile)?;
        op.run_cpu(&self.q, &self.k, self.seq_len, self.window, &mut self.block_idx, &mut self.block_count)?;
        Ok(())
    }

    fn run_gpu(&mut self, rt: &Runtime) -> Result<(), KernelError> {
        self.poison();
        let d = self.dims;
        let op = HipSelect::new(rt, d.group, d.head_dim, self.bk, self.k_nodes, self.child_tile)?;
        op.check_args(&self.q, &self.k, self.seq_len, self.window, &self.block_idx, &self.block_count)?;
        let (q, k) = (up(rt, &self.q)?, up(rt, &self.k)?);
        let bi = DeviceTensor::poisoned(rt.stream(), DType::I32, &self.block_idx.shape)?;
        let bc = DeviceTensor::poisoned(rt.stream(), DType::I32, &self.block_count.shape)?;
        op.launch(rt, &q, &k, self.seq_len, self.window, &bi, &bc)?;
        rt.synchronize()?;
        self.block_idx = bi.download()?;
        self.block_count = bc.download()?;
        Ok(())
    }

    /// The selection must equal the reference exactly (as in `tests/hip_select.rs`):
    /// ascending block ids, `min(K, nb)` of them, -1 padding.
    fn check(&self) -> Result<f64, String> {
        let d = self.dims;
        let (q, k) = (self.q.to_f64(), self.k.to_f64());
        let want = crate::hip::reference_select(d, &q, &k, self.seq_len, self.window, self.bk, self.k_nodes);
        let (idx, cnt) = (self.block_idx.to_f64(), self.block_count.to_f64());
        let kn = self.k_nodes;
        for (bh, w) in want.iter().enumerate() {
            if cnt[bh] != w.len() as f64 {
                return Err(format!("(b,h) {bh}: count {} want {}", cnt[bh], w.len()));
            }
            let row = &idx[bh * kn..(bh + 1) * kn];
            for (j, &x) in row.iter().enumerate() {
                let want_j = w.get(j).map_or(-1.0, |&b| b as f64);
                if x != want_j {
                    return Err(format!("(b,h) {bh}: slot {j} = {x}, want {want_j}"));
                }
            }
        }
        Ok(0.0)
    }

    fn bytes_read(&self) -> u64 {
        // Per step: 2K children × BK key rows; plus the queries.
        let d = self.dims;
        let nb = self.seq_len.saturating_sub(self.window).div_ceil(self.bk);
        let steps = crate::hip::refine_steps(nb, self.k_nodes) as u64;
        let rows = (2 * self.k_nodes * self.bk) as u64;
        steps * (d.batch * d.kv_heads) as u64 * rows * d.head_dim as u64 * 2 + self.q.numel() as u64 * 2
    }
}

/// SnapKV selection + compression ([`crate::snapkv::SnapKvCompress`]) vs
/// [`crate::snapkv::reference`].
pub struct SnapKvCase {
    pub name: String,
    pub dims: DecodeDims,
    pub window: usize,
    pub t: usize,
    pub capacity: usize,
    pub kernel_size: usize,
    pub pool: Pool,
    pub pool_tile: usize,
    pub q_obs: HostTensor,
    pub k: HostTensor,
    pub v: HostTensor,
    pub votes: HostTensor,
    pub keep_idx: HostTensor,
    pub keep_count: HostTensor,
    pub k_out: HostTensor,
    pub v_out: HostTensor,
}

impl SnapKvCase {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: &str,
        dims: DecodeDims,
        window: usize,
        t: usize,
        capacity: usize,
        kernel_size: usize,
        pool: Pool,
        pool_tile: usize,
        seed: u64,
    ) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let DecodeDims { batch: b, kv_heads: h, group: g, cap, head_dim: d } = dims;
        let keep = capacity - window;
        SnapKvCase {
            name: name.to_string(),
            dims,
            window,
            t,
            capacity,
            kernel_size,
            pool,
            pool_tile,
            q_obs: rand_bf16(&mut rng, &[b, h, g * window, d], 1.0),
            k: rand_bf16(&mut rng, &[b, h, cap, d], 1.0),
            v: rand_bf16(&mut rng, &[b, h, cap, d], 1.0),
            votes: HostTensor::full(DType::F32, &[b, h, cap], f64::NAN),
            keep_idx: HostTensor::full(DType::I32, &[b, h, keep], 0.0),
            keep_count: HostTensor::full(DType::I32, &[b, h], 0.0),
            k_out: HostTensor::full(DType::BF16, &[b, h, capacity, d], f64::NAN),
            v_out: HostTensor::full(DType::BF16, &[b, h, capacity, d], f64::NAN),
        }
    }

    fn max_cand(&self) -> usize {
        (self.t - self.window).div_ceil(self.pool_tile) * (self.capacity - self.window)
    }

    fn scale_log2(&self) -> f64 {
        crate::default_scale_log2(self.dims.head_dim) as f64
    }
}

impl KernelCase for SnapKvCase {
    fn name(&self) -> String {
        let d = self.dims;
        format!(
            "{} B{} Hkv{} G{} D{} t{} w{} C{} k{} {:?}",
            self.name,
            d.batch,
            d.kv_heads,
            d.group,
            d.head_dim,
            self.t,
            self.window,
            self.capacity,
            self.kernel_size,
            self.pool
        )
    }

    fn poison(&mut self) {
        for t in [&mut self.votes, &mut self.keep_idx, &mut self.keep_count, &mut self.k_out, &mut self.v_out] {
            poison(t);
        }
    }

    fn run_cpu(&mut self) -> Result<(), KernelError> {
        self.poison();
        let d = self.dims;
        let op = SnapKvCompress::cpu(
            d.group,
            self.window,
            d.head_dim,
            self.capacity,
            self.kernel_size,
            self.pool,
            self.pool_tile,
            self.max_cand(),
        )?;
        op.run_cpu(
            &self.q_obs,
            &self.k,
            &self.v,
            self.t,
            &mut self.votes,
            &mut self.keep_idx,
            &mut self.keep_count,
            &mut self.k_out,
            &mut self.v_out,
        )?;
        Ok(())
    }

    fn run_gpu(&mut self, rt: &Runtime) -> Result<(), KernelError> {
        self.poison();
        let d = self.dims;
        let op = SnapKvCompress::new(
            rt,
            d.group,
            self.window,
            d.head_dim,
            self.capacity,
            self.kernel_size,
            self.pool,
            self.pool_tile,
            self.max_cand(),
        )?;
        op.check_args(
            &self.q_obs,
            &self.k,
            &self.v,
            self.t,
            &self.keep_idx,
            &self.keep_count,
            &self.k_out,
            &self.v_out,
        )?;
        let (q, k, v) = (up(rt, &self.q_obs)?, up(rt, &self.k)?, up(rt, &self.v)?);
        let st = rt.stream();
        let votes = DeviceTensor::poisoned(st, DType::F32, &self.votes.shape)?;
        let ki = DeviceTensor::poisoned(st, DType::I32, &self.keep_idx.shape)?;
        let kc = DeviceTensor::poisoned(st, DType::I32, &self.keep_count.shape)?;
        let ko = DeviceTensor::poisoned(st, DType::BF16, &self.k_out.shape)?;
        let vo = DeviceTensor::poisoned(st, DType::BF16, &self.v_out.shape)?;
        op.launch(rt, &q, &k, &v, self.t, &votes, &ki, &kc, &ko, &vo)?;
        rt.synchronize()?;
        self.votes = votes.download()?;
        self.keep_idx = ki.download()?;
        self.keep_count = kc.download()?;
        self.k_out = ko.download()?;
        self.v_out = vo.download()?;
        Ok(())
    }

    /// As `tests/snapkv_select.rs`: the pooled kernel votes within 1e-4 (of the largest
    /// pooled vote) of the reference, the selection ascending and equal to the reference
    /// up to near-ties (the kept reference scores match the top scores within 1e-4), the
    /// compressed rows bit-exact. Returns the worst pooled-vote error.
    fn check(&self) -> Result<f64, String> {
        let d = self.dims;
        let (w, t, c, dd) = (self.window, self.t, self.capacity, d.head_dim);
        let cap = d.cap;
        let keep = c - w;
        let (kf, vf) = (self.k.to_f64(), self.v.to_f64());
        let want = crate::snapkv::reference(
            d,
            w,
            &self.q_obs.to_f64(),
            &kf,
            t,
            c,
            self.kernel_size,
            self.pool,
            self.scale_log2(),
        );
        let (vt, it, ct) = (self.votes.to_f64(), self.keep_idx.to_f64(), self.keep_count.to_f64());
        let (kof, vof) = (self.k_out.to_f64(), self.v_out.to_f64());
        let prefix = t - w;
        let mut worst: f64 = 0.0;
        for (bh, (pooled, kept)) in want.iter().enumerate() {
            let got: Vec<f32> = vt[bh * cap..][..prefix].iter().map(|&x| x as f32).collect();
            let gp = crate::snapkv::pool(&got, self.kernel_size, self.pool);
            let mag = pooled.iter().fold(1e-30f64, |m, x| m.max(x.abs()));
            for (j, (a, r)) in gp.iter().zip(pooled).enumerate() {
                let e = (*a as f64 - r).abs() / mag;
                if e.is_nan() || e > 1e-4 {
                    return Err(format!("(b,h) {bh} pooled vote {j}: {a} vs {r}"));
                }
                worst = worst.max(e);
            }
            if ct[bh] as usize != kept.len() {
                return Err(format!("(b,h) {bh}: keep_count {} want {}", ct[bh], kept.len()));
            }
            let sel: Vec<usize> = it[bh * keep..][..kept.len()].iter().map(|&x| x as usize).collect();
            if !sel.windows(2).all(|p| p[0] < p[1]) || sel.iter().any(|&j| j >= prefix) {
                return Err(format!("(b,h) {bh}: selection not ascending or out of the prefix"));
            }
            let mut sorted = pooled.clone();
            sorted.sort_by(|a, b| b.total_cmp(a));
            let mut got_scores: Vec<f64> = sel.iter().map(|&j| pooled[j]).collect();
            got_scores.sort_by(|a, b| b.total_cmp(a));
            for (x, y) in got_scores.iter().zip(&sorted) {
                if (x - y).abs() > 1e-4 * mag {
                    return Err(format!("(b,h) {bh}: kept score {x} vs top {y}"));
                }
            }
            let rows: Vec<usize> = sel.iter().copied().chain(t - w..t).collect();
            for (r, &pos) in rows.iter().enumerate() {
                let (src, dst) = ((bh * cap + pos) * dd, (bh * c + r) * dd);
                if kof[dst..dst + dd] != kf[src..src + dd] || vof[dst..dst + dd] != vf[src..src + dd] {
                    return Err(format!("(b,h) {bh}: compressed row {r} is not position {pos}"));
                }
            }
        }
        Ok(worst)
    }

    fn bytes_read(&self) -> u64 {
        // Two passes over the t keys (stats, votes), then the C kept rows of K and V.
        let d = self.dims;
        let bh = (d.batch * d.kv_heads) as u64;
        bh * (2 * self.t + 2 * self.capacity) as u64 * d.head_dim as u64 * 2 + self.q_obs.numel() as u64 * 2
    }
}

pub fn hip_gpu_cases(seed: u64) -> Vec<HipCase> {
    vec![
        HipCase::new("hip_select", dims(2, 4, 4, 30011, 128), 30000, 1024, 16, 64, 64, seed),
        HipCase::new("hip_select", dims(1, 3, 3, 5003, 64), 4999, 100, 2, 128, 32, seed + 1),
    ]
}

pub fn snapkv_gpu_cases(seed: u64) -> Vec<SnapKvCase> {
    vec![
        SnapKvCase::new("snapkv_compress", dims(1, 4, 4, 16007, 128), 32, 16000, 1024, 7, Pool::Max, 2048, seed),
        SnapKvCase::new("snapkv_compress", dims(2, 2, 3, 4100, 64), 16, 4099, 257, 4, Pool::Avg, 1024, seed + 1),
    ]
}

/// Centroid lookup end to end: k-means of the fixed context ([`KMeansCluster`], `iters`
/// iterations from [`crate::centroid::init_centroids`]), the permuted cache, then the
/// decode ([`CentroidDecode`]: scores, select, range attention + recent rows, combine).
pub struct CentroidCase {
    pub name: String,
    pub dims: DecodeDims,
    pub fixed_len: usize,
    pub seq_len: usize,
    pub iters: usize,
    pub normalize: bool,
    pub keep: usize,
    pub pack_slots: usize,
    pub threshold: f32,
    pub params: DecodeParams,
    pub q: HostTensor,
    pub k: HostTensor,
    pub v: HostTensor,
    /// `[B, Hkv, C, D] f32`.
    pub init: HostTensor,
    pub clusters: Option<ClusterOut>,
    pub k_perm: HostTensor,
    pub v_perm: HostTensor,
    pub keep_start: HostTensor,
    pub keep_len: HostTensor,
    pub keep_count: HostTensor,
    pub out: HostTensor,
    pub lse: HostTensor,
}

impl CentroidCase {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: &str,
        dims: DecodeDims,
        fixed_len: usize,
        seq_len: usize,
        clusters: usize,
        iters: usize,
        keep: usize,
        pack_slots: usize,
        threshold: f32,
        seed: u64,
    ) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let DecodeDims { batch: b, kv_heads: h, group: g, cap, head_dim: d } = dims;
        let k = rand_bf16(&mut rng, &[b, h, cap, d], 1.0);
        let kf = k.to_f64();
        let mut init = Vec::with_capacity(b * h * clusters * d);
        for bh in 0..b * h {
            let keys = &kf[bh * cap * d..(bh * cap + fixed_len) * d];
            init.extend(crate::centroid::init_centroids(keys, fixed_len, d, clusters, true, seed ^ bh as u64));
        }
        let keep_shape = [b, h, keep];
        CentroidCase {
            name: name.to_string(),
            dims,
            fixed_len,
            seq_len,
            iters,
            normalize: true,
            keep,
            pack_slots,
            threshold,
            params: lse_params(g, d),
            q: rand_bf16(&mut rng, &[b, h * g, d], 2.0),
            v: rand_bf16(&mut rng, &[b, h, cap, d], 1.0),
            k,
            init: HostTensor::from_f64(DType::F32, &[b, h, clusters, d], &init),
            clusters: None,
            k_perm: HostTensor::full(DType::BF16, &[b, h, cap, d], 0.0),
            v_perm: HostTensor::full(DType::BF16, &[b, h, cap, d], 0.0),
            keep_start: HostTensor::full(DType::I32, &keep_shape, 0.0),
            keep_len: HostTensor::full(DType::I32, &keep_shape, 0.0),
            keep_count: HostTensor::full(DType::I32, &[b, h], 0.0),
            out: HostTensor::full(DType::BF16, &[b, h * g, d], f64::NAN),
            lse: HostTensor::full(DType::F32, &[b, h * g], f64::NAN),
        }
    }

    fn num_clusters(&self) -> usize {
        self.init.shape[2]
    }

    /// Checks the clustering outputs: every label is the nearest of the last assignment's
    /// centroids up to 1e-4, counts / starts / perm are the stable counting sort of the
    /// labels, centroids are the raw-key means within 1e-4 (of the largest |key|), the
    /// permuted caches are exact. Returns the worst centroid error.
    #[allow(clippy::needless_range_loop)]
    fn check_clusters(&self) -> Result<f64, String> {
        let co = self.clusters.as_ref().ok_or("not run")?;
        let DecodeDims { batch, kv_heads, cap, head_dim: d, .. } = self.dims;
        let (c, tf) = (self.num_clusters(), self.fixed_len);
        let (kf, vf) = (self.k.to_f64(), self.v.to_f64());
        let (lab, cen, acen) = (co.labels.to_f64(), co.centroids.to_f64(), co.assign_centroids.to_f64());
        let (cnt, st, perm) = (co.counts.to_f64(), co.starts.to_f64(), co.perm.to_f64());
        let (kp, vp) = (self.k_perm.to_f64(), self.v_perm.to_f64());
        let kmax = kf.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        let mut worst: f64 = 0.0;
        for bh in 0..batch * kv_heads {
            let keys = &kf[bh * cap * d..(bh * cap + tf) * d];
            let labels: Vec<usize> = lab[bh * tf..(bh + 1) * tf].iter().map(|&x| x as usize).collect();
            if labels.iter().any(|&l| l >= c) {
                return Err(format!("(b,h) {bh}: label out of range"));
            }
            if self.iters > 0 {
                let ac = &acen[bh * c * d..(bh + 1) * c * d];
                for (j, &l) in labels.iter().enumerate() {
                    let row = &keys[j * d..(j + 1) * d];
                    let n: f64 = row.iter().map(|x| x * x).sum::<f64>().sqrt();
                    let x: Vec<f64> = row.iter().map(|v| if self.normalize && n > 0.0 { v / n } else { *v }).collect();
                    let s = |ci: usize| {
                        let cc = &ac[ci * d..(ci + 1) * d];
                        x.iter().zip(cc).map(|(a, b)| a * b).sum::<f64>() - 0.5 * cc.iter().map(|v| v * v).sum::<f64>()
                    };
                    let best = (0..c).map(s).fold(f64::NEG_INFINITY, f64::max);
                    if s(l) < best - 1e-4 * (1.0 + best.abs()) {
                        return Err(format!("(b,h) {bh} key {j}: label {l} scores {} < best {best}", s(l)));
                    }
                }
            }
            let (wp, ws) = crate::centroid::cluster_layout(&labels, c);
            let got_st: Vec<usize> = st[bh * (c + 1)..(bh + 1) * (c + 1)].iter().map(|&x| x as usize).collect();
            let got_p: Vec<usize> = perm[bh * tf..(bh + 1) * tf].iter().map(|&x| x as usize).collect();
            if got_st != ws || got_p != wp {
                return Err(format!("(b,h) {bh}: starts/perm are not the counting sort of the labels"));
            }
            for ci in 0..c {
                let n = ws[ci + 1] - ws[ci];
                if cnt[bh * c + ci] as usize != n {
                    return Err(format!("(b,h) {bh}: count of cluster {ci} {} want {n}", cnt[bh * c + ci]));
                }
                if n == 0 {
                    continue;
                }
                for e in 0..d {
                    let mean = wp[ws[ci]..ws[ci + 1]].iter().map(|&j| keys[j * d + e]).sum::<f64>() / n as f64;
                    let err = (cen[(bh * c + ci) * d + e] - mean).abs() / kmax.max(1e-30);
                    if err.is_nan() || err > 1e-4 {
                        return Err(format!(
                            "(b,h) {bh}: centroid {ci}[{e}] {} vs mean {mean}",
                            cen[(bh * c + ci) * d + e]
                        ));
                    }
                    worst = worst.max(err);
                }
            }
            for r in 0..self.seq_len {
                let src = if r < tf { wp[r] } else { r };
                let (a, b) = ((bh * cap + r) * d, (bh * cap + src) * d);
                if kp[a..a + d] != kf[b..b + d] || vp[a..a + d] != vf[b..b + d] {
                    return Err(format!("(b,h) {bh}: permuted row {r} is not row {src}"));
                }
            }
        }
        Ok(worst)
    }

    /// Kept clusters (ids) of each (b, h) from `keep_start`/`keep_len`/`keep_count`,
    /// checked against the f64 scores up to near-ties (1e-3 in log2 units).
    fn check_selection(&self) -> Result<Vec<Vec<usize>>, String> {
        let co = self.clusters.as_ref().ok_or("not run")?;
        let DecodeDims { batch, kv_heads, group, head_dim: d, .. } = self.dims;
        let c = self.num_clusters();
        let (cen, cnt, st) = (co.centroids.to_f64(), co.counts.to_f64(), co.starts.to_f64());
        let (ks, kl, kc) = (self.keep_start.to_f64(), self.keep_len.to_f64(), self.keep_count.to_f64());
        let q = self.q.to_f64();
        let mut out = Vec::new();
        let tol = 1e-3;
        for bh in 0..batch * kv_heads {
            let counts: Vec<usize> = cnt[bh * c..(bh + 1) * c].iter().map(|&x| x as usize).collect();
            let starts = &st[bh * (c + 1)..(bh + 1) * (c + 1)];
            let qs = &q[bh * group * d..(bh + 1) * group * d];
            let scores = crate::centroid::score_clusters(
                qs,
                &cen[bh * c * d..(bh + 1) * c * d],
                &counts,
                d,
                self.params.scale_log2 as f64,
            );
            let want = crate::centroid::select_clusters(&scores, self.keep, self.threshold as f64);
            let got = kept_cluster_ids(bh, (&ks, &kl, &kc), self.keep, starts, &counts)?;
            let mut gs: Vec<f64> = got.iter().map(|&i| scores[i]).collect();
            let mut ws: Vec<f64> = want.iter().map(|&i| scores[i]).collect();
            gs.sort_by(|a, b| b.total_cmp(a));
            ws.sort_by(|a, b| b.total_cmp(a));
            for (x, y) in gs.iter().zip(&ws) {
                if (x - y).abs() > tol {
                    return Err(format!("(b,h) {bh}: kept score {x} vs reference {y}"));
                }
            }
            let thr = self.threshold as f64;
            let extra = if gs.len() > ws.len() { &gs[ws.len()..] } else { &ws[gs.len()..] };
            if extra.iter().any(|x| (x - thr).abs() > tol) {
                return Err(format!("(b,h) {bh}: kept {} clusters, reference {}", gs.len(), ws.len()));
            }
            out.push(got);
        }
        Ok(out)
    }
}

impl KernelCase for CentroidCase {
    fn name(&self) -> String {
        let d = self.dims;
        format!(
            "{} B{} Hkv{} G{} D{} Tf{} N{} C{} I{} keep{} thr{}",
            self.name,
            d.batch,
            d.kv_heads,
            d.group,
            d.head_dim,
            self.fixed_len,
            self.seq_len,
            self.num_clusters(),
            self.iters,
            self.keep,
            self.threshold
        )
    }

    fn poison(&mut self) {
        self.clusters = None;
        for t in [
            &mut self.k_perm,
            &mut self.v_perm,
            &mut self.keep_start,
            &mut self.keep_len,
            &mut self.keep_count,
            &mut self.out,
            &mut self.lse,
        ] {
            poison(t);
        }
    }

    fn run_cpu(&mut self) -> Result<(), KernelError> {
        self.poison();
        let d = self.dims;
        let km = KMeansCluster::cpu(d.head_dim, self.normalize, 64, 64)?;
        let co = km.run_cpu(
            &self.k,
            &self.v,
            self.fixed_len,
            self.seq_len,
            &self.init,
            self.iters,
            &mut self.k_perm,
            &mut self.v_perm,
        )?;
        let op = CentroidDecode::cpu(self.params.clone(), self.keep, self.num_clusters(), self.pack_slots)?;
        op.run_cpu(
            &self.q,
            &self.k_perm,
            &self.v_perm,
            &co.centroids,
            &co.counts,
            &co.starts,
            self.fixed_len,
            self.seq_len,
            self.threshold,
            &mut self.keep_start,
            &mut self.keep_len,
            &mut self.keep_count,
            &mut self.out,
            Some(&mut self.lse),
        )?;
        self.clusters = Some(co);
        Ok(())
    }

    fn run_gpu(&mut self, rt: &Runtime) -> Result<(), KernelError> {
        self.poison();
        let d = self.dims;
        let st = rt.stream();
        let km = KMeansCluster::new(rt, d.head_dim, self.normalize, 64, 64)?;
        km.check_args(&self.k, &self.v, self.fixed_len, self.seq_len, &self.init, &self.k_perm, &self.v_perm)?;
        let (k, v, init) = (up(rt, &self.k)?, up(rt, &self.v)?, up(rt, &self.init)?);
        let kp = DeviceTensor::poisoned(st, DType::BF16, &self.k_perm.shape)?;
        let vp = DeviceTensor::poisoned(st, DType::BF16, &self.v_perm.shape)?;
        let dc = km.launch(rt, &k, &v, self.fixed_len, self.seq_len, &init, self.iters, &kp, &vp)?;
        let op = CentroidDecode::new(rt, self.params.clone(), self.keep, self.num_clusters(), self.pack_slots)?;
        let q = up(rt, &self.q)?;
        let ks = DeviceTensor::poisoned(st, DType::I32, &self.keep_start.shape)?;
        let kl = DeviceTensor::poisoned(st, DType::I32, &self.keep_len.shape)?;
        let kc = DeviceTensor::poisoned(st, DType::I32, &self.keep_count.shape)?;
        let out = DeviceTensor::poisoned(st, DType::BF16, &self.out.shape)?;
        let lse = DeviceTensor::poisoned(st, DType::F32, &self.lse.shape)?;
        // `starts` was built on the host from the labels: check it before the launch.
        let (_, starts_h) = crate::centroid::layout_tensors(&dc.labels, self.num_clusters());
        op.check_args(
            &self.q,
            &self.k_perm,
            &self.v_perm,
            &self.init,
            &HostTensor::full(DType::I32, &[d.batch, d.kv_heads, self.num_clusters()], 0.0),
            &starts_h,
            self.fixed_len,
            self.seq_len,
            &self.keep_start,
            &self.keep_len,
            &self.keep_count,
            &self.out,
            Some(&self.lse),
        )?;
        op.launch(
            rt,
            &q,
            &kp,
            &vp,
            &dc.centroids,
            &dc.counts,
            &dc.starts,
            self.fixed_len,
            self.seq_len,
            self.threshold,
            &ks,
            &kl,
            &kc,
            &out,
            Some(&lse),
        )?;
        rt.synchronize()?;
        self.k_perm = kp.download()?;
        self.v_perm = vp.download()?;
        self.keep_start = ks.download()?;
        self.keep_len = kl.download()?;
        self.keep_count = kc.download()?;
        self.out = out.download()?;
        self.lse = lse.download()?;
        self.clusters = Some(ClusterOut {
            labels: dc.labels,
            centroids: dc.centroids.download()?,
            assign_centroids: dc.assign_centroids.download()?,
            counts: dc.counts.download()?,
            starts: dc.starts.download()?,
            perm: dc.perm,
        });
        Ok(())
    }

    /// Clustering consistency, selection up to near-ties, then the output / LSE against
    /// the f64 decode over the kept clusters' rows + the recent rows.
    fn check(&self) -> Result<f64, String> {
        self.check_clusters()?;
        let kept = self.check_selection()?;
        let co = self.clusters.as_ref().ok_or("not run")?;
        let c = self.num_clusters();
        let st = co.starts.to_f64();
        let hkv = self.dims.kv_heads;
        let (q, k, v) = (self.q.to_f64(), self.k_perm.to_f64(), self.v_perm.to_f64());
        let (tf, n) = (self.fixed_len, self.seq_len);
        let (o, l) = r::decode_with(self.dims, &q, &k, &v, self.params.scale_log2 as f64, |b, h| {
            let bh = b * hkv + h;
            let mut pos: Vec<usize> = Vec::new();
            for &ci in &kept[bh] {
                pos.extend(st[bh * (c + 1) + ci] as usize..st[bh * (c + 1) + ci + 1] as usize);
            }
            pos.extend(tf..n);
            pos
        });
        let e = within("out", r::rel_err(&self.out.to_f64(), &o)?, BF16_TOL)?;
        check_lse(&self.lse, &l)?;
        Ok(e)
    }

    fn bytes_read(&self) -> u64 {
        // Decode only: centroids (f32) + kept rows (mean per (b, h)) + recent rows + q.
        let d = self.dims;
        let kept: f64 = self.keep_len.to_f64().iter().filter(|x| **x > 0.0).sum::<f64>();
        let bh = (d.batch * d.kv_heads) as f64;
        let rows = kept + bh * (self.seq_len - self.fixed_len) as f64;
        let cent = bh * (self.num_clusters() * d.head_dim * 4) as f64;
        (rows * (2 * d.head_dim * 2) as f64 + cent) as u64 + self.q.numel() as u64 * 2
    }
}

pub fn centroid_gpu_cases(seed: u64) -> Vec<CentroidCase> {
    vec![
        // 5% clusters, top 10% of them, GQA 4, D 128.
        CentroidCase::new("centroid", dims(2, 4, 4, 12000, 128), 11000, 11517, 550, 4, 56, 8, f32::NEG_INFINITY, seed),
        // Threshold variant (keep clusters whose estimated per-key probability beats the
        // uniform 1/T_f ≈ 2^-12.1), GQA 3, D 64.
        CentroidCase::new("centroid", dims(1, 3, 3, 5000, 64), 4500, 4999, 225, 3, 40, 5, -12.0, seed + 1),
    ]
}
