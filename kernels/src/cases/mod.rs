//! GPU-checkable cases: random inputs, poisoned outputs, an f64 reference, and the same
//! case runnable on the interpreter (`run_cpu`) or a GPU (`run_gpu`: upload, launch the
//! host op's `launch` — i.e. the generated `Name::new(&rt, &cfg)?.launch(..)` — download).
//!
//! ```ignore
//! let rt = Runtime::new(0)?;
//! for mut c in tessera_kernels::all_gpu_cases(7) {
//!     c.run_gpu(&rt)?;
//!     println!("{} rel_err {:e}", c.name(), c.check()?);
//! }
//! ```

mod append;
mod centroid;
mod decode;
mod hip;
mod lm_infinite;
mod snapkv;
mod topk;
mod tree;
mod two_level;

pub use append::{append_gpu_cases, AppendCase};
pub use centroid::{centroid_gpu_cases, CentroidCase};
pub use decode::{
    block_sparse_gpu_cases, dense_gpu_cases, head_dim_gpu_cases, random_selection, sink_window_gpu_cases, DecodeCase,
    DecodeKind,
};
pub use hip::{hip_gpu_cases, HipCase};
pub use lm_infinite::{lm_infinite_gpu_cases, LmInfiniteCase};
pub use snapkv::{snapkv_gpu_cases, SnapKvCase};
pub use topk::{topk_gpu_cases, TopkCase};
pub use tree::{random_trees, tree_gpu_cases, TreeCase};
pub use two_level::{centroid_two_level_gpu_cases, CentroidTwoLevelCase};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use tessera_codegen::host::{HostData, HostTensor};
use tessera_codegen::ir::DType;
use tessera_runtime::{DeviceTensor, Runtime};

use crate::centroid::{CentroidDecode, ClusterOut, KMeansCluster};
use crate::dense::DecodeParams;
use crate::error::{KernelError, TensorMeta};
use crate::hip::HipSelect;
use crate::lm_infinite::{LmInfiniteArgs, LmInfiniteDecode};
use crate::reference::{self as r, DecodeDims};
use crate::sink_window::union_len;
use crate::snapkv::{Pool, SnapKvCompress};
use crate::tree::TreeParams;
use crate::{
    BlockSparseDecode, DenseDecode, KvAppend, Landmarks, RopeTable, SinkWindowDecode, TopkBlockSelect, TreeVerify,
};

/// bf16 outputs: relative error (of the largest reference magnitude) allowed.
pub const BF16_TOL: f64 = 1e-2;
/// f16 outputs: the same, three more mantissa bits.
pub const F16_TOL: f64 = 5e-3;
/// LSE (f32, log2 units): error allowed relative to max(1, |largest LSE|).
pub const LSE_TOL: f64 = 1e-3;

/// One kernel problem with inputs, outputs and reference.
pub trait KernelCase {
    fn name(&self) -> String;
    /// Fills every output with NaN (integers: -12345).
    fn poison(&mut self);
    /// Poisons the outputs, then runs on the CPU interpreter.
    fn run_cpu(&mut self) -> Result<(), KernelError>;
    /// Poisons the outputs, uploads, launches on `rt`, synchronizes and downloads.
    fn run_gpu(&mut self, rt: &Runtime) -> Result<(), KernelError>;
    /// The worst relative error against the f64 reference, or why the outputs are wrong.
    fn check(&self) -> Result<f64, String>;
    /// Bytes the kernel(s) must read (the KV bytes attended, plus queries / landmarks).
    fn bytes_read(&self) -> u64;
}

/// The clusters a centroid lookup kept for (b, h) `bh`, decoded from its outputs
/// `(keep_start, keep_len, keep_count)` (host copies, `keep` slots per head) against that
/// head's cluster `starts` ([`crate::centroid::kept_clusters`]), ascending ids.
fn kept_cluster_ids(
    bh: usize,
    (ks, kl, kc): (&[f64], &[f64], &[f64]),
    keep: usize,
    starts: &[f64],
) -> Result<Vec<usize>, String> {
    let slots = bh * keep..(bh + 1) * keep;
    crate::centroid::kept_clusters(starts, &ks[slots.clone()], &kl[slots], kc[bh])
        .map_err(|e| format!("(b,h) {bh}: {e}"))
}

fn poison(t: &mut HostTensor) {
    match &mut t.data {
        HostData::I32(v) => v.iter_mut().for_each(|x| *x = -12345),
        HostData::I64(v) => v.iter_mut().for_each(|x| *x = -12345),
        HostData::U32(v) => v.iter_mut().for_each(|x| *x = 12345),
        _ => *t = HostTensor::full(t.dtype(), &t.shape.clone(), f64::NAN),
    }
}

fn up(rt: &Runtime, t: &HostTensor) -> Result<DeviceTensor, KernelError> {
    Ok(DeviceTensor::upload(rt.stream(), t)?)
}

fn rand_bf16(rng: &mut StdRng, shape: &[usize], amp: f64) -> HostTensor {
    HostTensor::random(DType::BF16, shape, -amp, amp, rng)
}

fn within(what: &str, err: f64, tol: f64) -> Result<f64, String> {
    if err <= tol {
        Ok(err)
    } else {
        Err(format!("{what}: relative error {err:e} > {tol:e}"))
    }
}

fn check_lse(got: &HostTensor, want: &[f64]) -> Result<f64, String> {
    let g = got.to_f64();
    let scale = want.iter().filter(|x| x.is_finite()).fold(1.0f64, |m, x| m.max(x.abs()));
    let mut worst: f64 = 0.0;
    for (i, (a, b)) in g.iter().zip(want).enumerate() {
        let e = if a == b { 0.0 } else { (a - b).abs() / scale };
        if e.is_nan() || e > LSE_TOL {
            return Err(format!("lse element {i}: got {a}, want {b}"));
        }
        worst = worst.max(e);
    }
    Ok(worst)
}

fn dims(batch: usize, kv_heads: usize, group: usize, cap: usize, head_dim: usize) -> DecodeDims {
    DecodeDims { batch, kv_heads, group, cap, head_dim }
}

fn lse_params(group: usize, head_dim: usize) -> DecodeParams {
    DecodeParams { write_lse: true, ..DecodeParams::new(group, head_dim) }
}

/// [`lse_params`] with three pipeline buffers (the `STAGES` tune value besides 2).
fn staged3(group: usize, head_dim: usize) -> DecodeParams {
    DecodeParams { stages: 3, ..lse_params(group, head_dim) }
}

/// The GPU suite: every kernel on fresh random inputs (seeded), odd lengths, GQA 1–8,
/// head dims 64 and 128, edge cases (empty selections, window > sequence, T = 1 trees).
pub fn all_gpu_cases(seed: u64) -> Vec<Box<dyn KernelCase>> {
    let mut v: Vec<Box<dyn KernelCase>> = Vec::new();
    for c in lm_infinite_gpu_cases(seed) {
        v.push(Box::new(c));
    }
    for c in dense_gpu_cases(seed) {
        v.push(Box::new(c));
    }
    for c in sink_window_gpu_cases(seed) {
        v.push(Box::new(c));
    }
    for c in block_sparse_gpu_cases(seed) {
        v.push(Box::new(c));
    }
    for c in topk_gpu_cases(seed) {
        v.push(Box::new(c));
    }
    for c in tree_gpu_cases(seed) {
        v.push(Box::new(c));
    }
    for c in append_gpu_cases(seed) {
        v.push(Box::new(c));
    }
    for c in hip_gpu_cases(seed) {
        v.push(Box::new(c));
    }
    for c in snapkv_gpu_cases(seed) {
        v.push(Box::new(c));
    }
    for c in centroid_gpu_cases(seed) {
        v.push(Box::new(c));
    }
    for c in centroid_two_level_gpu_cases(seed) {
        v.push(Box::new(c));
    }
    // Head dims 96 and 256 and bf16 centroids: first passed on the H200 on 2026-11-29.
    for c in head_dim_gpu_cases(seed) {
        v.push(Box::new(c));
    }
    for c in centroid_gpu_cases(seed) {
        v.push(Box::new(c.with_centroid_dtype(DType::BF16)));
    }
    for c in centroid_two_level_gpu_cases(seed) {
        v.push(Box::new(c.with_centroid_dtype(DType::BF16)));
    }
    v
}

/// GPU cases of features that have passed the interpreter and NVRTC but not yet a GPU run
/// (`tessera check --suite unverified`, not part of `all`); once they pass on a GPU they
/// move into [`all_gpu_cases`]. Empty now: head dims 96/256 and bf16 centroids moved.
pub fn unverified_gpu_cases(_seed: u64) -> Vec<Box<dyn KernelCase>> {
    Vec::new()
}
