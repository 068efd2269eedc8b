//! The worker process of the autotuner (`tessera autotune-worker --job FILE`).
//!
//! It runs the candidates of one (kernel, shape) job in order and prints one JSON line per
//! candidate as soon as it is done. Each candidate is first checked on a small odd shape
//! against the f64 reference and on the full shape against the reference (when the CPU
//! can afford it) or the first correct candidate, with outputs poisoned, and only then
//! timed. A launch fault poisons the CUDA context, so the worker exits after reporting
//! one; the parent starts a new worker for the remaining candidates.

use std::io::Write;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::decode::{relative_error, DecodeConfig, DecodeInputs, DecodePipeline, DecodeShape};
use tessera_runtime::{Runtime, RuntimeError};

/// What a worker is asked to do.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Job {
    pub shape: DecodeShape,
    /// `(index, config)`: the index is echoed back in the result lines.
    pub candidates: Vec<(usize, DecodeConfig)>,
    pub warmup: usize,
    pub iters: usize,
    pub seed: u64,
    /// Test hook: the worker aborts (as a faulting kernel would take it down) when it
    /// reaches this candidate index.
    #[serde(default)]
    pub crash_at: Option<usize>,
}

/// One result line.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Outcome {
    pub index: usize,
    /// `ok`, `wrong-result`, `compile-error`, `launch-fault` (as in the database).
    pub status: String,
    pub median_us: Option<f64>,
    pub p10_us: Option<f64>,
    pub p90_us: Option<f64>,
    pub error: Option<String>,
}

/// Tolerance of the bf16 output against the f64 reference.
const TOLERANCE: f64 = 1e-2;

/// Runs a job file; returns after the last candidate or the first launch fault.
pub fn run(job_file: &std::path::Path) -> Result<()> {
    let job: Job = serde_json::from_slice(&std::fs::read(job_file)?)?;
    let rt = Runtime::new(0)?;
    let s = job.shape;
    // A small odd shape of the same family, cheap to check against f64 on the CPU.
    let small = DecodeShape { batch: 1, kv_heads: 2, seq_len: 1237, ..s };
    let small_inputs = DecodeInputs::random(&rt, &small, job.seed, true)?;
    let small_ref = small_inputs.reference(&small).expect("host copies kept");
    let affordable = s.batch * s.q_heads() * s.seq_len * s.head_dim <= 1 << 28;
    let inputs = DecodeInputs::random(&rt, &s, job.seed + 7, affordable)?;
    let mut reference = inputs.reference(&s);
    let out = std::io::stdout();
    for &(index, config) in &job.candidates {
        if job.crash_at == Some(index) {
            eprintln!("crash injected at candidate {index}");
            std::process::abort();
        }
        let (outcome, fatal) =
            match try_candidate(&rt, &job, config, &small, &small_inputs, &small_ref, &inputs, &mut reference) {
                Ok(t) => (
                    Outcome {
                        index,
                        status: "ok".into(),
                        median_us: Some(t.median_us),
                        p10_us: Some(t.p10_us),
                        p90_us: Some(t.p90_us),
                        error: None,
                    },
                    false,
                ),
                Err(f) => {
                    let fatal = f.status == "launch-fault";
                    (
                        Outcome {
                            index,
                            status: f.status.into(),
                            median_us: None,
                            p10_us: None,
                            p90_us: None,
                            error: Some(f.message),
                        },
                        fatal,
                    )
                }
            };
        let mut lock = out.lock();
        writeln!(lock, "{}", serde_json::to_string(&outcome)?)?;
        lock.flush()?;
        if fatal {
            std::process::exit(3);
        }
    }
    Ok(())
}

struct Failure {
    status: &'static str,
    message: String,
}

fn classify(e: anyhow::Error) -> Failure {
    let status = match e.downcast_ref::<RuntimeError>() {
        Some(RuntimeError::Compile { .. }) => "compile-error",
        Some(RuntimeError::SharedMemory { .. }) | Some(RuntimeError::Threads { .. }) => "compile-error",
        _ => "launch-fault",
    };
    Failure { status, message: format!("{e:#}") }
}

#[allow(clippy::too_many_arguments)]
fn try_candidate(
    rt: &Runtime,
    job: &Job,
    config: DecodeConfig,
    small: &DecodeShape,
    small_inputs: &DecodeInputs,
    small_ref: &[f64],
    inputs: &DecodeInputs,
    reference: &mut Option<Vec<f64>>,
) -> Result<tessera_runtime::TimingStats, Failure> {
    let wrong = |what: &str, err: f64| Failure {
        status: "wrong-result",
        message: format!("{what}: relative error {err:.3e} > {TOLERANCE:e}"),
    };
    let p = DecodePipeline::new(rt, *small, config).map_err(classify)?;
    let got = p.run_checked(small_inputs).map_err(classify)?;
    let e = relative_error(&got, small_ref);
    if e > TOLERANCE {
        return Err(wrong(&format!("{small}"), e));
    }
    let p = DecodePipeline::new(rt, job.shape, config).map_err(classify)?;
    let got = p.run_checked(inputs).map_err(classify)?;
    match reference {
        Some(r) => {
            let e = relative_error(&got, r);
            if e > TOLERANCE {
                return Err(wrong(&format!("{}", job.shape), e));
            }
        }
        // Too large for an f64 reference: the first correct candidate becomes it.
        None if got.iter().all(|x| x.is_finite()) => *reference = Some(got),
        None => return Err(wrong(&format!("{}", job.shape), f64::INFINITY)),
    }
    p.time(inputs, job.warmup, job.iters).map_err(classify)
}
