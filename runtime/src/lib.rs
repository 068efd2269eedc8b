//! Tessera's GPU runtime: finds NVRTC, JIT-compiles emitted CUDA C++ to PTX with a disk
//! cache, moves tensors to and from the device, and launches kernels with arguments
//! checked against the kernel signature.
//!
//! Nothing here panics when CUDA is missing: NVRTC (needed to compile, no GPU needed)
//! and the driver (needed to run) are probed first and their absence is a
//! [`RuntimeError`].

pub mod blas;
pub mod cache;
pub mod cublas_libs;
pub mod device;
pub mod doctor;
pub mod error;
pub mod launch;
pub mod libs;
pub mod nvrtc;
pub mod tensor;
pub mod timing;

pub use blas::Blas;
pub use cache::{CacheStats, PtxCache};
pub use device::{DeviceInfo, Runtime};
pub use doctor::{doctor, DoctorReport};
pub use error::{Result, RuntimeError};
pub use launch::{check_args, ArgDesc, LaunchArg, LoadedKernel};
pub use nvrtc::{compile_ptx, nvrtc_version, resource_usage, CompiledPtx, ResourceUsage};
pub use tensor::DeviceTensor;
pub use timing::{time, TimingStats};

/// cudarc's stream type, for launch and timing calls.
pub use cudarc::driver::CudaStream;
