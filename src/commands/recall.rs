//! `tessera recall`: the share of the exact softmax mass each selection method keeps on
//! synthetic long-context inputs (CPU only; see `tessera_kernels::recall`).

use std::time::Instant;

use anyhow::{bail, Result};
use tessera_kernels::recall::{self, Method, RecallConfig};
use tessera_kernels::snapkv::Pool;

#[derive(clap::Args)]
pub struct Args {
    /// Sequence lengths (keys attended by the decode query).
    #[arg(long, value_delimiter = ',', default_value = "32768,131072")]
    n: Vec<usize>,
    /// Budget denominators: each method keeps n / X keys.
    #[arg(long, value_delimiter = ',', default_value = "8,16,32")]
    budgets: Vec<usize>,
    /// Generator seed.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Head dimension.
    #[arg(long, default_value_t = 128)]
    head_dim: usize,
    /// KV heads.
    #[arg(long, default_value_t = 2)]
    kv_heads: usize,
    /// Query heads per KV head (GQA group).
    #[arg(long, default_value_t = 4)]
    group: usize,
    /// Sink tokens kept by the block methods.
    #[arg(long, default_value_t = 16)]
    sink: usize,
    /// Sliding window kept by the block methods.
    #[arg(long, default_value_t = 256)]
    window: usize,
    /// Block size of top-k landmark, random blocks and the second HiP column.
    #[arg(long, default_value_t = 16)]
    block: usize,
    /// SnapKV observation window, pooling kernel and pooling (max or avg).
    #[arg(long, default_value_t = 32)]
    snap_window: usize,
    #[arg(long, default_value_t = 7)]
    snap_kernel: usize,
    #[arg(long, default_value = "max")]
    snap_pool: String,
}

pub fn run(a: Args) -> Result<()> {
    if a.n.iter().any(|&n| n < 1024) || a.budgets.contains(&0) || a.head_dim == 0 || a.block == 0 {
        bail!("need n >= 1024, budgets > 0, head_dim > 0, block > 0");
    }
    let pool = match a.snap_pool.as_str() {
        "max" => Pool::Max,
        "avg" => Pool::Avg,
        p => bail!("--snap-pool {p}: expected max or avg"),
    };
    let mut cfg = RecallConfig::default_set(a.seed);
    cfg.ns = a.n.clone();
    cfg.budgets = a.budgets.clone();
    cfg.head_dim = a.head_dim;
    cfg.kv_heads = a.kv_heads;
    cfg.group = a.group;
    cfg.sink = a.sink;
    cfg.window = a.window;
    cfg.methods = vec![
        Method::Oracle,
        Method::Hip { bk: 2 },
        Method::Hip { bk: a.block },
        Method::TopkLandmark { bs: a.block },
        Method::SnapKv { w: a.snap_window, kernel: a.snap_kernel, pool },
        Method::RandomBlocks { bs: a.block },
        Method::SinkWindow,
        Method::Centroid { keys_per_cluster: 64, iters: 4 },
        Method::CentroidTwoLevel { keys_per_cluster: 64, fine_per_coarse: 16, iters: 4 },
    ];
    cfg.methods.dedup();
    println!(
        "attention recall: share of the exact softmax mass kept (mean over {} query heads; needles found in brackets)",
        a.kv_heads * a.group
    );
    println!(
        "synthetic inputs (tessera_kernels::recall::synthetic): d {}, {} KV heads x group {}, seed {}; block methods keep sink {} + window {}",
        a.head_dim, a.kv_heads, a.group, a.seed, a.sink, a.window
    );
    let names: Vec<String> = cfg.methods.iter().map(|m| m.name()).collect();
    let width = names.iter().map(|n| n.len()).max().unwrap_or(8).max(13);
    print!("{:>8} {:>7} {:>7}", "n", "budget", "keys");
    for n in &names {
        print!(" {n:>width$}");
    }
    println!();
    for &n in &cfg.ns {
        let t0 = Instant::now();
        let mut one = cfg.clone();
        one.ns = vec![n];
        let rows = recall::run(&one);
        for &denom in &cfg.budgets {
            print!("{n:>8} {:>7} {:>7}", format!("1/{denom}"), n / denom);
            for name in &names {
                let r = rows.iter().find(|r| r.denom == denom && &r.method == name).expect("row");
                print!(" {:>width$}", format!("{:.3} ({:.2})", r.mass, r.needles));
            }
            println!();
        }
        std::io::Write::flush(&mut std::io::stdout())?;
        eprintln!("  n {n}: {:.1} s", t0.elapsed().as_secs_f64());
    }
    Ok(())
}
