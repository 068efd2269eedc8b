//! What `tessera bench-kernels` and `tessera bench-selection` share: the command-line
//! flags, the shapes of `../shared/PEERS.md` (32 query heads, 8 KV heads, d=128, bf16,
//! N=131072), random inputs on the device with host copies, f64 reference rows and their
//! check, CUDA-event timing (optionally with the L2 flushed before every timed
//! iteration), the configuration sweep, the result rows (table and JSON) and the dense
//! decode workload both commands report.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use serde_json::json;
use tessera::inputs::{bf16s, random_bf16, rows_f64};
use tessera_codegen::host::HostTensor;
use tessera_codegen::ir::DType;
use tessera_kernels::reference::attend;
use tessera_kernels::{DecodeParams, DenseDecode, KernelError, Scratch};
use tessera_runtime::{DeviceTensor, Runtime, RuntimeError, TimingStats};

/// Read ceiling of the H200 (PyTorch SDPA dense decode, shared/H200.md).
pub const CEILING_TB_S: f64 = 4.58;
/// bf16 outputs: largest error relative to the largest reference magnitude.
pub const OUT_TOL: f64 = 2e-2;

/// Query heads.
pub const HQ: usize = 32;
/// KV heads.
pub const HKV: usize = 8;
/// Query heads per KV head.
pub const G: usize = HQ / HKV;
/// Head dim.
pub const D: usize = 128;
/// Context length.
pub const N: usize = 131072;

/// The flags both benchmark commands take.
#[derive(clap::Args, Clone, Debug)]
pub struct BenchArgs {
    /// Timed iterations per configuration (the median is reported).
    #[arg(long, default_value_t = 50)]
    pub iters: usize,
    /// Untimed launches before timing.
    #[arg(long, default_value_t = 10)]
    pub warmup: usize,
    /// Writes one JSON object per workload (the best configuration) to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Runs only the workloads whose name contains one of these (comma-separated), e.g.
    /// `sink,tree` (bench-kernels) or `hip,snapkv` (bench-selection).
    #[arg(long, value_delimiter = ',')]
    pub only: Option<Vec<String>>,
    /// Runs only the first (default) configuration of each workload.
    #[arg(long)]
    pub quick: bool,
    /// After this many seconds, remaining workloads run their first configuration only.
    #[arg(long, default_value_t = 150.0)]
    pub budget_s: f64,
    /// Skips the comparison with the f64 reference (finiteness is still checked).
    #[arg(long)]
    pub no_reference: bool,
    /// Replaces the split decoders' (BLOCK_N, WARPS, STAGES) sweep, e.g. `32/4/4,64/4/2`
    /// (each × the workload's split counts): for trying a pipeline depth or tile the
    /// default sweep leaves out without rebuilding.
    #[arg(long, value_delimiter = ',', value_parser = parse_decode_tile)]
    pub decode_tiles: Option<Vec<(usize, usize, usize)>>,
    /// `MIN_BLOCKS` of the block-sparse split kernel (block-sparse, HiP and centroid rows):
    /// programs per SM the compiler must fit in registers (0: its choice).
    #[arg(long, default_value_t = 0)]
    pub min_blocks: usize,
    /// Replaces the split decoders' split-count sweep (`max_splits` values, any count,
    /// not only powers of two), e.g. `6,12`: for sizing the grid to the resident programs.
    #[arg(long, value_delimiter = ',')]
    pub splits: Option<Vec<usize>>,
}

/// `BLOCK_N/WARPS/STAGES`, e.g. `64/4/2`.
fn parse_decode_tile(s: &str) -> std::result::Result<(usize, usize, usize), String> {
    let v: Vec<usize> = s
        .split('/')
        .map(|p| p.trim().parse::<usize>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| format!("{s:?}: {e}"))?;
    match v[..] {
        [bn, w, st] if bn > 0 && w > 0 && st >= 2 => Ok((bn, w, st)),
        _ => Err(format!("{s:?}: expected BLOCK_N/WARPS/STAGES with STAGES >= 2, e.g. 64/4/2")),
    }
}

/// One measured configuration.
pub struct Trial {
    /// The configuration's label.
    pub config: String,
    /// Its timing.
    pub stats: TimingStats,
    /// `Ok(summary)` or `Err(why the output is wrong)`.
    pub check: std::result::Result<String, String>,
}

/// The best configuration of one workload.
pub struct Row {
    /// The workload's name (what `--only` matches).
    pub workload: &'static str,
    /// What was run, with shapes.
    pub desc: String,
    /// Bytes that must be read, for the bandwidth column (0: no bandwidth figure).
    pub bytes: u64,
    /// FLOPs, for a TFLOP/s figure.
    pub flops: Option<f64>,
    /// The target time.
    pub target_us: Option<f64>,
    /// The best configuration.
    pub best: Option<Trial>,
    /// Every configuration tried: its median or why it failed.
    pub sweep: Vec<(String, std::result::Result<f64, String>)>,
    /// Free text printed under the table.
    pub note: String,
    /// Further named figures of the workload (added to its JSON object as they are).
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Row {
    /// A row without a figure yet.
    pub fn new(workload: &'static str, desc: String, bytes: u64, target_us: Option<f64>) -> Self {
        Row {
            workload,
            desc,
            bytes,
            flops: None,
            target_us,
            best: None,
            sweep: Vec::new(),
            note: String::new(),
            extra: serde_json::Map::new(),
        }
    }

    /// Bandwidth of the best configuration (bytes / median).
    pub fn tb_per_s(&self) -> Option<f64> {
        self.best.as_ref().map(|t| self.bytes as f64 / (t.stats.median_us * 1e-6) / 1e12)
    }

    /// The row as one JSON object.
    pub fn json(&self) -> serde_json::Value {
        let sweep: Vec<_> = self
            .sweep
            .iter()
            .map(|(c, r)| match r {
                Ok(us) => json!({"config": c, "median_us": round2(*us)}),
                Err(e) => json!({"config": c, "error": e}),
            })
            .collect();
        let mut o = json!({
            "workload": self.workload,
            "desc": self.desc,
            "bytes": self.bytes,
            "target_us": self.target_us,
            "note": self.note,
            "sweep": sweep,
        });
        let m = o.as_object_mut().expect("object");
        match &self.best {
            Some(t) => {
                m.insert("median_us".into(), json!(round2(t.stats.median_us)));
                m.insert("p10_us".into(), json!(round2(t.stats.p10_us)));
                m.insert("p90_us".into(), json!(round2(t.stats.p90_us)));
                m.insert("tb_per_s".into(), json!(self.tb_per_s().map(|x| (x * 1000.0).round() / 1000.0)));
                m.insert("config".into(), json!(t.config));
                m.insert("ok".into(), json!(t.check.is_ok()));
                m.insert(
                    "check".into(),
                    json!(match &t.check {
                        Ok(s) => s.clone(),
                        Err(e) => format!("WRONG: {e}"),
                    }),
                );
                if let Some(f) = self.flops {
                    m.insert(
                        "tflop_per_s".into(),
                        json!((f / (t.stats.median_us * 1e-6) / 1e12 * 10.0).round() / 10.0),
                    );
                }
            }
            None => {
                m.insert("median_us".into(), serde_json::Value::Null);
                m.insert("ok".into(), json!(false));
                m.insert("error".into(), json!("no configuration ran"));
            }
        }
        for (k, v) in &self.extra {
            m.insert(k.clone(), v.clone());
        }
        o
    }
}

/// `x` rounded to 2 decimals.
pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

pub struct Ctx<'a> {
    /// The GPU.
    pub rt: &'a Runtime,
    /// The flags.
    pub args: &'a BenchArgs,
    /// When the command started (for `--budget-s`).
    pub start: Instant,
    /// When set, every timed iteration is preceded (outside its events) by a write of
    /// this buffer (2x the L2), so the timed launches find nothing of theirs in the L2.
    pub flush: Option<DeviceTensor>,
}

impl<'a> Ctx<'a> {
    /// A context timing with a warm L2 (what bench-kernels does).
    pub fn new(rt: &'a Runtime, args: &'a BenchArgs) -> Self {
        Ctx { rt, args, start: Instant::now(), flush: None }
    }

    /// The same, flushing the L2 before every timed iteration.
    pub fn cold(rt: &'a Runtime, args: &'a BenchArgs) -> Result<Self> {
        let bytes = (2 * rt.info().l2_bytes).max(1 << 20);
        let flush = DeviceTensor::zeros(rt.stream(), DType::I32, &[bytes / 4])?;
        Ok(Ctx { rt, args, start: Instant::now(), flush: Some(flush) })
    }

    /// Whether `--only` selects `workload`.
    pub fn wanted(&self, workload: &str) -> bool {
        self.args.only.as_ref().is_none_or(|o| o.iter().any(|s| workload.contains(s.as_str())))
    }

    /// Whether configurations after the first still run (no `--quick`, budget left).
    pub fn sweeping(&self) -> bool {
        !self.args.quick && self.start.elapsed().as_secs_f64() < self.args.budget_s
    }

    /// Median etc. of `--iters` timed launches after `--warmup` (`launch(i)`, `i` counting
    /// on through both, for rotating inputs).
    pub fn time(&self, launch: impl FnMut(usize) -> Result<(), KernelError>) -> Result<TimingStats> {
        self.time_n(self.args.warmup, self.args.iters.max(1), launch)
    }

    /// [`Self::time`] with explicit counts.
    pub fn time_n(
        &self,
        warmup: usize,
        iters: usize,
        mut launch: impl FnMut(usize) -> Result<(), KernelError>,
    ) -> Result<TimingStats> {
        match &self.flush {
            None => Ok(tessera_runtime::time(self.rt.stream(), warmup, iters, |i| {
                launch(i).map_err(|e| RuntimeError::Driver(e.to_string()))
            })?),
            Some(buf) => time_cold(self.rt, buf, warmup, iters, launch),
        }
    }

    /// Runs `trial` for each configuration (only the first once the budget is spent) and
    /// keeps the fastest whose check passed (else the fastest).
    pub fn sweep<C: Clone>(
        &self,
        row: &mut Row,
        configs: &[C],
        label: impl Fn(&C) -> String,
        mut trial: impl FnMut(&C) -> Result<Trial>,
    ) -> Option<C> {
        let mut best: Option<(C, Trial)> = None;
        let mut skipped = 0;
        for (i, c) in configs.iter().enumerate() {
            if i > 0 && !self.sweeping() {
                skipped += 1;
                continue;
            }
            match trial(c) {
                Ok(t) => {
                    let mark = match &t.check {
                        Ok(s) => format!("ok ({s})"),
                        Err(e) => format!("WRONG ({e})"),
                    };
                    eprintln!("  {:<28} {:<62} {}  {mark}", row.workload, t.config, t.stats);
                    row.sweep.push((t.config.clone(), Ok(t.stats.median_us)));
                    let better = match &best {
                        None => true,
                        Some((_, b)) => match (t.check.is_ok(), b.check.is_ok()) {
                            (true, false) => true,
                            (false, true) => false,
                            _ => t.stats.median_us < b.stats.median_us,
                        },
                    };
                    if better {
                        best = Some((c.clone(), t));
                    }
                }
                Err(e) => {
                    let msg = format!("{e:#}");
                    eprintln!("  {:<28} {:<62} FAILED: {msg}", row.workload, label(c));
                    row.sweep.push((label(c), Err(msg)));
                }
            }
        }
        if skipped > 0 {
            let _ = write!(row.note, "{skipped} configurations skipped (time budget). ");
        }
        best.map(|(c, t)| {
            row.best = Some(t);
            c
        })
    }
}

// ---------------------------------------------------------------------------------------
// Inputs

/// Host copies of q, k, v (k/v `[B, Hkv, cap, D]`), for the references.
pub struct HostKv {
    /// Batch.
    pub batch: usize,
    /// Cache rows per (batch, KV head).
    pub cap: usize,
    /// `[B, q_rows, D]`.
    pub hq: HostTensor,
    /// `[B, Hkv, cap, D]`.
    pub hk: HostTensor,
    /// `[B, Hkv, cap, D]`.
    pub hv: HostTensor,
}

impl HostKv {
    /// The f64 K and V rows of (b, kv head).
    pub fn slab(&self, b: usize, h: usize) -> (Vec<f64>, Vec<f64>) {
        let row0 = (b * HKV + h) * self.cap;
        (rows_f64(&self.hk, row0, self.cap, D), rows_f64(&self.hv, row0, self.cap, D))
    }
}

/// q, k, v on the device with their host copies.
pub struct Inputs {
    /// `[B, q_rows, D]`.
    pub q: DeviceTensor,
    /// `[B, Hkv, cap, D]`.
    pub k: DeviceTensor,
    /// `[B, Hkv, cap, D]`.
    pub v: DeviceTensor,
    /// The host copies.
    pub host: HostKv,
}

impl std::ops::Deref for Inputs {
    type Target = HostKv;
    fn deref(&self) -> &HostKv {
        &self.host
    }
}

impl Inputs {
    /// Random bf16 q, k, v (uniform in [-1, 1]), generated in parallel and uploaded.
    pub fn new(rt: &Runtime, batch: usize, q_rows: usize, cap: usize, seed: u64) -> Result<Self> {
        let t0 = Instant::now();
        let hq = random_bf16(&[batch, q_rows, D], seed);
        let hk = random_bf16(&[batch, HKV, cap, D], seed + 1);
        let hv = random_bf16(&[batch, HKV, cap, D], seed + 2);
        let st = rt.stream();
        let (q, k, v) = (
            DeviceTensor::upload(st, &hq)?.read_only(),
            DeviceTensor::upload(st, &hk)?.read_only(),
            DeviceTensor::upload(st, &hv)?.read_only(),
        );
        rt.synchronize()?;
        eprintln!(
            "inputs B={batch} cap={cap}: {:.2} GB of K+V generated and uploaded in {:.1} s",
            2.0 * hk.numel() as f64 * 2.0 / 1e9,
            t0.elapsed().as_secs_f64()
        );
        Ok(Inputs { q, k, v, host: HostKv { batch, cap, hq, hk, hv } })
    }
}

/// Reference rows: `(flat output row, expected [D])`.
pub type RefRows = Vec<(usize, Vec<f64>)>;

/// f64 attention of query rows over positions of one KV slab, rows in parallel.
pub fn attend_rows(
    q: &HostTensor,
    slab: &(Vec<f64>, Vec<f64>),
    jobs: Vec<(usize, usize, Vec<usize>)>, // (q row, out row, positions)
    scale_log2: f64,
) -> RefRows {
    std::thread::scope(|s| {
        let hs: Vec<_> = jobs
            .into_iter()
            .map(|(qr, or, pos)| {
                s.spawn(move || {
                    let qv = rows_f64(q, qr, 1, D);
                    (or, attend(&qv, &slab.0, &slab.1, 0, &pos, D, scale_log2).0)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().expect("reference thread")).collect()
    })
}

/// Every output value finite, and the reference rows within [`OUT_TOL`].
pub fn check_out(out: &DeviceTensor, refs: &RefRows) -> std::result::Result<String, String> {
    check_host_out(&out.download().map_err(|e| format!("download: {e}"))?, refs)
}

/// [`check_out`] of a downloaded output.
pub fn check_host_out(host: &HostTensor, refs: &RefRows) -> std::result::Result<String, String> {
    let got = bf16s(host);
    if let Some(i) = got.iter().position(|x| !x.to_f32().is_finite()) {
        return Err(format!("non-finite output at flat index {i} ({})", got[i]));
    }
    if refs.is_empty() {
        return Ok("finite".into());
    }
    let scale = refs.iter().flat_map(|(_, w)| w.iter()).fold(f64::MIN_POSITIVE, |m, x| m.max(x.abs()));
    let mut worst: f64 = 0.0;
    for (row, want) in refs {
        for (g, w) in got[row * D..(row + 1) * D].iter().zip(want) {
            worst = worst.max((g.to_f64() - w).abs() / scale);
        }
    }
    if worst > OUT_TOL {
        return Err(format!("rel err {worst:.1e} > {OUT_TOL:.0e} on {} reference rows", refs.len()));
    }
    Ok(format!("finite, rel err {worst:.1e} on {} rows", refs.len()))
}

/// K and V bytes of `tokens` rows of `pairs` (batch, KV head) slabs.
pub fn kv_bytes(pairs: usize, tokens: usize) -> u64 {
    (pairs * tokens * 2 * D * 2) as u64
}

/// `log2(e) / sqrt(D)`.
pub fn scale_log2() -> f32 {
    tessera_kernels::default_scale_log2(D)
}

/// Split-decoder knobs: (BLOCK_N, WARPS, max_splits, STAGES).
pub type DecodeKnobs = (usize, usize, usize, usize);

/// The split-decoder sweep: (BLOCK_N, WARPS, STAGES) triples most likely to win first (the
/// time budget may cut the rest; the defaults 64/4/2 come early), or `--decode-tiles`,
/// each × `splits`.
pub fn decode_configs(args: &BenchArgs, splits: &[usize]) -> Vec<DecodeKnobs> {
    const DEFAULT: [(usize, usize, usize); 7] =
        [(64, 4, 2), (64, 8, 3), (32, 4, 3), (64, 8, 2), (32, 4, 2), (64, 4, 3), (128, 8, 2)];
    let mut v = Vec::new();
    for &(bn, w, st) in args.decode_tiles.as_deref().unwrap_or(&DEFAULT) {
        for &s in args.splits.as_deref().unwrap_or(splits) {
            v.push((bn, w, s, st));
        }
    }
    v
}

/// The decode params of a (BLOCK_N, WARPS, max_splits, STAGES) config.
pub fn decode_params(c: &DecodeKnobs) -> DecodeParams {
    DecodeParams { block_n: c.0, warps: c.1, max_splits: c.2, stages: c.3, ..DecodeParams::new(G, D) }
}

/// [`decode_params`] for the block-sparse split kernel, with `--min-blocks`.
pub fn sparse_decode_params(args: &BenchArgs, c: &DecodeKnobs) -> DecodeParams {
    DecodeParams { min_blocks: args.min_blocks, ..decode_params(c) }
}

/// The label of a (BLOCK_N, WARPS, max_splits, STAGES) config.
pub fn decode_label(c: &DecodeKnobs) -> String {
    format!("BLOCK_N={} WARPS={} STAGES={} max_splits={}", c.0, c.1, c.3, c.2)
}

/// The reference (b, kv head) slices checked: the first and the last.
pub fn check_pairs(batch: usize) -> Vec<(usize, usize)> {
    if batch == 1 {
        vec![(0, 0), (0, HKV - 1)]
    } else {
        vec![(0, 0), (batch - 1, HKV - 1)]
    }
}

/// Reference rows of a decode (`out [B, Hq, D]`) where `positions(b, h)` are attended.
pub fn decode_refs(x: &HostKv, on: bool, positions: impl Fn(usize, usize) -> Vec<usize>) -> RefRows {
    if !on {
        return Vec::new();
    }
    let mut refs = Vec::new();
    for (b, h) in check_pairs(x.batch) {
        let slab = x.slab(b, h);
        let pos = positions(b, h);
        let jobs = (0..G).map(|g| (b * HQ + h * G + g, b * HQ + h * G + g, pos.clone())).collect();
        refs.extend(attend_rows(&x.hq, &slab, jobs, scale_log2() as f64));
    }
    refs
}

/// Dense decode of all `N` rows at `x`'s batch, over the split-decoder sweep.
pub fn dense(cx: &Ctx, x: &Inputs, workload: &'static str, target: f64) -> Result<Row> {
    let b = x.batch;
    let mut row = Row::new(
        workload,
        format!("dense decode B{b} N={N} (DenseDecode: split-KV + LSE combine)"),
        kv_bytes(b * HKV, N),
        Some(target),
    );
    let refs = decode_refs(x, !cx.args.no_reference, |_, _| (0..N).collect());
    let out = DeviceTensor::poisoned(cx.rt.stream(), DType::BF16, &[b, HQ, D])?;
    let splits: &[usize] = if b == 1 { &[32, 64, 16, 128] } else { &[16, 8, 32] };
    cx.sweep(&mut row, &decode_configs(cx.args, splits), decode_label, |c| {
        let op = DenseDecode::new(cx.rt, decode_params(c))?;
        let (grid, split_len) = op.check_args(&x.q, &x.k, &x.v, N, &out, None)?;
        let scratch = Scratch::new();
        out.poison()?;
        op.launch_with(cx.rt, &scratch, &x.q, &x.k, &x.v, N, &out, None)?;
        cx.rt.synchronize()?;
        let check = check_out(&out, &refs);
        let stats = cx.time(|_| op.launch_with(cx.rt, &scratch, &x.q, &x.k, &x.v, N, &out, None))?;
        Ok(Trial { config: format!("{} (splits={}, split_len={split_len})", decode_label(c), grid[0]), stats, check })
    });
    Ok(row)
}

// ---------------------------------------------------------------------------------------

/// Runs a workload; an error (not a failing configuration: those are in the sweep)
/// becomes a row without a figure.
pub fn guarded(workload: &'static str, desc: &str, r: Result<Row>) -> Row {
    r.unwrap_or_else(|e| {
        eprintln!("{workload}: FAILED: {e:#}");
        let mut row = Row::new(workload, desc.to_string(), 0, None);
        row.note = format!("error: {e:#}");
        row
    })
}

/// The rows so far, written to the JSON file after every workload (so an interrupted run
/// still leaves what it measured).
pub struct Rows {
    /// The rows.
    pub rows: Vec<Row>,
    /// Where the JSON goes.
    pub json: Option<PathBuf>,
}

impl Rows {
    /// Adds a row and rewrites the JSON file.
    pub fn push(&mut self, row: Row) {
        self.rows.push(row);
        if let Some(p) = &self.json {
            let v: Vec<_> = self.rows.iter().map(Row::json).collect();
            let text = serde_json::to_string_pretty(&v).expect("JSON values") + "\n";
            if let Err(e) = std::fs::write(p, text) {
                eprintln!("writing {}: {e}", p.display());
            }
        }
    }
}

/// The table of `rows` (best configurations), `footer` printed under it.
pub fn print_table(rows: &[Row], footer: &str) {
    println!(
        "\n{:<27} {:>10} {:>8} {:>6} {:>9} {:>7} {:>6}  {:<60}",
        "workload", "median µs", "TB/s", "%ceil", "target µs", "met", "check", "best config"
    );
    for r in rows {
        match &r.best {
            Some(t) => {
                let tb = r.tb_per_s().unwrap_or(0.0);
                let target = r.target_us.map_or("-".to_string(), |x| format!("{x:.0}"));
                let met = match r.target_us {
                    Some(x) if t.stats.median_us <= x => "yes".to_string(),
                    Some(x) => format!("+{:.0}%", 100.0 * (t.stats.median_us / x - 1.0)),
                    None => "-".into(),
                };
                let mut cfg = t.config.clone();
                if let Some(f) = r.flops {
                    let _ = write!(cfg, " [{:.0} TFLOP/s]", f / (t.stats.median_us * 1e-6) / 1e12);
                }
                println!(
                    "{:<27} {:>10.1} {:>8.2} {:>5.0}% {:>9} {:>7} {:>6}  {}",
                    r.workload,
                    t.stats.median_us,
                    tb,
                    100.0 * tb / CEILING_TB_S,
                    target,
                    met,
                    if t.check.is_ok() { "ok" } else { "WRONG" },
                    cfg
                );
            }
            None => println!(
                "{:<27} {:>10} {}",
                r.workload,
                "-",
                if r.note.is_empty() { "no configuration ran" } else { &r.note }
            ),
        }
    }
    println!("{footer}");
    for r in rows.iter().filter(|r| !r.note.is_empty() && r.best.is_some()) {
        println!("  {}: {}", r.workload, r.note.trim());
    }
}

/// Like [`tessera_runtime::time`], but every timed iteration is preceded by an
/// asynchronous write of `flush` (outside its event pair, nothing synchronized in
/// between), so the iteration starts with an L2 holding none of its inputs and the stream
/// stays fed.
fn time_cold(
    rt: &Runtime,
    flush: &DeviceTensor,
    warmup: usize,
    iters: usize,
    mut launch: impl FnMut(usize) -> Result<(), KernelError>,
) -> Result<TimingStats> {
    anyhow::ensure!(iters > 0, "timing needs at least one iteration");
    let st = rt.stream();
    let bytes = flush.numel() * flush.dtype().size_bytes();
    st.context().bind_to_thread()?;
    let wipe = |i: usize| -> Result<()> {
        // SAFETY: the span is the whole (contiguous) flush buffer.
        unsafe { cudarc::driver::result::memset_d8_async(flush.device_ptr(), i as u8, bytes, st.cu_stream()) }?;
        Ok(())
    };
    for i in 0..warmup {
        wipe(i)?;
        launch(i)?;
    }
    let ctx = st.context();
    // Timing events: `new_event(None)` would make them with CU_EVENT_DISABLE_TIMING.
    let timed = || ctx.new_event(Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT));
    let events = (0..iters).map(|_| Ok((timed()?, timed()?))).collect::<Result<Vec<_>>>()?;
    st.synchronize()?;
    for (k, (start, end)) in events.iter().enumerate() {
        wipe(warmup + k)?;
        start.record(st)?;
        launch(warmup + k)?;
        end.record(st)?;
    }
    st.synchronize()?;
    let samples = events.iter().map(|(s, e)| Ok(s.elapsed_ms(e)? as f64 * 1e3)).collect::<Result<Vec<f64>>>()?;
    Ok(TimingStats::from_samples(samples).expect("iters > 0"))
}

#[cfg(test)]
mod tests {
    use super::{decode_configs, parse_decode_tile, BenchArgs};
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: BenchArgs,
    }

    #[test]
    fn splits_replace_each_workloads_split_sweep() {
        let a = Cli::try_parse_from(["t", "--decode-tiles", "64/4/2,32/4/4"]).unwrap().args;
        assert_eq!(decode_configs(&a, &[4, 8]), vec![(64, 4, 4, 2), (64, 4, 8, 2), (32, 4, 4, 4), (32, 4, 8, 4)]);
        let a = Cli::try_parse_from(["t", "--decode-tiles", "64/4/2", "--splits", "6,13"]).unwrap().args;
        assert_eq!(decode_configs(&a, &[4, 8]), vec![(64, 4, 6, 2), (64, 4, 13, 2)]);
        assert!(Cli::try_parse_from(["t", "--splits", "six"]).is_err());
    }

    #[test]
    fn decode_tiles_parse_and_refuse_bad_triples() {
        assert_eq!(parse_decode_tile("64/4/2"), Ok((64, 4, 2)));
        assert_eq!(parse_decode_tile(" 32 / 8 / 4 "), Ok((32, 8, 4)));
        for bad in ["64/4", "64/4/1", "0/4/2", "64/x/2", "64/4/2/1", ""] {
            assert!(parse_decode_tile(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
