//! Tessera's compiler core: the tile IR, its verifier, the CUDA C++ emitter and the CPU
//! interpreter that serves as the executable specification.
//!
//! This crate knows nothing about CUDA drivers; `tessera-runtime` compiles and launches
//! what it emits.

pub mod emit;
pub mod host;
pub mod interp;
pub mod ir;
pub mod problems;
pub mod samples;
