//! The dense split-KV decoder of `tessera-kernels` as a [`TuneTarget`]: `dense` tunes
//! [`DenseDecode`], the op the reference decoder runs for every decode step (see
//! `decoder/src/gpu/ops.rs`), over its split kernel's tune space (BLOCK_N × WARPS ×
//! STAGES) and the combine's MAX_SPLITS. Its heuristic is the decoder's untuned choice
//! ([`DecodeParams::new`] with [`decode_max_splits`]), so dispatch without a record runs
//! what the decoder ran before it dispatched through the tuning database.
//!
//! Worker side as in [`super::ops`]: fresh random bf16 q/k/v from a seeded xorshift,
//! output poisoned before the checked run, the G query heads of the first and last
//! (batch, KV head) slices against the f64 reference over all N keys, then CUDA-event
//! timing through `launch_with` (scratch reused).

use anyhow::Result;
use tessera_codegen::ir::{DType, Kernel};
use tessera_decoder::gpu::plan::decode_max_splits;
use tessera_kernels::dense::DenseDecodeSplit;
use tessera_kernels::{DenseDecode, Scratch};
use tessera_runtime::{DeviceTensor, Runtime, TimingStats};

use super::common::{
    bxn_list, checked_run, combine_kernel, decode_refs, kerr, split_kernel_config, tile_knobs, time, Qkv, RefRows,
    SplitConfig, D, G, HKV, N,
};
use super::key::decode_bucket;
use super::target::{Failure, TuneTarget};
use crate::decode::DecodeShape;

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

    /// The split kernel's tune space × [`DENSE_SPLITS`].
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

    fn kernels(&self, s: &DecodeShape, c: &SplitConfig) -> Result<Vec<Kernel>> {
        Ok(vec![
            DenseDecodeSplit::build(&split_kernel_config(s.group, s.head_dim, c))?,
            combine_kernel(s.head_dim, c.max_splits)?,
        ])
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
}
