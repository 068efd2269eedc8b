//! `tessera bench`: flash-decoding on the GPU over a small sweep of configurations, as
//! bytes of K and V read per second against the ~4.6 TB/s HBM read ceiling.
//!
//! Each configuration's output is compared with an f64 attention reference (where the
//! shape is small enough for the CPU) before it is timed.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use tessera_codegen::emit::emit_cuda;
use tessera_codegen::host::{HostData, HostTensor, ScalarValue};
use tessera_codegen::ir::DType;
use tessera_codegen::problems::reference::attention_decode;
use tessera_codegen::samples::{self, Config};
use tessera_runtime::{DeviceTensor, LaunchArg, LoadedKernel, Runtime};

/// HBM read ceiling of the H200 measured with PyTorch SDPA (shared/H200.md).
const READ_CEILING_BYTES_PER_S: f64 = 4.6e12;

#[derive(clap::Args)]
pub struct Args {
    /// Shapes as BATCHxSEQ_LEN (32 query heads, 8 KV heads, head dim 128, bf16).
    #[arg(long, value_delimiter = ',', default_value = "8x32768,1x131072,8x131072")]
    shapes: Vec<String>,
    /// Timed iterations per configuration.
    #[arg(long, default_value_t = 50)]
    iters: usize,
    /// Writes the results as JSON here too.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Runs only this split kernel, as BLOCK_N,WARPS,MIN_BLOCKS (e.g. for a profiler).
    #[arg(long, value_delimiter = ',')]
    only: Option<Vec<usize>>,
}

const KV_HEADS: usize = 8;
const GROUP: usize = 4;
const HEAD_DIM: usize = 128;

struct Row {
    shape: String,
    config: String,
    median_us: f64,
    p10_us: f64,
    p90_us: f64,
    tb_per_s: f64,
    rel_err: Option<f64>,
}

pub fn run(a: Args) -> Result<()> {
    let rt = Runtime::new(0)?;
    println!("device {} ({})", rt.info().name, rt.arch());
    let mut rows = Vec::new();
    for shape in &a.shapes {
        let (b, n) = shape
            .split_once('x')
            .and_then(|(b, n)| Some((b.parse::<usize>().ok()?, n.parse::<usize>().ok()?)))
            .with_context(|| format!("shape `{shape}` is not BATCHxSEQ_LEN"))?;
        let configs = match &a.only {
            Some(o) if o.len() == 3 => vec![KernelChoice { block_n: o[0], warps: o[1], min_blocks: o[2] }],
            Some(_) => bail!("--only takes BLOCK_N,WARPS,MIN_BLOCKS"),
            None => sweep(),
        };
        rows.extend(bench_shape(&rt, b, n, a.iters, &configs)?);
    }
    println!(
        "\n{:<14} {:<40} {:>10} {:>10} {:>10} {:>8} {:>9}",
        "shape", "config", "median µs", "p10", "p90", "TB/s", "rel err"
    );
    for r in &rows {
        let err = r.rel_err.map(|e| format!("{e:.1e}")).unwrap_or_else(|| "-".into());
        println!(
            "{:<14} {:<40} {:>10.1} {:>10.1} {:>10.1} {:>8.2} {:>9}",
            r.shape, r.config, r.median_us, r.p10_us, r.p90_us, r.tb_per_s, err
        );
    }
    println!("\nbest per shape (K+V bytes read / time; ceiling {:.1} TB/s):", READ_CEILING_BYTES_PER_S / 1e12);
    let mut json = Vec::new();
    for shape in &a.shapes {
        let best = rows
            .iter()
            .filter(|r| &r.shape == shape)
            .min_by(|x, y| x.median_us.total_cmp(&y.median_us))
            .context("no configuration ran")?;
        let pct = 100.0 * best.tb_per_s * 1e12 / READ_CEILING_BYTES_PER_S;
        println!(
            "  {:<14} {:>8.1} µs  {:>5.2} TB/s  {:>5.1}% of ceiling  ({})",
            shape, best.median_us, best.tb_per_s, pct, best.config
        );
        json.push(format!(
            "{{\"shape\":\"{}\",\"config\":\"{}\",\"median_us\":{:.2},\"tb_per_s\":{:.3},\"pct_of_ceiling\":{:.1}}}",
            shape, best.config, best.median_us, best.tb_per_s, pct
        ));
    }
    if let Some(p) = a.json {
        std::fs::write(&p, format!("[{}]\n", json.join(",\n")))?;
    }
    Ok(())
}

/// Random bf16 values in [-1, 1) from a fast xorshift generator (speed runs need
/// gigabytes of inputs; the values only need to be non-degenerate).
fn fast_random_bf16(shape: &[usize], seed: u64) -> HostTensor {
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

fn bench_shape(rt: &Runtime, b: usize, n: usize, iters: usize, configs: &[KernelChoice]) -> Result<Vec<Row>> {
    let stream = rt.stream().clone();
    let hq = KV_HEADS * GROUP;
    let shape = format!("{b}x{n}");
    eprintln!("{shape}: generating inputs");
    let q = fast_random_bf16(&[b, hq, HEAD_DIM], 1);
    let k = fast_random_bf16(&[b, KV_HEADS, n, HEAD_DIM], 2);
    let v = fast_random_bf16(&[b, KV_HEADS, n, HEAD_DIM], 3);
    let scale = 1.0 / (HEAD_DIM as f64).sqrt();
    let reference = (b * n <= 8 * 32768).then(|| {
        eprintln!("{shape}: f64 reference");
        attention_decode(&q.to_f64(), &k.to_f64(), &v.to_f64(), b, hq, KV_HEADS, n, HEAD_DIM, scale)
    });
    let (dq, dk, dv) = (
        DeviceTensor::upload(&stream, &q)?.read_only(),
        DeviceTensor::upload(&stream, &k)?.read_only(),
        DeviceTensor::upload(&stream, &v)?.read_only(),
    );
    let kv_bytes = 2.0 * (b * KV_HEADS * n * HEAD_DIM * 2) as f64;
    let scale_log2 = (scale * std::f64::consts::LOG2_E) as f32;
    let mut rows = Vec::new();
    for c in configs {
        let k1 = samples::flash_decode(&sample_config(
            "flash_decode",
            &[
                ("GROUP", GROUP as i64),
                ("HEAD_DIM", HEAD_DIM as i64),
                ("BLOCK_N", c.block_n as i64),
                ("WARPS", c.warps as i64),
                ("MIN_BLOCKS", c.min_blocks as i64),
            ],
        )?)?;
        let split = LoadedKernel::new(rt, &k1, &emit_cuda(&k1))?;
        let resident = split.max_active_blocks_per_sm()? as usize;
        if c.min_blocks > 0 && resident < c.min_blocks {
            // The hint only cost registers: shared memory or threads allow fewer blocks.
            continue;
        }
        for split_len in split_lengths(b, n, c.block_n, resident * rt.info().sm_count as usize) {
            let splits = n.div_ceil(split_len);
            let max_splits = splits.next_power_of_two().max(16);
            let k2 = samples::flash_decode_combine(&sample_config(
                "flash_decode_combine",
                &[("HEAD_DIM", HEAD_DIM as i64), ("MAX_SPLITS", max_splits as i64)],
            )?)?;
            let combine = LoadedKernel::new(rt, &k2, &emit_cuda(&k2))?;
            let o_part = DeviceTensor::poisoned(&stream, DType::F32, &[b, hq, splits, HEAD_DIM])?;
            let lse_part = DeviceTensor::poisoned(&stream, DType::F32, &[b, hq, splits])?;
            let out = DeviceTensor::poisoned(&stream, DType::BF16, &[b, hq, HEAD_DIM])?;
            let launch = |_: usize| -> tessera_runtime::Result<()> {
                split.launch(
                    &stream,
                    [splits as u32, KV_HEADS as u32, b as u32],
                    &[
                        LaunchArg::Tensor(&dq),
                        LaunchArg::Tensor(&dk),
                        LaunchArg::Tensor(&dv),
                        LaunchArg::Tensor(&o_part),
                        LaunchArg::Tensor(&lse_part),
                        LaunchArg::Scalar(ScalarValue::F32(scale_log2)),
                        LaunchArg::Scalar(ScalarValue::I32(split_len as i32)),
                    ],
                )?;
                combine.launch(
                    &stream,
                    [hq as u32, b as u32, 1],
                    &[LaunchArg::Tensor(&o_part), LaunchArg::Tensor(&lse_part), LaunchArg::Tensor(&out)],
                )
            };
            let config = format!("{} split={split_len} ({splits}, {resident}/SM)", c.label());
            launch(0)?;
            stream.synchronize()?;
            let got = out.download()?.to_f64();
            if got.iter().any(|x| !x.is_finite()) {
                bail!("{shape} {config}: output has NaN/inf");
            }
            let rel_err = reference.as_ref().map(|r| {
                let scale = r.iter().fold(0.0f64, |m, x| m.max(x.abs()));
                got.iter().zip(r).fold(0.0f64, |m, (g, r)| m.max((g - r).abs())) / scale
            });
            if let Some(e) = rel_err.filter(|e| *e > 1e-2) {
                bail!("{shape} {config}: relative error {e:.2e} > 1e-2");
            }
            let t = tessera_runtime::time(&stream, 5, iters, launch)?;
            eprintln!("{shape} {config}: {t}");
            rows.push(Row {
                shape: shape.clone(),
                config,
                median_us: t.median_us,
                p10_us: t.p10_us,
                p90_us: t.p90_us,
                tb_per_s: kv_bytes / (t.median_us * 1e-6) / 1e12,
                rel_err,
            });
        }
    }
    Ok(rows)
}

fn sample_config(name: &str, kv: &[(&str, i64)]) -> Result<Config> {
    let s = samples::find(name).expect("sample exists");
    let o: Vec<(String, i64)> = kv.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    s.config(&o).map_err(|e| anyhow::anyhow!(e))
}

/// One compiled variant of the split kernel.
#[derive(Clone, Copy, Debug)]
pub struct KernelChoice {
    block_n: usize,
    warps: usize,
    min_blocks: usize,
}

impl KernelChoice {
    fn label(&self) -> String {
        format!("BLOCK_N={} WARPS={} MIN_BLOCKS={}", self.block_n, self.warps, self.min_blocks)
    }
}

/// Split kernels tried per shape.
fn sweep() -> Vec<KernelChoice> {
    let mut v = Vec::new();
    for block_n in [64, 128] {
        for warps in [4, 8] {
            for min_blocks in [0, 2, 3] {
                v.push(KernelChoice { block_n, warps, min_blocks });
            }
        }
    }
    v
}

/// Split lengths tried: fixed ones, and those that make the grid one or two full waves
/// of `resident` programs (a partial last wave leaves SMs idle).
fn split_lengths(b: usize, n: usize, block_n: usize, resident: usize) -> Vec<usize> {
    let heads = b * KV_HEADS;
    let mut v: Vec<usize> = [1024, 2048, 4096].into_iter().filter(|s| s % block_n == 0).collect();
    for waves in [1, 2] {
        let splits = (waves * resident).div_ceil(heads).max(1);
        v.push(n.div_ceil(splits).div_ceil(block_n) * block_n);
    }
    v.sort_unstable();
    v.dedup();
    v.retain(|&s| n.div_ceil(s) <= 1024);
    v
}
