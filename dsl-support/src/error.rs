//! Errors of building, tuning and launching DSL kernels.

use tessera_codegen::interp::InterpError;
use tessera_codegen::ir::VerifyError;
use tessera_runtime::RuntimeError;

/// Why a kernel could not be built for a configuration.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum BuildError {
    /// A compile-time parameter the kernel reads has no value in the config.
    #[error("kernel `{kernel}`: compile-time parameter `{param}` has no value in the config")]
    MissingParam { kernel: String, param: String },
    /// The config names a parameter the kernel does not declare.
    #[error("kernel `{kernel}` has no compile-time parameter `{param}` (known: {known})")]
    UnknownParam { kernel: String, param: String, known: String },
    /// A tuned parameter has a value outside its declared list.
    #[error("kernel `{kernel}`: {param} = {value} is not in the tune space {allowed:?}")]
    NotInTuneSpace { kernel: String, param: String, value: i64, allowed: Vec<i64> },
    /// The config breaks the kernel's `constraint`.
    #[error("kernel `{kernel}`: the config {config} breaks the constraint `{constraint}`")]
    Constraint { kernel: String, constraint: String, config: String },
    /// A compile-time value is out of range where it is used (negative tile length, ...).
    #[error("kernel `{kernel}`: {message}")]
    Comptime { kernel: String, message: String },
    /// The recorded program does not type-check (mixed dtypes without a cast, shapes that
    /// do not broadcast, ...).
    #[error("kernel `{kernel}` does not verify: {error}")]
    Verify { kernel: String, error: VerifyError },
}

/// Any failure of a typed launcher.
#[derive(Debug, thiserror::Error)]
pub enum DslError {
    #[error(transparent)]
    Build(#[from] BuildError),
    /// NVRTC, the driver, argument dtype/rank checks of a GPU launch.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// Argument dtype/rank checks and faults of the CPU interpreter.
    #[error(transparent)]
    Interp(#[from] InterpError),
    /// `launch` on a launcher made with `cpu(...)`: there is no loaded GPU module.
    #[error("kernel `{kernel}` was built for the CPU only; construct it with `new(&rt, config)` to launch on a GPU")]
    NotLoaded { kernel: String },
}
