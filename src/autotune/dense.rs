//! Dense flash-decoding (the `flash_decode` + `flash_decode_combine` codegen samples,
//! [`crate::decode`]) as a [`TuneTarget`]: BLOCK_N × WARPS × MIN_BLOCKS × split length.
//!
//! Each candidate is checked on a small odd shape against the f64 reference and on the
//! full shape against the reference (when the CPU can afford it) or the first correct
//! candidate, with outputs poisoned, and only then timed.

use anyhow::{anyhow, Result};
use tessera_codegen::ir::Kernel;
use tessera_runtime::{Runtime, TimingStats};

use super::key::{decode_bucket, decode_candidates, DECODE_KERNEL};
use super::target::{Failure, TuneTarget};
use crate::decode::{relative_error, split_kernel, DecodeConfig, DecodeInputs, DecodePipeline, DecodeShape};

/// Tolerance of the bf16 output against the f64 reference.
const TOLERANCE: f64 = 1e-2;

/// Dense decode (key name `dense_decode`).
pub struct DenseDecodeTarget;

/// Inputs and references of one dense-decode job.
pub struct DenseBench {
    shape: DecodeShape,
    small: DecodeShape,
    small_inputs: DecodeInputs,
    small_ref: Vec<f64>,
    inputs: DecodeInputs,
    /// None when the f64 reference is too costly: the first correct candidate becomes it.
    reference: Option<Vec<f64>>,
}

impl TuneTarget for DenseDecodeTarget {
    type Shape = DecodeShape;
    type Config = DecodeConfig;
    type Bench = DenseBench;

    fn name(&self) -> &'static str {
        DECODE_KERNEL
    }

    /// `decode`: B ∈ {1, 8} × N ∈ {32K, 128K}, 32 q / 8 kv heads, d=128.
    fn shapes(&self, spec: &str) -> Result<Vec<DecodeShape>> {
        let list: Vec<&str> = if spec == "decode" || spec == "default" {
            vec!["1x32768", "8x32768", "1x131072", "8x131072"]
        } else {
            spec.split(',').collect()
        };
        list.into_iter().map(DecodeShape::parse_bxn).collect()
    }

    fn bucket(&self, shape: &DecodeShape) -> String {
        decode_bucket(shape)
    }

    fn candidates(&self, shape: &DecodeShape) -> Vec<DecodeConfig> {
        decode_candidates(shape)
    }

    fn heuristic(&self, shape: &DecodeShape, sm_count: usize) -> DecodeConfig {
        DecodeConfig::heuristic(shape, sm_count)
    }

    /// The split kernel only (the combine does not depend on the tuned knobs).
    fn kernels(&self, shape: &DecodeShape, config: &DecodeConfig) -> Result<Vec<Kernel>> {
        Ok(vec![split_kernel(shape, config)?])
    }

    fn prepare(&self, rt: &Runtime, s: &DecodeShape, seed: u64) -> Result<DenseBench> {
        // A small odd shape of the same family, cheap to check against f64 on the CPU.
        let small = DecodeShape { batch: 1, kv_heads: 2, seq_len: 1237, ..*s };
        let small_inputs = DecodeInputs::random(rt, &small, seed, true)?;
        let small_ref = small_inputs.reference(&small).ok_or_else(|| anyhow!("host copies kept"))?;
        let affordable = s.batch * s.q_heads() * s.seq_len * s.head_dim <= 1 << 28;
        let inputs = DecodeInputs::random(rt, s, seed + 7, affordable)?;
        let reference = inputs.reference(s);
        Ok(DenseBench { shape: *s, small, small_inputs, small_ref, inputs, reference })
    }

    fn run_candidate(
        &self,
        rt: &Runtime,
        b: &mut DenseBench,
        config: &DecodeConfig,
        warmup: usize,
        iters: usize,
    ) -> Result<TimingStats, Failure> {
        let wrong = |what: &str, err: f64| Failure::wrong(format!("{what}: relative error {err:.3e} > {TOLERANCE:e}"));
        let p = DecodePipeline::new(rt, b.small, *config).map_err(Failure::classify)?;
        let got = p.run_checked(&b.small_inputs).map_err(Failure::classify)?;
        let e = relative_error(&got, &b.small_ref);
        if e > TOLERANCE {
            return Err(wrong(&format!("{}", b.small), e));
        }
        let p = DecodePipeline::new(rt, b.shape, *config).map_err(Failure::classify)?;
        let got = p.run_checked(&b.inputs).map_err(Failure::classify)?;
        match &b.reference {
            Some(r) => {
                let e = relative_error(&got, r);
                if e > TOLERANCE {
                    return Err(wrong(&format!("{}", b.shape), e));
                }
            }
            None if got.iter().all(|x| x.is_finite()) => b.reference = Some(got),
            None => return Err(wrong(&format!("{}", b.shape), f64::INFINITY)),
        }
        p.time(&b.inputs, warmup, iters).map_err(Failure::classify)
    }
}
