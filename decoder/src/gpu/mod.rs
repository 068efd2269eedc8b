//! The GPU forward pass (issue 7): linear layers through cuBLAS (bf16 operands, f32
//! accumulation), everything else through Tessera kernels — tessera-kernels' RMSNorm,
//! fused add + RMSNorm, RoPE, SwiGLU, embedding, argmax, KV append, `DenseDecode` (decode
//! attention) and `TreeVerify` with a causal chain mask (prefill chunks of ≤ 64 tokens), plus
//! two small kernels of this crate ([`kernels`]). The residual stream is f32, activations
//! and the KV cache bf16.
//!
//! - [`weights`]: bf16 upload of [`crate::LlamaWeights`], or random weights made on the GPU;
//! - [`kv`]: the `[batch, kv_heads, capacity, head_dim]` cache per layer;
//! - [`ops`] / [`plan`]: the compiled ops and their attention configurations
//!   ([`KernelChoices`]: heuristics, or what a caller's tuning database chose); chunking,
//!   chain masks, split counts;
//! - [`forward`]: the forward pass, [`GpuModel`];
//! - [`generate`]: [`crate::Decoder`] for the GPU model (greedy on the device, top-p on the host);
//! - [`bench`](mod@bench) / [`validate`]: speed runs and the golden checks of `tessera decoder-check`.
//!
//! Nothing here needs CUDA to build: the driver, NVRTC and cuBLAS load at run time and
//! their absence is a [`GpuError`].

pub mod bench;
pub mod forward;
pub mod generate;
pub mod kernels;
pub mod kv;
pub mod ops;
pub mod plan;
pub mod validate;
pub mod weights;

pub use forward::{AttnTimer, GpuModel};
pub use ops::KernelChoices;
pub use weights::GpuWeights;

use tessera_kernels::KernelError;
use tessera_runtime::RuntimeError;

/// Why the GPU path failed.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    /// The CUDA runtime: no driver or device, NVRTC or cuBLAS missing, a failed launch.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// A kernel refused its arguments or failed to build.
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// A configuration the GPU path does not take (shapes, batch, context).
    #[error("GPU decoder: {0}")]
    Config(String),
    /// Weights that cannot be converted.
    #[error("GPU weights: {0}")]
    Weights(String),
}

impl From<cudarc::driver::DriverError> for GpuError {
    fn from(e: cudarc::driver::DriverError) -> Self {
        GpuError::Runtime(e.into())
    }
}

impl From<tessera_dsl_support::DslError> for GpuError {
    fn from(e: tessera_dsl_support::DslError) -> Self {
        GpuError::Kernel(e.into())
    }
}
