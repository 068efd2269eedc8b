//! The selection methods of `tessera-kernels` as [`TuneTarget`](super::TuneTarget)s, at the shapes of
//! `tessera bench-selection` (32 query heads over 8 KV heads, d = 128):
//!
//! * `hip_select`: [`HipSelect`](tessera_kernels::hip::HipSelect) (HiP tree-pruned block selection: k = 512 tokens as 256
//!   blocks of 2, window 256), over CHILD_TILE;
//! * `centroid_decode`: [`CentroidDecode`](tessera_kernels::CentroidDecode) (Squeezed-Attention centroid lookup over a
//!   cache clustered by one Lloyd iteration of [`KMeansCluster`](tessera_kernels::KMeansCluster): 5% clusters, the top
//!   10% of them kept, the last 1024 tokens recent), over SLOTS × BLOCK_N × WARPS ×
//!   the recent rows' max_splits;
//! * `snapkv`: [`SnapKvCompress`](tessera_kernels::snapkv::SnapKvCompress) (SnapKV prompt compression: window 32, capacity 2048,
//!   max pooling 7), over POOL_TILE.
//!
//! Each job draws fresh seeded random inputs and computes its references once; each
//! candidate runs once into poisoned outputs and is checked — a valid result everywhere,
//! the f64 reference on the first and last (batch, KV head) slices up to near-ties
//! (f32 scores against f64 ones may swap neighbours of equal rank) — before it is timed
//! with CUDA events through the op's `launch_with` (scratch reused).

mod centroid;
mod hip;
mod snapkv;

pub use centroid::{CentroidConfig, CentroidDecodeTarget, CentroidShape};
pub use hip::{HipConfig, HipSelectTarget, HipShape};
pub use snapkv::{SnapConfig, SnapKvTarget, SnapShape};

use super::target::Failure;

/// A runtime error while checking (a download): classified like a launch error.
fn io(e: tessera_runtime::RuntimeError) -> Failure {
    Failure::classify(e.into())
}
