//! `tessera autotune`: the orchestrating process.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use tessera_codegen::emit::emit_cuda;
use tessera_runtime::Runtime;
use tessera_tuning_db::{Trial, TrialStatus, TuneKey, TuningDb};

use super::target::{target_key, TuneTarget};
use super::worker::{Job, Outcome};
use super::{find_target, Tunable, TARGETS};

#[derive(clap::Args)]
pub struct Args {
    /// Kernels to tune (comma-separated): hip_select, snapkv, topk_select, lm_infinite,
    /// centroid_decode, sink_window, block_sparse, tree_verify, dense_decode, dense;
    /// default all of them, in that order (cheapest first).
    #[arg(long, value_delimiter = ',')]
    kernels: Vec<String>,
    /// `decode`: each kernel's shape preset (dense, dense_decode: B ∈ {1, 8} × N ∈ {32K,
    /// 128K}, 32 q / 8 kv heads, d=128; see docs/autotune.md for the others), or a list of
    /// BATCHxSEQ_LEN shapes (the other dimensions from the preset; tree_verify also takes
    /// BATCHxPREFIXxT for one tree size).
    #[arg(long, default_value = "decode")]
    shapes: String,
    /// Tuning database URL (`sqlite://…` or `postgres://…`); default `TESSERA_DB`, else
    /// the SQLite file in the cache folder.
    #[arg(long)]
    db: Option<String>,
    /// Re-tunes keys that already have a fresh winner.
    #[arg(long)]
    force: bool,
    /// Stops starting new keys after this long (e.g. `90s`, `10m`, `1h`).
    #[arg(long)]
    budget: Option<String>,
    /// Timed iterations per candidate.
    #[arg(long, default_value_t = 30)]
    iters: usize,
    /// Seconds a candidate may take before its worker is killed (status `timeout`).
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// Test hook: the worker crashes on this candidate index of every key, to exercise
    /// fault isolation (the candidate is recorded as `launch-fault`, tuning goes on).
    #[arg(long, hide = true)]
    inject_crash: Option<usize>,
}

fn parse_budget(s: &str) -> Result<Duration> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().with_context(|| format!("budget `{s}`: expected e.g. 90s, 10m, 1h"))?;
    Ok(Duration::from_secs(match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => bail!("budget `{s}`: unit must be s, m or h"),
    }))
}

/// What one key's tuning produced, for the summary.
pub(super) struct Summary {
    key: TuneKey,
    winner: Option<(String, f64)>,
    default: Option<(String, f64)>,
    counts: [usize; 5],
    skipped_fresh: bool,
}

/// The state of one `tessera autotune` run, shared by the kernels it tunes (opaque).
pub struct Ctx<'a> {
    a: &'a Args,
    rt: &'a Runtime,
    db: &'a TuningDb,
    run_id: tessera_tuning_db::RunId,
    multi: MultiProgress,
    overall: ProgressBar,
    started: Instant,
    budget: Option<Duration>,
    summaries: Vec<Summary>,
    /// Keys (`kernel shape`) left untuned because `--budget` was spent.
    over_budget: Vec<String>,
}

pub fn run(a: Args) -> Result<()> {
    let names: Vec<&str> = if a.kernels.is_empty() {
        TARGETS.iter().map(|t| t.name()).collect()
    } else {
        a.kernels.iter().map(|s| s.trim()).filter(|s| !s.is_empty()).collect()
    };
    let targets: Vec<&dyn Tunable> = names
        .iter()
        .map(|n| {
            find_target(n).ok_or_else(|| {
                let known: Vec<&str> = TARGETS.iter().map(|t| t.name()).collect();
                anyhow!("`{n}` has no tune space (tunable: {})", known.join(", "))
            })
        })
        .collect::<Result<_>>()?;
    let budget = a.budget.as_deref().map(parse_budget).transpose()?;
    // Every kernel's `--shapes` first: bad input fails before the GPU and the database open.
    let mut total = 0;
    for t in &targets {
        total += t.candidate_count(&a.shapes).with_context(|| format!("--shapes for {}", t.name()))?;
    }
    let rt = Runtime::new(0)?;
    let db = TuningDb::open(a.db.as_deref())?;
    let run_id = db.start_run(
        env!("CARGO_PKG_VERSION"),
        &format!("autotune --kernels {} --shapes {}", names.join(","), a.shapes),
    )?;
    println!("device {} ({}), database {}", rt.info().name, rt.arch(), db.location());
    let multi = MultiProgress::new();
    let overall = multi.add(ProgressBar::new(total as u64));
    overall.set_style(
        ProgressStyle::with_template("{prefix:>10} [{bar:40}] {pos}/{len} candidates, {elapsed} elapsed, ETA {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    overall.set_prefix("overall");
    let mut cx = Ctx {
        a: &a,
        rt: &rt,
        db: &db,
        run_id,
        multi,
        overall,
        started: Instant::now(),
        budget,
        summaries: Vec::new(),
        over_budget: Vec::new(),
    };
    for t in &targets {
        t.tune(&mut cx)?;
    }
    cx.overall.finish();
    print_summary(&cx.summaries);
    // Said after the table too: with no terminal the progress bars' log lines are not
    // drawn at all, and a partial run must not look complete.
    if !cx.over_budget.is_empty() {
        println!(
            "budget spent: {} key(s) not tuned ({}); run the same command again to tune them (fresh keys are skipped)",
            cx.over_budget.len(),
            cx.over_budget.join(", ")
        );
    }
    Ok(())
}

/// Tunes every shape of `--shapes` of one kernel: one key per shape, skipped when fresh
/// (unless `--force`), its trials and winner written in one transaction.
pub(super) fn tune_target<T: TuneTarget>(t: &T, cx: &mut Ctx) -> Result<()> {
    let a = cx.a;
    for shape in t.shapes(&a.shapes)? {
        let key = target_key(cx.rt, t, &shape)?;
        let candidates = t.candidates(&shape);
        if !a.force && cx.db.has_fresh(&key)? {
            cx.overall.inc(candidates.len() as u64);
            cx.summaries.push(Summary { key, winner: None, default: None, counts: [0; 5], skipped_fresh: true });
            continue;
        }
        if cx.budget.is_some_and(|b| cx.started.elapsed() > b) {
            cx.multi.println(format!("budget spent: {} {} not tuned", key.kernel, key.shape_bucket))?;
            cx.over_budget.push(format!("{} {}", key.kernel, key.shape_bucket));
            continue;
        }
        let bar = cx.multi.add(ProgressBar::new(candidates.len() as u64));
        bar.set_style(
            ProgressStyle::with_template("{prefix:>24} [{bar:40}] {pos}/{len} {msg}").expect("valid template"),
        );
        bar.set_prefix(format!("{} {shape}", t.name()));
        bar.set_message("compiling");
        let pruned = precompile(t, cx.rt, &shape, &candidates);
        let n_pruned = pruned.iter().filter(|t| t.is_some()).count() as u64;
        bar.inc(n_pruned);
        cx.overall.inc(n_pruned);
        let trials = tune_key(t, a, &shape, &candidates, pruned, &bar, &cx.overall)?;
        bar.finish_with_message("done");
        let winner = Trial::fastest(&trials).cloned();
        cx.db.record_run(&cx.run_id, &key, &trials, winner.as_ref())?;
        let heuristic = serde_json::to_value(t.heuristic(&shape, cx.rt.info().sm_count as usize))?;
        let timed = |tr: &Trial| -> Option<(String, f64)> {
            let c: T::Config = serde_json::from_value(tr.config.clone()).ok()?;
            Some((c.to_string(), tr.median_us?))
        };
        let default = trials.iter().filter(|tr| tr.status == TrialStatus::Ok && tr.config == heuristic).find_map(timed);
        let mut counts = [0; 5];
        for tr in &trials {
            counts[TrialStatus::ALL.iter().position(|s| *s == tr.status).unwrap()] += 1;
        }
        cx.summaries.push(Summary {
            key,
            winner: winner.as_ref().and_then(timed),
            default,
            counts,
            skipped_fresh: false,
        });
    }
    Ok(())
}

/// Compiles every candidate's kernels ([`TuneTarget::kernels`]) to CUBIN on CPU threads,
/// filling the kernel cache (memory and disk) so the worker only loads them (no driver JIT
/// per candidate), and prunes what this GPU cannot run: more
/// dynamic shared memory than a block may opt into, or more registers per block than an
/// SM has. Returns a trial for each pruned or uncompilable candidate (`compile-error`).
fn precompile<T: TuneTarget>(t: &T, rt: &Runtime, shape: &T::Shape, candidates: &[T::Config]) -> Vec<Option<Trial>> {
    let arch = rt.arch();
    let smem_limit = rt.info().max_shared_per_block_optin;
    const REGISTERS_PER_SM: u32 = 65536;
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).min(16);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<std::sync::Mutex<Option<Trial>>> =
        candidates.iter().map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(c) = candidates.get(i) else { break };
                let config = serde_json::to_value(c).expect("serialisable");
                let fail = |msg: String| Some(Trial::failed(config.clone(), TrialStatus::CompileError, msg));
                let verdict = match t.kernels(shape, c) {
                    Err(e) => fail(format!("{e:#}")),
                    Ok(kernels) => kernels.iter().find_map(|k| {
                        let e = emit_cuda(k);
                        if e.shared_bytes as usize > smem_limit {
                            fail(format!(
                                "{} needs {} B of shared memory; this GPU allows {smem_limit} B per block",
                                e.entry, e.shared_bytes
                            ))
                        } else if let Err(err) = rt.cache().get_or_compile_cubin(&e.source, &e.entry, &arch) {
                            fail(format!("{err}"))
                        } else {
                            match tessera_runtime::resource_usage(&e.source, &e.entry, &arch) {
                                Ok(r) if r.registers * e.threads > REGISTERS_PER_SM => fail(format!(
                                    "{}: {} registers x {} threads exceed the {REGISTERS_PER_SM} registers of an SM",
                                    e.entry, r.registers, e.threads
                                )),
                                _ => None,
                            }
                        }
                    }),
                };
                *results[i].lock().expect("no poisoning") = verdict;
            });
        }
    });
    results.into_iter().map(|m| m.into_inner().expect("no poisoning")).collect()
}

/// Runs the candidates without an outcome yet in worker processes, restarting a worker
/// after a fault or a timeout, and returns one trial per candidate.
fn tune_key<T: TuneTarget>(
    t: &T,
    a: &Args,
    shape: &T::Shape,
    candidates: &[T::Config],
    mut outcomes: Vec<Option<Trial>>,
    bar: &ProgressBar,
    overall: &ProgressBar,
) -> Result<Vec<Trial>> {
    let config_json = |i: usize| serde_json::to_value(&candidates[i]).expect("serialisable");
    let exe = std::env::current_exe()?;
    let dir = std::env::temp_dir().join(format!("tessera-autotune-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    while let Some(first) = outcomes.iter().position(|o| o.is_none()) {
        let pending: Vec<(usize, serde_json::Value)> =
            (first..candidates.len()).filter(|&i| outcomes[i].is_none()).map(|i| (i, config_json(i))).collect();
        let job = Job {
            kernel: t.name().to_string(),
            shape: serde_json::to_value(shape)?,
            candidates: pending.clone(),
            warmup: 5,
            iters: a.iters,
            seed: 0x7e55e7a,
            crash_at: a.inject_crash,
        };
        let job_file = dir.join("job.json");
        std::fs::write(&job_file, serde_json::to_vec(&job)?)?;
        let mut child = Command::new(&exe)
            .arg("autotune-worker")
            .arg("--job")
            .arg(&job_file)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting the autotune worker")?;
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().expect("piped");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut stderr = child.stderr.take().expect("piped");
        let stderr_text = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        let mut current = 0;
        while let Some(&(index, _)) = pending.get(current) {
            match rx.recv_timeout(Duration::from_secs(a.timeout)) {
                Ok(line) => {
                    let o: Outcome = serde_json::from_str(&line).map_err(|e| anyhow!("worker said `{line}`: {e}"))?;
                    let status = TrialStatus::parse(&o.status)?;
                    // A worker that reports a launch fault exits right after (its CUDA
                    // context is gone): the next candidate needs a new worker, not a wait
                    // that would blame the dead one's exit on it.
                    let worker_done = status == TrialStatus::LaunchFault;
                    let config = config_json(o.index);
                    outcomes[o.index] = Some(match (status, o.median_us) {
                        (TrialStatus::Ok, Some(m)) => {
                            Trial::ok(config, m, o.p10_us.unwrap_or(m), o.p90_us.unwrap_or(m))
                        }
                        _ => Trial::failed(config, status, o.error.unwrap_or_default()),
                    });
                    bar.inc(1);
                    overall.inc(1);
                    if let Some((best, t)) = best_so_far(&outcomes, candidates) {
                        bar.set_message(format!("best {t:.1} µs ({best})"));
                    }
                    current += 1;
                    if worker_done {
                        break;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = child.kill();
                    outcomes[index] = Some(Trial::failed(
                        config_json(index),
                        TrialStatus::Timeout,
                        format!("no result within {} s", a.timeout),
                    ));
                    bar.inc(1);
                    overall.inc(1);
                    break;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // The worker died before reporting this candidate: it faulted.
                    let status = child.wait()?;
                    let err = stderr_text.join().unwrap_or_default();
                    let tail: String =
                        err.lines().rev().take(5).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join(" | ");
                    outcomes[index] = Some(Trial::failed(
                        config_json(index),
                        TrialStatus::LaunchFault,
                        format!("worker exited ({status}): {tail}"),
                    ));
                    bar.inc(1);
                    overall.inc(1);
                    break;
                }
            }
        }
        let _ = child.wait();
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(outcomes.into_iter().map(|o| o.expect("every candidate has an outcome")).collect())
}

fn best_so_far<C: Clone + std::fmt::Display>(outcomes: &[Option<Trial>], candidates: &[C]) -> Option<(C, f64)> {
    outcomes
        .iter()
        .enumerate()
        .filter_map(|(i, o)| Some((candidates[i].clone(), o.as_ref()?.median_us?)))
        .min_by(|a, b| a.1.total_cmp(&b.1))
}

fn print_summary(summaries: &[Summary]) {
    println!(
        "\n{:<14} {:<34} {:<50} {:>10} {:>11} {:>8}  trials (ok/wrong/compile/fault/timeout)",
        "kernel", "shape bucket", "winner", "winner µs", "default µs", "speedup"
    );
    for s in summaries {
        if s.skipped_fresh {
            println!("{:<14} {:<34} already tuned (fresh record; --force re-tunes)", s.key.kernel, s.key.shape_bucket);
            continue;
        }
        let (w, wt) =
            s.winner.as_ref().map(|(c, t)| (c.clone(), format!("{t:.1}"))).unwrap_or(("none".into(), "-".into()));
        let (dt, speedup) = match (&s.default, &s.winner) {
            (Some((_, d)), Some((_, w))) => (format!("{d:.1}"), format!("{:.2}x", d / w)),
            (Some((_, d)), None) => (format!("{d:.1}"), "-".into()),
            _ => ("-".into(), "-".into()),
        };
        let c = s.counts;
        println!(
            "{:<14} {:<34} {:<50} {:>10} {:>11} {:>8}  {}/{}/{}/{}/{}",
            s.key.kernel, s.key.shape_bucket, w, wt, dt, speedup, c[0], c[1], c[2], c[3], c[4]
        );
    }
}
