//! Tessera: a tile-program DSL, CUDA code generator and autotuner for long-context
//! attention kernels.
//!
//! This crate is the facade: it re-exports the compiler core ([`codegen`]) and the GPU
//! runtime ([`runtime`]) and holds what the `tessera` command line shares with tests,
//! such as running sample problems on a GPU ([`gpu`]).

pub use tessera_codegen as codegen;
/// The kernel DSL (`use tessera::dsl::prelude::*;`). Code the macro generates names
/// `::tessera_dsl_support`, so a crate defining kernels depends on `tessera-dsl-support`.
pub use tessera_dsl_support as dsl;
pub use tessera_dsl_support::kernel;
/// The shipped attention kernels, written with `#[kernel]`.
pub use tessera_kernels as kernels;
pub use tessera_runtime as runtime;

pub mod autotune;
pub mod decode;
pub mod dispatch;
pub mod gpu;
pub mod inputs;
