//! `tessera db`: inspect and maintain the tuning database. Never needs a GPU.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Subcommand, ValueEnum};
use tessera_tuning_db::{CurrentVersions, ExportFormat, KeySummary, TrialStatus, TuningDb};

#[derive(clap::Args)]
pub struct Args {
    /// The database: sqlite://PATH (or a plain file path) or postgres://USER@HOST:PORT/DB.
    /// Default: $TESSERA_DB, else <cache dir>/tessera/tuning.sqlite (created on first use).
    #[arg(long, global = true, value_name = "URL")]
    db: Option<String>,
    #[command(subcommand)]
    command: DbCommand,
}

#[derive(Subcommand)]
enum DbCommand {
    /// One line per tuning key: kernel, dtype, shape bucket, device, trials, winner.
    List,
    /// Every trial of one kernel, per tuning key (fastest first, then failures).
    Show { kernel: String },
    /// Writes the whole database: JSON (the import format) or CSV (one row per trial).
    Export {
        #[arg(long, value_enum, default_value_t = Format::Json)]
        format: Format,
        /// Output file (default: standard output).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Imports a JSON export, in one transaction; importing twice changes nothing.
    Import { file: PathBuf },
    /// Deletes records of another Tessera version, NVRTC or driver than the current ones.
    Prune,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Json,
    Csv,
}

pub fn run(args: Args) -> Result<()> {
    let db = TuningDb::open(args.db.as_deref()).context("opening the tuning database")?;
    match args.command {
        DbCommand::List => list(&db),
        DbCommand::Show { kernel } => show(&db, &kernel),
        DbCommand::Export { format, output } => {
            let format = match format {
                Format::Json => ExportFormat::Json,
                Format::Csv => ExportFormat::Csv,
            };
            let text = db.export(format)?;
            match output {
                Some(path) => {
                    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
                    eprintln!("exported {} to {}", db.location(), path.display());
                }
                None => print!("{text}"),
            }
            Ok(())
        }
        DbCommand::Import { file } => {
            let json = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            let r = db.import(&json).with_context(|| format!("importing {}", file.display()))?;
            println!(
                "imported into {}: {} devices, {} runs, {} trials, {} winners (rows already present are kept)",
                db.location(),
                r.devices,
                r.runs,
                r.trials,
                r.winners
            );
            Ok(())
        }
        DbCommand::Prune => prune(&db),
    }
}

fn tessera_version() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}

fn nvrtc_version() -> Option<String> {
    tessera_runtime::nvrtc_version().ok().map(|(a, b)| format!("{a}.{b}"))
}

/// UUIDs (or PCI bus ids) of this machine's GPUs, as the autotuner records them.
fn device_uuids() -> Vec<String> {
    let n = tessera_runtime::device::device_count().unwrap_or(0);
    (0..n)
        .filter_map(|i| tessera_runtime::Runtime::new(i).ok())
        .map(|rt| {
            let info = rt.info();
            if info.uuid.is_empty() {
                info.pci_bus_id.clone()
            } else {
                info.uuid.clone()
            }
        })
        .collect()
}

fn driver_version() -> Option<String> {
    tessera_runtime::device::driver_version().ok().map(|(a, b)| format!("{a}.{b}"))
}

/// `fresh` when the key's Tessera (and, where known here, NVRTC) version is the current one.
fn freshness(s: &KeySummary, nvrtc: Option<&str>) -> &'static str {
    let ok = s.key.tessera_version == tessera_version() && nvrtc.is_none_or(|v| v == s.key.nvrtc_version);
    if ok {
        "fresh"
    } else {
        "stale"
    }
}

fn table(rows: &[Vec<String>]) -> String {
    let mut widths = vec![0; rows.iter().map(Vec::len).max().unwrap_or(0)];
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r.iter().enumerate().map(|(i, c)| format!("{c:<w$}", w = widths[i])).collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn us(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.2}")).unwrap_or_else(|| "-".into())
}

fn list(db: &TuningDb) -> Result<()> {
    let keys = db.list()?;
    println!("database: {}", db.location());
    if keys.is_empty() {
        println!("no tuning records (run `tessera autotune` on a GPU, or `tessera db import FILE`)");
        return Ok(());
    }
    let nvrtc = nvrtc_version();
    let mut rows =
        vec![["kernel", "dtype", "shape", "device", "trials ok/all", "winner us", "config", "versions", "state"]
            .map(String::from)
            .to_vec()];
    for s in &keys {
        let k = &s.key;
        rows.push(vec![
            k.kernel.clone(),
            k.dtype.clone(),
            k.shape_bucket.clone(),
            format!("{} (sm {}, driver {})", k.device.gpu_name, k.device.compute_capability, k.device.driver_version),
            format!("{}/{}", s.ok_trials, s.trials),
            us(s.winner.as_ref().map(|w| w.median_us)),
            s.winner.as_ref().map(|w| w.config.to_string()).unwrap_or_else(|| "(none)".into()),
            format!("tessera {} nvrtc {} src {}", k.tessera_version, k.nvrtc_version, k.source_hash),
            freshness(s, nvrtc.as_deref()).into(),
        ]);
    }
    print!("{}", table(&rows));
    println!("{} keys", keys.len());
    Ok(())
}

fn show(db: &TuningDb, kernel: &str) -> Result<()> {
    let details = db.show(kernel)?;
    println!("database: {}", db.location());
    if details.is_empty() {
        println!("no records for kernel `{kernel}`");
        return Ok(());
    }
    let nvrtc = nvrtc_version();
    for d in &details {
        let k = &d.summary.key;
        println!();
        println!(
            "{} {} [{}] on {} (sm {}, {}, driver {}) [{}]",
            k.kernel,
            k.dtype,
            k.shape_bucket,
            k.device.gpu_name,
            k.device.compute_capability,
            k.device.uuid,
            k.device.driver_version,
            freshness(&d.summary, nvrtc.as_deref())
        );
        println!(
            "  tessera {}, nvrtc {}, source {}, candidates {}",
            k.tessera_version, k.nvrtc_version, k.source_hash, k.candidates_checksum
        );
        match &d.summary.winner {
            Some(w) => println!(
                "  winner: {} at {} us (p10 {}, p90 {})",
                w.config,
                us(Some(w.median_us)),
                us(w.p10_us),
                us(w.p90_us)
            ),
            None => println!("  winner: none"),
        }
        let mut rows = vec![["status", "median us", "p10", "p90", "config", "error", "run"].map(String::from).to_vec()];
        for t in &d.trials {
            let tr = &t.trial;
            let err = tr.error.as_deref().unwrap_or("").lines().next().unwrap_or("").chars().take(60).collect();
            rows.push(vec![
                tr.status.to_string(),
                us(tr.median_us),
                us(tr.p10_us),
                us(tr.p90_us),
                tr.config.to_string(),
                err,
                t.run_id.clone(),
            ]);
        }
        for line in table(&rows).lines() {
            println!("  {line}");
        }
        let failed = d.trials.iter().filter(|t| t.trial.status != TrialStatus::Ok).count();
        println!("  {} trials, {} failed", d.trials.len(), failed);
    }
    Ok(())
}

fn prune(db: &TuningDb) -> Result<()> {
    let current = CurrentVersions {
        tessera_version: tessera_version(),
        nvrtc_version: nvrtc_version(),
        driver_version: driver_version(),
        device_uuids: device_uuids(),
        // No kernel registry to hash yet: source hashes are checked by `tessera autotune`'s
        // lookups (a changed kernel never matches) and not pruned here.
        source_hashes: Default::default(),
    };
    println!("database: {}", db.location());
    println!("keeping records of Tessera {}", current.tessera_version);
    match &current.nvrtc_version {
        Some(v) => println!("keeping records of NVRTC {v}"),
        None => println!("NVRTC not found: records of other NVRTC versions are NOT pruned"),
    }
    match &current.driver_version {
        Some(v) => println!(
            "keeping records of driver {v} for this machine's GPUs (their records under other drivers are removed; \
             other machines' records stay)"
        ),
        None => println!("no CUDA driver: records of other driver versions are NOT pruned"),
    }
    println!("kernel source hashes are not checked here (records of changed kernels are never used, but stay until pruned by version)");
    let r = db.prune(&current)?;
    println!("removed {} trials, {} winners, {} runs, {} devices", r.trials, r.winners, r.runs, r.devices);
    Ok(())
}
