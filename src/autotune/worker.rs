//! The worker process of the autotuner (`tessera autotune-worker --job FILE`).
//!
//! It runs the candidates of one (kernel, shape) job in order and prints one JSON line
//! ([`Outcome`]) per candidate as soon as it is done. Each candidate is checked against
//! the reference with poisoned outputs before it is timed
//! ([`super::TuneTarget::run_candidate`]). A launch fault poisons the CUDA context, so
//! the worker exits after reporting one; the parent starts a new worker for the
//! remaining candidates.

use std::io::Write;

use anyhow::{anyhow, Result};
use serde::{Deserialize, Serialize};
use tessera_runtime::Runtime;

use super::target::{Failure, TuneTarget};
use super::{find_target, DECODE_KERNEL};

/// What a worker is asked to do.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// The kernel ([`TuneTarget::name`]); jobs written before there were several are
    /// dense decode.
    #[serde(default = "dense_decode")]
    pub kernel: String,
    /// The kernel's `Shape`, as JSON.
    pub shape: serde_json::Value,
    /// `(index, config)`: the index is echoed back in the result lines.
    pub candidates: Vec<(usize, serde_json::Value)>,
    pub warmup: usize,
    pub iters: usize,
    pub seed: u64,
    /// Test hook: the worker aborts (as a faulting kernel would take it down) when it
    /// reaches this candidate index.
    #[serde(default)]
    pub crash_at: Option<usize>,
}

fn dense_decode() -> String {
    DECODE_KERNEL.into()
}

/// One result line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub index: usize,
    /// `ok`, `wrong-result`, `compile-error`, `launch-fault` (as in the database).
    pub status: String,
    pub median_us: Option<f64>,
    pub p10_us: Option<f64>,
    pub p90_us: Option<f64>,
    pub error: Option<String>,
}

/// Runs a job file; returns after the last candidate or the first launch fault.
pub fn run(job_file: &std::path::Path) -> Result<()> {
    let job: Job = serde_json::from_slice(&std::fs::read(job_file)?)?;
    let target = find_target(&job.kernel).ok_or_else(|| anyhow!("no tunable kernel `{}`", job.kernel))?;
    target.work(&job)
}

/// The worker loop of one target.
pub(super) fn work<T: TuneTarget>(t: &T, job: &Job) -> Result<()> {
    let shape: T::Shape = serde_json::from_value(job.shape.clone())?;
    let rt = Runtime::new(0)?;
    let mut bench = t.prepare(&rt, &shape, job.seed)?;
    let out = std::io::stdout();
    for (index, config) in &job.candidates {
        let index = *index;
        if job.crash_at == Some(index) {
            eprintln!("crash injected at candidate {index}");
            std::process::abort();
        }
        let result = match serde_json::from_value::<T::Config>(config.clone()) {
            Ok(c) => t.run_candidate(&rt, &mut bench, &c, job.warmup, job.iters),
            Err(e) => Err(Failure { status: "compile-error", message: format!("config {config}: {e}") }),
        };
        let (outcome, fatal) = match result {
            Ok(s) => (
                Outcome {
                    index,
                    status: "ok".into(),
                    median_us: Some(s.median_us),
                    p10_us: Some(s.p10_us),
                    p90_us: Some(s.p90_us),
                    error: None,
                },
                false,
            ),
            Err(f) => (
                Outcome {
                    index,
                    status: f.status.into(),
                    median_us: None,
                    p10_us: None,
                    p90_us: None,
                    error: Some(f.message),
                },
                f.status == "launch-fault",
            ),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autotune::{TopkSelectTarget, TARGETS};
    use crate::decode::{DecodeConfig, DecodeShape};

    #[test]
    fn jobs_round_trip_through_json() {
        let shape = TopkSelectTarget.shapes("decode").unwrap()[0];
        let job = Job {
            kernel: "topk_select".into(),
            shape: serde_json::to_value(shape).unwrap(),
            candidates: TopkSelectTarget
                .candidates(&shape)
                .iter()
                .enumerate()
                .map(|(i, c)| (i, serde_json::to_value(c).unwrap()))
                .collect(),
            warmup: 5,
            iters: 30,
            seed: 7,
            crash_at: Some(1),
        };
        let text = serde_json::to_string(&job).unwrap();
        let back: Job = serde_json::from_str(&text).unwrap();
        assert_eq!(back, job);
        assert_eq!(serde_json::from_value::<crate::autotune::TopkShape>(back.shape).unwrap(), shape);
        assert!(TARGETS.iter().any(|t| t.name() == back.kernel));
    }

    #[test]
    fn an_old_job_without_a_kernel_is_dense_decode() {
        let shape = DecodeShape { batch: 1, kv_heads: 8, group: 4, seq_len: 4096, head_dim: 128 };
        let c = DecodeConfig { block_n: 64, warps: 8, min_blocks: 0, split_len: 1024 };
        let text = serde_json::json!({
            "shape": shape, "candidates": [[0, c]], "warmup": 1, "iters": 2, "seed": 3
        })
        .to_string();
        let job: Job = serde_json::from_str(&text).unwrap();
        assert_eq!(job.kernel, DECODE_KERNEL);
        assert_eq!(serde_json::from_value::<DecodeShape>(job.shape).unwrap(), shape);
        assert_eq!(serde_json::from_value::<DecodeConfig>(job.candidates[0].1.clone()).unwrap(), c);
    }

    #[test]
    fn outcomes_round_trip_through_json() {
        let o = Outcome {
            index: 3,
            status: "wrong-result".into(),
            median_us: None,
            p10_us: None,
            p90_us: None,
            error: Some("x".into()),
        };
        assert_eq!(serde_json::from_str::<Outcome>(&serde_json::to_string(&o).unwrap()).unwrap(), o);
    }
}
