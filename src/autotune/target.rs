//! What the autotuner needs to know about a kernel: the [`TuneTarget`] trait, the shared
//! key builder, the failure statuses a worker reports, and the registry of tunable kernels.

use std::fmt::Display;

use anyhow::Result;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tessera_codegen::emit::emit_cuda;
use tessera_codegen::ir::Kernel;
use tessera_runtime::{Runtime, RuntimeError, TimingStats};
use tessera_tuning_db::{candidates_checksum, source_hash, DeviceFingerprint, TuneKey};

/// A tunable kernel (or kernel pipeline). Implementations are unit structs; the
/// orchestrator, the worker and [`crate::dispatch::Dispatcher`] only go through this.
///
/// Contract: [`Self::candidates`] depends only on [`Self::bucket`] of the shape (so the
/// candidate-set checksum of a key is stable), and [`Self::heuristic`] is one of them.
pub trait TuneTarget: Sync {
    /// A problem size (serialised into the worker's job file).
    type Shape: Clone + std::fmt::Debug + PartialEq + Serialize + DeserializeOwned + Display + Send + Sync;
    /// One configuration (serialised into the job file and the database's `config`).
    type Config: Clone + std::fmt::Debug + PartialEq + Serialize + DeserializeOwned + Display + Send + Sync;
    /// Worker-side state of one job: inputs on the device, references.
    type Bench;

    /// The name tuned and dispatched under (the key's `kernel` column).
    fn name(&self) -> &'static str;
    /// The key's `dtype` column.
    fn dtype(&self) -> &'static str {
        "bf16"
    }
    /// The shapes of `--shapes`: `decode` (or `default`) is this kernel's preset, else a
    /// comma-separated list of `BATCHxSEQ_LEN` (the other dimensions from the preset).
    fn shapes(&self, spec: &str) -> Result<Vec<Self::Shape>>;
    /// The shape bucket string of the key.
    fn bucket(&self, shape: &Self::Shape) -> String;
    /// The candidates of the bucket (the op's knobs, pruned to what makes sense for it).
    fn candidates(&self, shape: &Self::Shape) -> Vec<Self::Config>;
    /// The documented untuned choice (used by dispatch without a record); a candidate.
    fn heuristic(&self, shape: &Self::Shape, sm_count: usize) -> Self::Config;
    /// The IR kernels whose source depends on `config`: compiled and pruned by the
    /// orchestrator before any worker starts; their emitted source at the heuristic is
    /// the key's source hash.
    fn kernels(&self, shape: &Self::Shape, config: &Self::Config) -> Result<Vec<Kernel>>;
    /// Worker side, once per job: inputs (fresh random, seeded) and references.
    fn prepare(&self, rt: &Runtime, shape: &Self::Shape, seed: u64) -> Result<Self::Bench>;
    /// Worker side, once per candidate: build the op, run it once with poisoned outputs
    /// and check it against the reference, then time it (CUDA events, median).
    fn run_candidate(
        &self,
        rt: &Runtime,
        bench: &mut Self::Bench,
        config: &Self::Config,
        warmup: usize,
        iters: usize,
    ) -> Result<TimingStats, Failure>;
}

/// Why a candidate has no timing (statuses as in the database).
#[derive(Debug)]
pub struct Failure {
    /// `wrong-result`, `compile-error` or `launch-fault`.
    pub status: &'static str,
    pub message: String,
}

impl Failure {
    pub fn wrong(message: String) -> Self {
        Failure { status: "wrong-result", message }
    }

    /// Classifies an error: NVRTC failures, resources a config cannot have and refused
    /// arguments are `compile-error` (the worker goes on); anything else is a
    /// `launch-fault` (the CUDA context may be poisoned: the worker exits).
    pub fn classify(e: anyhow::Error) -> Self {
        let compile = |r: &RuntimeError| {
            matches!(r, RuntimeError::Compile { .. } | RuntimeError::SharedMemory { .. } | RuntimeError::Threads { .. })
        };
        let dsl = |d: &tessera_dsl_support::DslError| match d {
            tessera_dsl_support::DslError::Build(_) => true,
            tessera_dsl_support::DslError::Runtime(r) => compile(r),
            _ => false,
        };
        let is_compile = if let Some(r) = e.downcast_ref::<RuntimeError>() {
            compile(r)
        } else if let Some(d) = e.downcast_ref::<tessera_dsl_support::DslError>() {
            dsl(d)
        } else if let Some(k) = e.downcast_ref::<tessera_kernels::KernelError>() {
            use tessera_kernels::KernelError as K;
            match k {
                K::Dsl(d) => dsl(d),
                K::Runtime(r) => compile(r),
                K::DType { .. } | K::Shape { .. } | K::IndexOutOfRange { .. } | K::Invalid { .. } => true,
            }
        } else {
            false
        };
        Failure { status: if is_compile { "compile-error" } else { "launch-fault" }, message: format!("{e:#}") }
    }
}

/// The full tuning key of `target` at `shape` on this GPU: the device fingerprint, NVRTC
/// and Tessera versions, the bucket, the hash of the emitted source of the heuristic
/// configuration and the checksum of the bucket's candidate set.
pub fn target_key<T: TuneTarget + ?Sized>(rt: &Runtime, target: &T, shape: &T::Shape) -> Result<TuneKey> {
    let default = target.heuristic(shape, rt.info().sm_count as usize);
    let source: String = target.kernels(shape, &default)?.iter().map(|k| emit_cuda(k).source).collect();
    let configs: Vec<serde_json::Value> =
        target.candidates(shape).iter().map(serde_json::to_value).collect::<Result<_, _>>()?;
    make_key(rt, target.name(), target.dtype(), target.bucket(shape), &source, &configs)
}

/// A key from its parts (the device columns from `rt`).
pub fn make_key(
    rt: &Runtime,
    kernel: &str,
    dtype: &str,
    shape_bucket: String,
    source: &str,
    configs: &[serde_json::Value],
) -> Result<TuneKey> {
    let info = rt.info();
    let (maj, min) = tessera_runtime::nvrtc_version()?;
    Ok(TuneKey {
        kernel: kernel.into(),
        dtype: dtype.into(),
        shape_bucket,
        device: DeviceFingerprint {
            gpu_name: info.name.clone(),
            compute_capability: format!("{}.{}", info.compute_capability.0, info.compute_capability.1),
            uuid: if info.uuid.is_empty() { info.pci_bus_id.clone() } else { info.uuid.clone() },
            driver_version: format!("{}.{}", info.driver_version.0, info.driver_version.1),
        },
        nvrtc_version: format!("{maj}.{min}"),
        tessera_version: env!("CARGO_PKG_VERSION").into(),
        source_hash: source_hash(source),
        candidates_checksum: candidates_checksum(configs),
    })
}
