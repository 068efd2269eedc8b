//! Split-KV decoders of `tessera-kernels` as [`TuneTarget`]s, over their split kernel's
//! tune space and the combine's MAX_SPLITS:
//!
//! * `dense` tunes [`DenseDecode`], the op the reference decoder runs for every decode
//!   step (see `decoder/src/gpu/ops.rs`). Its heuristic is the decoder's untuned choice
//!   ([`tessera_kernels::DecodeParams::new`] with [`decode_max_splits`]), so dispatch
//!   without a record runs what the decoder ran before it dispatched through the tuning
//!   database.
//! * `lm_infinite` tunes [`LmInfiniteDecode`] (sink + window over keys stored before
//!   RoPE, distances capped), Llama-3 RoPE (base 500000).
//!
//! Worker side as in [`super::ops`]: fresh random bf16 q/k/v from a seeded xorshift,
//! output poisoned before the checked run, the G query heads of the first and last
//! (batch, KV head) slices against the f64 reference, then CUDA-event timing with the
//! intermediates in a reused [`Scratch`].

use crate::autotune::decode_bucket_dims;
use std::fmt;

use anyhow::Result;
use serde::{Deserialize, Serialize};
use tessera_codegen::host::HostTensor;
use tessera_codegen::ir::{DType, Kernel};
use tessera_decoder::gpu::plan::decode_max_splits;

use tessera_kernels::dense::DenseDecodeSplit;
use tessera_kernels::lm_infinite::LmInfiniteDecodeSplit;
use tessera_kernels::reference::{lm_infinite, DecodeDims};
use tessera_kernels::sink_window::union_len;
use tessera_kernels::{DenseDecode, LmInfiniteArgs, LmInfiniteDecode, RopeTable, Scratch};
use tessera_runtime::{DeviceTensor, Runtime, TimingStats};

use super::common::{
    bxn_list, check_pairs, checked_run, combine_kernel, decode_refs, kerr, split_candidates, split_kernel_config,
    tile_knobs, time, Qkv, RefRows, SplitConfig, D, G, HKV, N,
};
use super::key::decode_bucket;
use super::target::{Failure, TuneTarget};
use crate::decode::DecodeShape;
use crate::inputs::rows_f64;

/// The max_splits candidates of `dense`. All of them at every bucket: the heuristic is
/// any of 16..=128 depending on the GPU's SM count (and the candidates may not depend
/// on it), and a count a short sequence cannot use only yields fewer, longer splits.
const DENSE_SPLITS: [usize; 5] = [8, 16, 32, 64, 128];

/// Dense decode ([`DenseDecode`]): every key of `[0, N)`.
pub struct DenseTarget;

/// Inputs of a dense job.
pub struct DenseBench {
    shape: DecodeShape,
    x: Qkv,
    out: DeviceTensor,
    refs: RefRows,
}

impl DenseTarget {
    /// The [`tessera_kernels::DecodeParams`] a config stands for at `shape` (what the
    /// decoder builds [`DenseDecode`] with).
    pub fn params(shape: &DecodeShape, c: &SplitConfig) -> tessera_kernels::DecodeParams {
        c.params(shape.group, shape.head_dim)
    }
}

impl TuneTarget for DenseTarget {
    type Shape = DecodeShape;
    type Config = SplitConfig;
    type Bench = DenseBench;

    fn name(&self) -> &'static str {
        "dense"
    }

    /// `decode`: B ∈ {1, 8} × N ∈ {32K, 128K}.
    fn shapes(&self, spec: &str) -> Result<Vec<DecodeShape>> {
        Ok(bxn_list(spec, &[(1, 32768), (8, 32768), (1, N), (8, N)])?
            .into_iter()
            .map(|(batch, seq_len)| DecodeShape { batch, kv_heads: HKV, group: G, seq_len, head_dim: D })
            .collect())
    }

    /// As `dense_decode`'s: batch and N by powers of two, heads and head dim exact.
    fn bucket(&self, s: &DecodeShape) -> String {
        decode_bucket(s)
    }

    /// The split kernel's tune space × max_splits {8, 16, 32, 64, 128}.
    fn candidates(&self, _s: &DecodeShape) -> Vec<SplitConfig> {
        let mut out = Vec::new();
        for (block_n, warps, stages) in tile_knobs(DenseDecodeSplit::tune_space()) {
            for max_splits in DENSE_SPLITS {
                out.push(SplitConfig { block_n, warps, max_splits, stages });
            }
        }
        out
    }

    /// The decoder's untuned choice: [`tessera_kernels::DecodeParams::new`]'s tiles
    /// (BLOCK_N 64, 4 warps, 2 stages) and [`decode_max_splits`] (enough splits to cover
    /// the GPU twice, a power of two in 16..=128).
    fn heuristic(&self, s: &DecodeShape, sm_count: usize) -> SplitConfig {
        SplitConfig {
            max_splits: decode_max_splits(s.batch, s.kv_heads, sm_count),
            ..SplitConfig::heuristic(s.group, s.head_dim)
        }
    }

    /// The split kernel only. The combine's source depends on nothing but max_splits,
    /// and the key's source hash (these kernels at the heuristic) must not: the
    /// heuristic's max_splits follows the exact batch ([`decode_max_splits`]), so with
    /// the combine in it two batches of one bucket would have two keys. The combines
    /// compile in the worker on first use (five of them, disk-cached).
    fn kernels(&self, s: &DecodeShape, c: &SplitConfig) -> Result<Vec<Kernel>> {
        Ok(vec![DenseDecodeSplit::build(&split_kernel_config(s.group, s.head_dim, c))?])
    }

    fn prepare(&self, rt: &Runtime, s: &DecodeShape, seed: u64) -> Result<DenseBench> {
        let hq = s.q_heads();
        let x = Qkv::new(rt, &[s.batch, hq, s.head_dim], [s.batch, s.kv_heads, s.seq_len, s.head_dim], seed)?;
        let all: Vec<usize> = (0..s.seq_len).collect();
        let refs = decode_refs(&x, s.batch, s.group, |_, _| all.clone());
        let out = DeviceTensor::poisoned(rt.stream(), DType::BF16, &[s.batch, hq, s.head_dim])?;
        Ok(DenseBench { shape: *s, x, out, refs })
    }

    fn run_candidate(
        &self,
        rt: &Runtime,
        b: &mut DenseBench,
        c: &SplitConfig,
        warmup: usize,
        iters: usize,
    ) -> Result<TimingStats, Failure> {
        let s = b.shape;
        let op = DenseDecode::new(rt, Self::params(&s, c)).map_err(kerr)?;
        let scratch = Scratch::new();
        let (x, out) = (&b.x, &b.out);
        let launch = || op.launch_with(rt, &scratch, &x.q, &x.k, &x.v, s.seq_len, out, None);
        checked_run(rt, out, &b.refs, s.head_dim, launch)?;
        time(rt, warmup, iters, |_| launch())
    }
}

// ---------------------------------------------------------------------------------------
// lm_infinite

/// An LM-Infinite decode: sink + window keys, rotated in the kernel with the query–key
/// distance capped at `cap`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LmInfiniteShape {
    pub batch: usize,
    pub kv_heads: usize,
    pub group: usize,
    pub seq_len: usize,
    pub head_dim: usize,
    pub sink: usize,
    pub window: usize,
    /// Largest distance the rotation shows (the pre-training context).
    pub cap: usize,
}

impl fmt::Display for LmInfiniteShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "B={} N={} S={} W={} cap={}", self.batch, self.seq_len, self.sink, self.window, self.cap)
    }
}

/// RoPE base of the preset (Llama 3).
const ROPE_BASE: f64 = 500000.0;

/// LM-Infinite decode ([`LmInfiniteDecode`]): sink 64 + window 4096, distance cap 4096
/// (LM-Infinite's window = cap = the pre-training length; here half of Llama 3's 8K, so
/// the sink keys are rotated at a capped distance).
pub struct LmInfiniteTarget;

/// Inputs of an LM-Infinite job.
pub struct LmInfiniteBench {
    shape: LmInfiniteShape,
    x: Qkv,
    cos: DeviceTensor,
    sin: DeviceTensor,
    out: DeviceTensor,
    refs: RefRows,
}

impl LmInfiniteShape {
    fn args(&self) -> LmInfiniteArgs {
        LmInfiniteArgs { seq_len: self.seq_len, sink: self.sink, window: self.window, cap: self.cap }
    }
}

impl TuneTarget for LmInfiniteTarget {
    type Shape = LmInfiniteShape;
    type Config = SplitConfig;
    type Bench = LmInfiniteBench;

    fn name(&self) -> &'static str {
        "lm_infinite"
    }

    /// `decode`: B ∈ {1, 8}, N = 128K, sink 64, window 4096, cap 4096.
    fn shapes(&self, spec: &str) -> Result<Vec<LmInfiniteShape>> {
        Ok(bxn_list(spec, &[(1, N), (8, N)])?
            .into_iter()
            .map(|(batch, seq_len)| LmInfiniteShape {
                batch,
                kv_heads: HKV,
                group: G,
                seq_len,
                head_dim: D,
                sink: 64,
                window: 4096,
                cap: 4096,
            })
            .collect())
    }

    fn bucket(&self, s: &LmInfiniteShape) -> String {
        decode_bucket_dims(s.batch, s.seq_len, s.kv_heads, s.group, s.head_dim)
            .exact("sink", s.sink as u64)
            .exact("window", s.window as u64)
            .exact("cap", s.cap as u64)
            .build()
    }

    /// BLOCK_N × WARPS of the split kernel's tune space × max_splits {2, …, 32} (above 16
    /// only while a split keeps a tile of the bucket's keys).
    fn candidates(&self, s: &LmInfiniteShape) -> Vec<SplitConfig> {
        let keys = union_len(s.seq_len.next_power_of_two(), s.sink, s.window);
        split_candidates(&tile_knobs(LmInfiniteDecodeSplit::tune_space()), &[2, 4, 8, 16, 32], keys)
    }

    /// [`tessera_kernels::DecodeParams::new`]'s defaults (what untuned callers build).
    fn heuristic(&self, s: &LmInfiniteShape, _sm_count: usize) -> SplitConfig {
        SplitConfig::heuristic(s.group, s.head_dim)
    }

    fn kernels(&self, s: &LmInfiniteShape, c: &SplitConfig) -> Result<Vec<Kernel>> {
        Ok(vec![
            LmInfiniteDecodeSplit::build(&LmInfiniteDecode::config(&c.params(s.group, s.head_dim)))?,
            combine_kernel(s.head_dim, c.max_splits)?,
        ])
    }

    fn prepare(&self, rt: &Runtime, s: &LmInfiniteShape, seed: u64) -> Result<LmInfiniteBench> {
        let hq = s.kv_heads * s.group;
        let x = Qkv::new(rt, &[s.batch, hq, s.head_dim], [s.batch, s.kv_heads, s.seq_len, s.head_dim], seed)?;
        let rope = RopeTable::new(s.head_dim, s.seq_len, ROPE_BASE, 1.0);
        let (cos, sin) = rope.upload(rt)?;
        let refs = lm_infinite_refs(&x.hq, &x.hk, &x.hv, s, &rope);
        let out = DeviceTensor::poisoned(rt.stream(), DType::BF16, &[s.batch, hq, s.head_dim])?;
        Ok(LmInfiniteBench { shape: *s, x, cos: cos.read_only(), sin: sin.read_only(), out, refs })
    }

    fn run_candidate(
        &self,
        rt: &Runtime,
        b: &mut LmInfiniteBench,
        c: &SplitConfig,
        warmup: usize,
        iters: usize,
    ) -> Result<TimingStats, Failure> {
        let op = LmInfiniteDecode::new(rt, c.params(b.shape.group, b.shape.head_dim)).map_err(kerr)?;
        let scratch = Scratch::new();
        let (b, x) = (&*b, &b.x);
        let launch = || op.launch_with(rt, &scratch, &x.q, &x.k, &x.v, &b.cos, &b.sin, b.shape.args(), &b.out, None);
        checked_run(rt, &b.out, &b.refs, b.shape.head_dim, launch)?;
        time(rt, warmup, iters, |_| launch())
    }
}

/// Reference rows of the checked slices of `q`, `k`, `v` (host copies, `[B, Hkv, cap,
/// D]` caches): [`lm_infinite`] (f64) over each slice's keys alone (a one-head problem:
/// the reference rotates every key it is given).
fn lm_infinite_refs(q: &HostTensor, k: &HostTensor, v: &HostTensor, s: &LmInfiniteShape, rope: &RopeTable) -> RefRows {
    let (d, hq, cap) = (s.head_dim, s.kv_heads * s.group, k.shape[2]);
    let (cos, sin) = (rope.cos.to_f64(), rope.sin.to_f64());
    let sl2 = tessera_kernels::default_scale_log2(d) as f64;
    let dims = DecodeDims { batch: 1, kv_heads: 1, group: s.group, cap, head_dim: d };
    let args = (s.seq_len, s.sink, s.window, s.cap);
    std::thread::scope(|sc| {
        let hs: Vec<_> = check_pairs(s.batch, s.kv_heads)
            .into_iter()
            .map(|(b, h)| {
                let (cos, sin) = (&cos, &sin);
                sc.spawn(move || {
                    let row0 = (b * s.kv_heads + h) * cap;
                    let (ks, vs) = (rows_f64(k, row0, cap, d), rows_f64(v, row0, cap, d));
                    let q0 = b * hq + h * s.group;
                    let qs = rows_f64(q, q0, s.group, d);
                    let (o, _) = lm_infinite(dims, &qs, &ks, &vs, cos, sin, args, sl2);
                    (0..s.group).map(|g| (q0 + g, o[g * d..(g + 1) * d].to_vec())).collect::<RefRows>()
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().expect("reference thread")).collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autotune::common::contract;

    #[test]
    fn dense_keeps_the_contract_and_starts_where_the_decoder_did() {
        let counts = contract(&DenseTarget, |s| DecodeShape { seq_len: s.seq_len - 1000, ..*s });
        // BLOCK_N {64, 32, 128} × WARPS {4, 8} × STAGES {2, 3} × 5 split counts.
        assert_eq!(counts, vec![60, 60, 60, 60]);
        let shapes = DenseTarget.shapes("decode").unwrap();
        assert_eq!(
            shapes.iter().map(|s| (s.batch, s.seq_len)).collect::<Vec<_>>(),
            [(1, 32768), (8, 32768), (1, 131072), (8, 131072)]
        );
        assert!(shapes.iter().all(|s| (s.kv_heads, s.group, s.head_dim) == (8, 4, 128)));
        for s in &shapes {
            for sm in [108, 132] {
                // Exactly the DecodeParams the decoder built before dispatch (ops.rs).
                let mut want = tessera_kernels::DecodeParams::new(s.group, s.head_dim);
                want.max_splits = decode_max_splits(s.batch, s.kv_heads, sm);
                assert_eq!(DenseTarget::params(s, &DenseTarget.heuristic(s, sm)), want, "{s} at {sm} SMs");
            }
        }
        // SmolLM2 (3 KV heads of 64) at batch 1 wants 128 splits on an H100/H200: a
        // candidate whatever the sequence length.
        let small = DecodeShape { batch: 1, kv_heads: 3, group: 3, seq_len: 1024, head_dim: 64 };
        let h = DenseTarget.heuristic(&small, 132);
        assert_eq!(h.max_splits, 128);
        assert!(DenseTarget.candidates(&small).contains(&h));
        assert_ne!(DenseTarget.bucket(&small), DenseTarget.bucket(&shapes[0]));
        // Batches 5 and 8 of SmolLM2 share a bucket but not a heuristic split count
        // (32 and 16 on 132 SMs): still one key source, so one record serves both.
        let (b5, b8) = (DecodeShape { batch: 5, ..small }, DecodeShape { batch: 8, ..small });
        assert_eq!(DenseTarget.bucket(&b5), DenseTarget.bucket(&b8));
        let (h5, h8) = (DenseTarget.heuristic(&b5, 132), DenseTarget.heuristic(&b8, 132));
        assert_eq!((h5.max_splits, h8.max_splits), (32, 16));
        let source = |s: &DecodeShape, c: &SplitConfig| -> Vec<String> {
            DenseTarget.kernels(s, c).unwrap().iter().map(|k| tessera_codegen::emit::emit_cuda(k).source).collect()
        };
        assert_eq!(source(&b5, &h5), source(&b8, &h8));
    }

    #[test]
    fn dense_tunes_the_source_the_op_runs() {
        // The op builds its split kernel with the element-type code of bf16 (KV = 0); the
        // tuned kernels leave it to its default: the same CUDA source, so one PTX.
        let s = DenseTarget.shapes("1x4096").unwrap()[0];
        for c in DenseTarget.candidates(&s).iter().step_by(7) {
            let tuned = &DenseTarget.kernels(&s, c).unwrap()[0];
            let config = split_kernel_config(s.group, s.head_dim, c).with("KV", 0);
            let op = DenseDecodeSplit::build(&config).unwrap();
            let emit = tessera_codegen::emit::emit_cuda;
            assert_eq!(emit(tuned).source, emit(&op).source, "{c}");
        }
    }

    #[test]
    fn lm_infinite_keeps_the_contract() {
        let counts = contract(&LmInfiniteTarget, |s| LmInfiniteShape { seq_len: s.seq_len - 1000, ..*s });
        // BLOCK_N {64, 32} × WARPS {4, 8} × max_splits {2, 4, 8, 16, 32}.
        assert_eq!(counts, vec![20, 20]);
        let s = LmInfiniteTarget.shapes("2x8192").unwrap()[0];
        assert_eq!((s.batch, s.seq_len, s.sink, s.window, s.cap), (2, 8192, 64, 4096, 4096));
        // 4160 keys at 8K: 32 splits of 130 keys still hold a 64-key tile.
        assert!(LmInfiniteTarget.candidates(&s).iter().any(|c| c.max_splits == 32));
        // 1024 keys over 32 splits: 32 each, less than a 64-key tile (dropped), one
        // 32-key tile (kept).
        let short = LmInfiniteTarget.candidates(&LmInfiniteTarget.shapes("1x1024").unwrap()[0]);
        assert!(!short.iter().any(|c| c.max_splits == 32 && c.block_n == 64));
        assert!(short.iter().any(|c| c.max_splits == 32 && c.block_n == 32));
    }

    /// The reference rows of [`lm_infinite_refs`] are the rows of the whole-problem f64
    /// reference ([`lm_infinite`] over every head), on a small problem whose cap rotates
    /// the sink keys at a capped distance.
    #[test]
    fn lm_infinite_reference_rows_are_the_whole_problems() {
        let s = LmInfiniteShape {
            batch: 2,
            kv_heads: 2,
            group: 3,
            seq_len: 300,
            head_dim: 16,
            sink: 4,
            window: 40,
            cap: 50,
        };
        let hq = s.kv_heads * s.group;
        let kv = [s.batch, s.kv_heads, s.seq_len, s.head_dim];
        let (q, k, v) = (
            crate::inputs::random_bf16(&[s.batch, hq, s.head_dim], 1),
            crate::inputs::random_bf16(&kv, 2),
            crate::inputs::random_bf16(&kv, 3),
        );
        let rope = RopeTable::new(s.head_dim, s.seq_len, ROPE_BASE, 1.0);
        let dims = DecodeDims { batch: s.batch, kv_heads: s.kv_heads, group: s.group, cap: s.seq_len, head_dim: 16 };
        let sl2 = tessera_kernels::default_scale_log2(16) as f64;
        let (all, _) = lm_infinite(
            dims,
            &q.to_f64(),
            &k.to_f64(),
            &v.to_f64(),
            &rope.cos.to_f64(),
            &rope.sin.to_f64(),
            (s.seq_len, s.sink, s.window, s.cap),
            sl2,
        );
        let refs = lm_infinite_refs(&q, &k, &v, &s, &rope);
        assert_eq!(refs.len(), 2 * s.group);
        for (row, want) in &refs {
            assert_eq!(&all[row * 16..(row + 1) * 16], &want[..], "row {row}");
        }
        // The interpreter op agrees with them (the check a candidate must pass).
        let op = LmInfiniteDecode::cpu(SplitConfig::heuristic(s.group, 16).params(s.group, 16)).unwrap();
        let mut out = HostTensor::full(DType::BF16, &[s.batch, hq, 16], f64::NAN);
        op.run_cpu(&q, &k, &v, &rope.cos, &rope.sin, s.args(), &mut out, None).unwrap();
        let got = out.to_f64();
        let scale = refs.iter().flat_map(|(_, w)| w.iter()).fold(0.0f64, |m, v| m.max(v.abs()));
        for (row, want) in &refs {
            for (g, w) in got[row * 16..(row + 1) * 16].iter().zip(want) {
                assert!((g - w).abs() / scale < 2e-2, "row {row}: {g} vs {w}");
            }
        }
    }
}
