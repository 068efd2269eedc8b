//! The autotuner: for each kernel and shape bucket on this GPU, compile every candidate
//! (NVRTC, in parallel on CPU threads), run them in a worker process (a kernel that
//! faults kills only the worker), check each against the reference before timing it,
//! and store every trial and the winner in the tuning database in one transaction.
//!
//! A tunable kernel is a [`TuneTarget`]; the ones registered in [`TARGETS`], in the order
//! a full run tunes them (cheapest first, so a `--budget` run gets through most keys):
//!
//! * `hip_select`, `centroid_decode`, `snapkv`: the selection methods ([`selection`]):
//!   HiP's CHILD_TILE; centroid decode's BLOCK_N × WARPS × splits (16 packing programs);
//!   SnapKV's POOL_TILE;
//! * `topk_select`, `sink_window`, `block_sparse`, `tree_verify`: the `tessera-kernels`
//!   ops ([`ops`]), over their declared tune spaces (BLOCK_N, WARPS, STAGES, LM_TILE, ROWS)
//!   and the split count;
//! * `lm_infinite`, `dense`: the split decoders of [`decode_ops`] — `dense` is
//!   `DenseDecode`, the op the decoder runs (and dispatches through the database), over
//!   BLOCK_N × WARPS × STAGES × max_splits;
//! * `dense_decode`: the codegen sample pair `flash_decode` + `flash_decode_combine`
//!   ([`crate::decode`]), BLOCK_N × WARPS × MIN_BLOCKS × split length.
//!
//! See `docs/autotune.md`.

mod common;
pub mod decode_ops;
mod dense;
mod fault_probe;
mod key;
pub mod ops;
mod run;
pub mod selection;
mod target;
pub mod worker;

pub use common::SplitConfig;
pub use decode_ops::{DenseTarget, LmInfiniteShape, LmInfiniteTarget};
pub use dense::DenseDecodeTarget;
pub use key::{decode_bucket, decode_bucket_dims, decode_candidates, decode_key, DECODE_KERNEL};
pub use ops::{
    BlockSparseTarget, SinkWindowTarget, SparseShape, TopkConfig, TopkSelectTarget, TopkShape, TreeConfig, TreeShape,
    TreeVerifyTarget,
};
pub use run::{run, Args};
pub use selection::{
    CentroidConfig, CentroidDecodeTarget, CentroidShape, HipConfig, HipSelectTarget, HipShape, SnapConfig,
    SnapKvTarget, SnapShape,
};
pub use target::{make_key, target_key, Failure, TuneTarget};

/// A [`TuneTarget`] with its types erased, for the registry.
pub trait Tunable: Sync {
    fn name(&self) -> &'static str;
    /// Candidates over every shape of `--shapes` (for the overall progress bar).
    fn candidate_count(&self, spec: &str) -> anyhow::Result<usize>;
    /// Tunes every shape of `--shapes` (orchestrator side).
    #[doc(hidden)]
    fn tune(&self, cx: &mut run::Ctx) -> anyhow::Result<()>;
    /// Runs a job (worker side).
    fn work(&self, job: &worker::Job) -> anyhow::Result<()>;
}

impl<T: TuneTarget> Tunable for T {
    fn name(&self) -> &'static str {
        TuneTarget::name(self)
    }

    fn candidate_count(&self, spec: &str) -> anyhow::Result<usize> {
        Ok(self.shapes(spec)?.iter().map(|s| self.candidates(s).len()).sum())
    }

    fn tune(&self, cx: &mut run::Ctx) -> anyhow::Result<()> {
        run::tune_target(self, cx)
    }

    fn work(&self, job: &worker::Job) -> anyhow::Result<()> {
        worker::work(self, job)
    }
}

/// Every tunable kernel, in the order a full `tessera autotune` tunes them: by estimated
/// tuning time on an H200 (candidates × ~0.35 s, plus each job's inputs and references;
/// docs/autotune.md), cheapest first.
pub static TARGETS: [&dyn Tunable; 10] = [
    &HipSelectTarget,
    &SnapKvTarget,
    &TopkSelectTarget,
    &LmInfiniteTarget,
    &CentroidDecodeTarget,
    &SinkWindowTarget,
    &BlockSparseTarget,
    &TreeVerifyTarget,
    &DenseDecodeTarget,
    &DenseTarget,
];

/// Targets that exist for tests only: tuned when named in `--kernels`, never by default.
/// `fault_probe` faults on purpose (`autotune/fault_probe.rs`; `tests/gpu_fault.rs`).
pub static TEST_TARGETS: [&dyn Tunable; 1] = [&fault_probe::FaultProbeTarget];

/// The tunable kernel named `name` (a shipped one or a test target).
pub fn find_target(name: &str) -> Option<&'static dyn Tunable> {
    TARGETS.iter().chain(TEST_TARGETS.iter()).copied().find(|t| t.name() == name)
}
