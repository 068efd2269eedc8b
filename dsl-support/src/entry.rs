//! A uniform descriptor of a `#[kernel]`, so tools can list and build kernels by name.

use tessera_codegen::ir::Kernel;

use crate::{BuildError, KernelConfig, TuneSpace};

/// What every `#[kernel]` provides, as plain function pointers (`Name::ENTRY`).
#[derive(Clone, Copy, Debug)]
pub struct KernelEntry {
    /// The kernel's name (the Rust function's name).
    pub name: &'static str,
    /// The first line of the kernel function's doc comment ("" when it has none).
    pub summary: &'static str,
    /// Every compile-time parameter, including the warp count.
    pub comptime_params: &'static [&'static str],
    /// Builds and verifies the IR for a configuration.
    pub build: fn(&KernelConfig) -> Result<Kernel, BuildError>,
    /// The declared tune space.
    pub tune_space: fn() -> TuneSpace,
    /// The first value of every tuned parameter (and WARPS = 4 unless tuned).
    pub default_config: fn() -> KernelConfig,
    /// `default_config` plus the kernel's `example(..)` values for untuned parameters.
    pub example_config: fn() -> KernelConfig,
}
