//! Decode attention kernels written with `#[kernel]` (issue 4).
//!
//! KV layout `[batch, kv_head, seq, head_dim]`, bf16 data, f32 accumulation, `HEAD_DIM`
//! and the GQA `GROUP` are compile-time parameters. Every kernel comes with:
//!
//! - the `#[kernel]` functions (generated `Name::build/cpu/new`, `NameKernel::run_cpu/launch`),
//! - a host-side op (`DenseDecode`, `SinkWindowDecode`, `BlockSparseDecode`, `TopkBlockSelect`,
//!   `TreeVerify`, `KvAppend`, `Landmarks`) whose `check_args` refuses wrong dtypes,
//!   inconsistent shapes and out-of-range indices with a [`KernelError`] before anything
//!   runs, and whose `run_cpu` / `launch` run the kernel(s) on the interpreter / the GPU,
//! - an f64 reference in [`reference`](mod@reference),
//! - GPU-checkable cases in [`cases`] (`gpu_cases(seed)`).
//!
//! Log-sum-exp values (`lse_part`, the combine's optional `lse`) are in **log2 units of the
//! scaled scores**: `lse = log2(Σ_j exp2(scale_log2 · q·k_j))` = natural LSE / ln 2, with
//! `scale_log2 = softmax_scale · log2(e)`. An empty set of keys gives LSE = -inf and a
//! zero output.
//!
//! See `docs/kernels.md` for grids, behaviours and the DSL gaps met.

pub mod append;
pub mod block_sparse;
pub mod cases;
pub mod centroid;
pub mod centroid_calibration;
pub mod centroid_two_level;
pub mod combine;
pub mod decoder_ops;
pub mod dense;
mod error;
pub mod hip;
pub mod lm_infinite;
pub mod online_softmax;
pub mod recall;
pub mod reference;
pub mod registry;
pub mod scratch;
pub mod sink_window;
pub mod snapkv;
pub mod topk;
pub mod tree;

pub use append::{KvAppend, Landmarks};
pub use block_sparse::BlockSparseDecode;
pub use cases::{all_gpu_cases, all_gpu_cases as gpu_cases, unverified_gpu_cases, KernelCase};
pub use centroid::{CentroidDecode, KMeansCluster};
pub use combine::LseCombine;
pub use decoder_ops::{AddRmsNorm, Argmax, Embedding, RmsNorm, Rope, RopeTable, SwiGlu};
pub use dense::{DecodeParams, DenseDecode};
pub use error::{KernelError, TensorMeta};
pub use lm_infinite::{LmInfiniteArgs, LmInfiniteDecode};
pub use scratch::Scratch;
pub use sink_window::SinkWindowDecode;
pub use topk::TopkBlockSelect;
pub use tree::{TreeParams, TreeVerify};

/// `(split_len, num_splits)` for `len` keys, `split_len` a multiple of `block_n` and at
/// most `max_splits` splits (at least one split, even when `len` is 0).
pub fn split_plan(len: usize, block_n: usize, max_splits: usize) -> (usize, usize) {
    let per = len.div_ceil(max_splits.max(1)).max(1);
    let split_len = per.div_ceil(block_n) * block_n;
    (split_len, len.div_ceil(split_len).max(1))
}

/// `1 / sqrt(head_dim) · log2(e)`: the default `scale_log2` argument.
pub fn default_scale_log2(head_dim: usize) -> f32 {
    (std::f64::consts::LOG2_E / (head_dim as f64).sqrt()) as f32
}
