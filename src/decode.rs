//! Dense flash-decoding on the GPU as one unit: the `flash_decode` split kernel and the
//! `flash_decode_combine` kernel with their intermediates, for one shape and one
//! configuration. Shared by `tessera bench` and the autotuner.

use std::sync::Arc;

use anyhow::{anyhow, Result};
use serde::{Deserialize, Serialize};
use tessera_codegen::emit::emit_cuda;
use tessera_codegen::host::{HostData, HostTensor, ScalarValue};
use tessera_codegen::ir::DType;
use tessera_codegen::problems::reference::attention_decode;
use tessera_codegen::samples::{self, Config};
use tessera_runtime::{CudaStream, DeviceTensor, LaunchArg, LoadedKernel, Runtime};

/// A decode problem size (bf16, KV layout `[batch, kv_heads, seq_len, head_dim]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecodeShape {
    pub batch: usize,
    pub kv_heads: usize,
    /// Query heads per KV head.
    pub group: usize,
    pub seq_len: usize,
    pub head_dim: usize,
}

impl DecodeShape {
    /// `BATCHxSEQ_LEN` with the benchmark's heads: 32 query heads, 8 KV heads, d=128.
    pub fn parse_bxn(s: &str) -> Result<Self> {
        let (b, n) = s
            .split_once('x')
            .and_then(|(b, n)| Some((b.parse::<usize>().ok()?, n.parse::<usize>().ok()?)))
            .filter(|(b, n)| *b > 0 && *n > 0)
            .ok_or_else(|| anyhow!("shape `{s}` is not BATCHxSEQ_LEN"))?;
        Ok(DecodeShape { batch: b, kv_heads: 8, group: 4, seq_len: n, head_dim: 128 })
    }

    pub fn q_heads(&self) -> usize {
        self.kv_heads * self.group
    }

    /// Bytes of K and V: what one decode step must read.
    pub fn kv_bytes(&self) -> u64 {
        2 * (self.batch * self.kv_heads * self.seq_len * self.head_dim * 2) as u64
    }
}

impl std::fmt::Display for DecodeShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "B={} Hkv={} G={} N={} D={}", self.batch, self.kv_heads, self.group, self.seq_len, self.head_dim)
    }
}

/// One configuration of the pair: the split kernel's compile-time parameters and the
/// split length (a runtime argument).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DecodeConfig {
    pub block_n: usize,
    pub warps: usize,
    pub min_blocks: usize,
    pub split_len: usize,
}

impl DecodeConfig {
    /// The untuned choice: 64-key tiles, 8 warps, splits of 1024 keys (or fewer keys when
    /// that would leave fewer than two programs per SM).
    pub fn heuristic(shape: &DecodeShape, sm_count: usize) -> Self {
        let mut split_len = 1024;
        while split_len > 512 && shape.seq_len.div_ceil(split_len) * shape.batch * shape.kv_heads < 2 * sm_count {
            split_len /= 2;
        }
        DecodeConfig { block_n: 64, warps: 8, min_blocks: 0, split_len }
    }
}

impl std::fmt::Display for DecodeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "BLOCK_N={} WARPS={} MIN_BLOCKS={} split={}",
            self.block_n, self.warps, self.min_blocks, self.split_len
        )
    }
}

fn sample_config(name: &str, kv: &[(&str, i64)]) -> Result<Config> {
    let s = samples::find(name).ok_or_else(|| anyhow!("no sample `{name}`"))?;
    let o: Vec<(String, i64)> = kv.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    s.config(&o).map_err(|e| anyhow!(e))
}

/// The split kernel's IR for a configuration.
pub fn split_kernel(shape: &DecodeShape, c: &DecodeConfig) -> Result<tessera_codegen::ir::Kernel> {
    Ok(samples::flash_decode(&sample_config(
        "flash_decode",
        &[
            ("GROUP", shape.group as i64),
            ("HEAD_DIM", shape.head_dim as i64),
            ("BLOCK_N", c.block_n as i64),
            ("WARPS", c.warps as i64),
            ("MIN_BLOCKS", c.min_blocks as i64),
        ],
    )?)?)
}

fn combine_kernel(shape: &DecodeShape, splits: usize) -> Result<tessera_codegen::ir::Kernel> {
    let max_splits = splits.next_power_of_two().max(16);
    Ok(samples::flash_decode_combine(&sample_config(
        "flash_decode_combine",
        &[("HEAD_DIM", shape.head_dim as i64), ("MAX_SPLITS", max_splits as i64)],
    )?)?)
}

/// Random q, k, v on the device (and on the host when a reference is wanted).
pub struct DecodeInputs {
    pub q: DeviceTensor,
    pub k: DeviceTensor,
    pub v: DeviceTensor,
    /// Host copies, kept for the f64 reference.
    pub host: Option<[HostTensor; 3]>,
}

impl DecodeInputs {
    pub fn random(rt: &Runtime, s: &DecodeShape, seed: u64, keep_host: bool) -> Result<Self> {
        let q = fast_random_bf16(&[s.batch, s.q_heads(), s.head_dim], seed);
        let k = fast_random_bf16(&[s.batch, s.kv_heads, s.seq_len, s.head_dim], seed + 1);
        let v = fast_random_bf16(&[s.batch, s.kv_heads, s.seq_len, s.head_dim], seed + 2);
        let st = rt.stream();
        Ok(DecodeInputs {
            q: DeviceTensor::upload(st, &q)?.read_only(),
            k: DeviceTensor::upload(st, &k)?.read_only(),
            v: DeviceTensor::upload(st, &v)?.read_only(),
            host: keep_host.then_some([q, k, v]),
        })
    }

    /// The f64 attention reference (needs the host copies).
    pub fn reference(&self, s: &DecodeShape) -> Option<Vec<f64>> {
        let [q, k, v] = self.host.as_ref()?;
        let scale = 1.0 / (s.head_dim as f64).sqrt();
        Some(attention_decode(
            &q.to_f64(),
            &k.to_f64(),
            &v.to_f64(),
            s.batch,
            s.q_heads(),
            s.kv_heads,
            s.seq_len,
            s.head_dim,
            scale,
        ))
    }
}

/// The compiled pair and its intermediates for one shape and configuration.
pub struct DecodePipeline {
    pub shape: DecodeShape,
    pub config: DecodeConfig,
    split: LoadedKernel,
    combine: LoadedKernel,
    o_part: DeviceTensor,
    lse_part: DeviceTensor,
    pub out: DeviceTensor,
    stream: Arc<CudaStream>,
}

impl DecodePipeline {
    pub fn new(rt: &Runtime, shape: DecodeShape, config: DecodeConfig) -> Result<Self> {
        if config.split_len == 0 || !config.split_len.is_multiple_of(config.block_n) {
            return Err(anyhow!("split length {} is not a multiple of BLOCK_N {}", config.split_len, config.block_n));
        }
        let splits = shape.seq_len.div_ceil(config.split_len);
        let k1 = split_kernel(&shape, &config)?;
        let k2 = combine_kernel(&shape, splits)?;
        let stream = rt.stream().clone();
        let (b, hq, d) = (shape.batch, shape.q_heads(), shape.head_dim);
        Ok(DecodePipeline {
            shape,
            config,
            split: LoadedKernel::new(rt, &k1, &emit_cuda(&k1))?,
            combine: LoadedKernel::new(rt, &k2, &emit_cuda(&k2))?,
            o_part: DeviceTensor::poisoned(&stream, DType::F32, &[b, hq, splits, d])?,
            lse_part: DeviceTensor::poisoned(&stream, DType::F32, &[b, hq, splits])?,
            out: DeviceTensor::poisoned(&stream, DType::BF16, &[b, hq, d])?,
            stream,
        })
    }

    /// Programs of the split kernel an SM holds at once.
    pub fn resident_per_sm(&self) -> Result<u32> {
        Ok(self.split.max_active_blocks_per_sm()?)
    }

    /// Enqueues both kernels.
    pub fn launch(&self, x: &DecodeInputs) -> tessera_runtime::Result<()> {
        let s = &self.shape;
        let splits = s.seq_len.div_ceil(self.config.split_len);
        let scale_log2 = (1.0 / (s.head_dim as f64).sqrt() * std::f64::consts::LOG2_E) as f32;
        self.split.launch(
            &self.stream,
            [splits as u32, s.kv_heads as u32, s.batch as u32],
            &[
                LaunchArg::Tensor(&x.q),
                LaunchArg::Tensor(&x.k),
                LaunchArg::Tensor(&x.v),
                LaunchArg::Tensor(&self.o_part),
                LaunchArg::Tensor(&self.lse_part),
                LaunchArg::Scalar(ScalarValue::F32(scale_log2)),
                LaunchArg::Scalar(ScalarValue::I32(self.config.split_len as i32)),
            ],
        )?;
        self.combine.launch(
            &self.stream,
            [s.q_heads() as u32, s.batch as u32, 1],
            &[LaunchArg::Tensor(&self.o_part), LaunchArg::Tensor(&self.lse_part), LaunchArg::Tensor(&self.out)],
        )
    }

    /// Poisons the output and intermediates, runs once and returns the output.
    pub fn run_checked(&self, x: &DecodeInputs) -> Result<Vec<f64>> {
        for t in [&self.o_part, &self.lse_part, &self.out] {
            t.poison()?;
        }
        self.launch(x)?;
        self.stream.synchronize()?;
        Ok(self.out.download()?.to_f64())
    }

    /// Times the pair with CUDA events.
    pub fn time(&self, x: &DecodeInputs, warmup: usize, iters: usize) -> Result<tessera_runtime::TimingStats> {
        Ok(tessera_runtime::time(&self.stream, warmup, iters, |_| self.launch(x))?)
    }
}

/// `max |got - want| / max |want|`; infinity when `got` has a NaN or infinity.
pub fn relative_error(got: &[f64], want: &[f64]) -> f64 {
    if got.iter().any(|x| !x.is_finite()) {
        return f64::INFINITY;
    }
    let scale = want.iter().fold(0.0f64, |m, x| m.max(x.abs())).max(f64::MIN_POSITIVE);
    got.iter().zip(want).fold(0.0f64, |m, (g, w)| m.max((g - w).abs())) / scale
}

/// Random bf16 values in [-1, 1) from a fast xorshift generator (speed runs need
/// gigabytes of inputs; the values only need to be non-degenerate).
pub fn fast_random_bf16(shape: &[usize], seed: u64) -> HostTensor {
    let n: usize = shape.iter().product();
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let data = (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let x = f32::from_bits(0x3f80_0000 | ((s >> 41) as u32)) * 2.0 - 3.0;
            half::bf16::from_f32(x)
        })
        .collect();
    HostTensor { shape: shape.to_vec(), data: HostData::BF16(data) }
}
