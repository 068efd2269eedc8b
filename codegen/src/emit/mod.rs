//! CUDA C++ emission.
//!
//! # Kernel ABI
//!
//! The emitted `extern "C" __global__` function is named after the kernel and takes its
//! parameters in declaration order:
//! - a tensor of rank R: the element pointer (`const T*` or `T*`), then R `long long`
//!   sizes, then R `long long` strides (in elements);
//! - a runtime scalar: its value (`float`, `int`, `unsigned`, `long long`, or `int` 0/1
//!   for bool).
//!
//! The launch uses `threads` threads per block and `shared_bytes` bytes of dynamic shared
//! memory; `program_id(a)` is `blockIdx.{x,y,z}`.

/// The CUDA C++ of one kernel and what its launch needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmittedKernel {
    /// Entry-point name (`extern "C"`).
    pub entry: String,
    /// Complete translation unit: the tile header followed by the kernel.
    pub source: String,
    /// Threads per block.
    pub threads: u32,
    /// Dynamic shared memory per block, in bytes.
    pub shared_bytes: u32,
}
