//! `tessera bench`: flash-decoding on the GPU over a sweep of configurations, as bytes of
//! K and V read per second against the ~4.6 TB/s HBM read ceiling. Each configuration's
//! output is compared with an f64 attention reference (where the shape is small enough
//! for the CPU) before it is timed. With `--tuned`, the configuration the tuning
//! database holds for the shape is measured too.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use tessera::decode::{relative_error, DecodeConfig, DecodeInputs, DecodePipeline, DecodeShape};
use tessera::dispatch::Dispatcher;
use tessera_runtime::Runtime;

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
    /// Writes the best figure per shape as JSON here too.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Runs only this split kernel, as BLOCK_N,WARPS,MIN_BLOCKS (e.g. for a profiler).
    #[arg(long, value_delimiter = ',')]
    only: Option<Vec<usize>>,
    /// Measures only the configuration dispatch picks (tuning database or heuristic).
    #[arg(long)]
    tuned: bool,
    /// Tuning database for `--tuned` (default: `TESSERA_DB`, else the SQLite file in the
    /// cache folder).
    #[arg(long)]
    db: Option<String>,
}

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
    let mut dispatcher = if a.tuned { Some(Dispatcher::open(&rt, a.db.as_deref())?) } else { None };
    let mut rows = Vec::new();
    for s in &a.shapes {
        let shape = DecodeShape::parse_bxn(s)?;
        let configs = match (&a.only, dispatcher.as_mut()) {
            (_, Some(d)) => vec![d.decode_config(&shape)?],
            (Some(o), None) if o.len() == 3 => candidates_for(&rt, &shape, Some((o[0], o[1], o[2])))?,
            (Some(_), None) => bail!("--only takes BLOCK_N,WARPS,MIN_BLOCKS"),
            (None, None) => candidates_for(&rt, &shape, None)?,
        };
        rows.extend(bench_shape(&rt, s, &shape, a.iters, &configs)?);
    }
    print_rows(&rows);
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

fn print_rows(rows: &[Row]) {
    println!(
        "\n{:<14} {:<52} {:>10} {:>10} {:>10} {:>8} {:>9}",
        "shape", "config", "median µs", "p10", "p90", "TB/s", "rel err"
    );
    for r in rows {
        let err = r.rel_err.map(|e| format!("{e:.1e}")).unwrap_or_else(|| "-".into());
        println!(
            "{:<14} {:<52} {:>10.1} {:>10.1} {:>10.1} {:>8.2} {:>9}",
            r.shape, r.config, r.median_us, r.p10_us, r.p90_us, r.tb_per_s, err
        );
    }
}

/// The sweep: split kernels (BLOCK_N × WARPS × MIN_BLOCKS) × split lengths.
pub fn candidates_for(
    rt: &Runtime,
    shape: &DecodeShape,
    only: Option<(usize, usize, usize)>,
) -> Result<Vec<DecodeConfig>> {
    let kernels: Vec<(usize, usize, usize)> = match only {
        Some(k) => vec![k],
        None => [64, 128]
            .into_iter()
            .flat_map(|bn| [4, 8].into_iter().flat_map(move |w| [0, 2, 3].into_iter().map(move |mb| (bn, w, mb))))
            .collect(),
    };
    let _ = rt;
    let mut out = Vec::new();
    for (block_n, warps, min_blocks) in kernels {
        for split_len in [1024, 2048, 4096] {
            if split_len % block_n == 0 && shape.seq_len.div_ceil(split_len) <= 1024 {
                out.push(DecodeConfig { block_n, warps, min_blocks, split_len });
            }
        }
    }
    Ok(out)
}

fn bench_shape(
    rt: &Runtime,
    label: &str,
    shape: &DecodeShape,
    iters: usize,
    configs: &[DecodeConfig],
) -> Result<Vec<Row>> {
    eprintln!("{label}: generating inputs");
    let small = shape.batch * shape.seq_len <= 8 * 32768;
    let inputs = DecodeInputs::random(rt, shape, 1, small)?;
    let reference = inputs.reference(shape);
    let mut rows = Vec::new();
    for c in configs {
        let p = DecodePipeline::new(rt, *shape, *c)?;
        let resident = p.resident_per_sm()? as usize;
        if c.min_blocks > 0 && resident < c.min_blocks {
            // The hint only costs registers when shared memory or threads allow fewer.
            continue;
        }
        let got = p.run_checked(&inputs)?;
        let rel_err = reference.as_ref().map(|r| relative_error(&got, r));
        if got.iter().any(|x| !x.is_finite()) || rel_err.is_some_and(|e| e > 1e-2) {
            bail!("{label} {c}: wrong output (relative error {rel_err:?})");
        }
        let t = p.time(&inputs, 5, iters)?;
        let config = format!("{c} ({resident}/SM)");
        eprintln!("{label} {config}: {t}");
        rows.push(Row {
            shape: label.to_string(),
            config,
            median_us: t.median_us,
            p10_us: t.p10_us,
            p90_us: t.p90_us,
            tb_per_s: shape.kv_bytes() as f64 / (t.median_us * 1e-6) / 1e12,
            rel_err,
        });
    }
    Ok(rows)
}
