//! Tessera: a tile-program DSL, CUDA code generator and autotuner for long-context
//! attention kernels.
//!
//! This crate is the facade: it re-exports the compiler core ([`codegen`]) and the GPU
//! runtime ([`runtime`]) and holds what the `tessera` command line shares with tests,
//! such as running sample problems on a GPU ([`gpu`]).

pub use tessera_codegen as codegen;
pub use tessera_runtime as runtime;

pub mod autotune;
pub mod decode;
pub mod dispatch;
pub mod gpu;
