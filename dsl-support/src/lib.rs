//! Run-time support of Tessera's `#[kernel]` DSL.
//!
//! Kernel authors write tile programs as Rust functions under [`kernel`]:
//!
//! ```ignore
//! use tessera_dsl_support::prelude::*;
//!
//! #[kernel(tune(BLOCK = [256, 512, 1024], WARPS = [4, 8]), constraint = "BLOCK >= WARPS * 32")]
//! fn vector_add<const BLOCK: usize, const WARPS: usize>(x: Tensor<f32, 1>, y: Tensor<f32, 1>, out: &mut Tensor<f32, 1>) {
//!     let start = program_id(0) * BLOCK as i32;
//!     let xs = x.load([range(start, BLOCK)]);
//!     let ys = y.load([range(start, BLOCK)]);
//!     out.store([range(start, BLOCK)], xs + ys);
//! }
//! ```
//!
//! The macro turns the function into a unit struct (`VectorAdd`) with `build(&config)`
//! (the tile IR for one set of compile-time values), `tune_space()`, `default_config()`,
//! `cpu(config)` / `new(&rt, config)` returning a typed launcher (`VectorAddKernel`) with
//! `run_cpu(grid, args...)` and `launch(&stream, grid, args...)`.
//!
//! This crate holds what user code and generated code name: [`KernelConfig`],
//! [`TuneSpace`], the errors, the marker types of the kernel signature ([`Tensor`],
//! [`bf16`], [`f16`](struct@f16)) and the hidden [`rt`] module the generated code records IR through.
//! See `docs/dsl.md` for the language reference.

mod config;
mod entry;
mod error;
pub mod rt;

/// The config value of an element-type parameter (`<KV>` in a kernel signature) that makes
/// it `dtype`: 0 = bf16 (the default), 1 = f16, 2 = f32; `None` for other dtypes.
pub fn elem_code(dtype: tessera_codegen::ir::DType) -> Option<i64> {
    use tessera_codegen::ir::DType;
    match dtype {
        DType::BF16 => Some(0),
        DType::F16 => Some(1),
        DType::F32 => Some(2),
        _ => None,
    }
}

/// The dtype of an element-type code (the inverse of [`elem_code`]).
pub fn elem_dtype_of(code: i64) -> Option<tessera_codegen::ir::DType> {
    use tessera_codegen::ir::DType;
    match code {
        0 => Some(DType::BF16),
        1 => Some(DType::F16),
        2 => Some(DType::F32),
        _ => None,
    }
}

#[doc(hidden)]
pub use config::ConstraintFn as __ConstraintFn;
pub use config::{KernelConfig, TuneSpace};
pub use entry::KernelEntry;
pub use error::{BuildError, DslError};
pub use tessera_dsl::{kernel, tile_fn};

#[doc(hidden)]
pub use tessera_codegen as __codegen;
#[doc(hidden)]
pub use tessera_runtime as __runtime;

use std::marker::PhantomData;

/// A global tensor parameter of element type `T` and rank `R` (marker type: it only appears
/// in `#[kernel]` signatures). `Tensor<T, R>` is read-only, `&mut Tensor<T, R>` writable.
pub struct Tensor<T, const R: usize>(PhantomData<T>);

/// A tile: the parameter and result type of a [`tile_fn`] (marker type: `#[tile_fn]`
/// rewrites the signature; tiles are IR values recorded into the calling kernel).
pub enum Tile {}

/// The bfloat16 element type, as written in kernel signatures and casts.
#[allow(non_camel_case_types)]
pub struct bf16;

/// The IEEE half element type, as written in kernel signatures and casts.
#[allow(non_camel_case_types)]
pub struct f16;

/// Everything a kernel file needs: `use tessera_dsl_support::prelude::*;`.
pub mod prelude {
    pub use crate::{bf16, f16, kernel, tile_fn, BuildError, DslError, KernelConfig, Tensor, Tile, TuneSpace};
    pub use tessera_codegen::host::{HostTensor, ScalarValue};
    pub use tessera_codegen::ir::{DType, Kernel};
    pub use tessera_runtime::{CudaStream, DeviceTensor, Runtime};
}
