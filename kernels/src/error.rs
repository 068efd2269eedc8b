//! Typed argument errors and the shape/dtype view shared by host and device tensors.

use tessera_codegen::host::{HostData, HostTensor};
use tessera_codegen::ir::DType;
use tessera_dsl_support::DslError;
use tessera_runtime::{DeviceTensor, RuntimeError};

/// Why a kernel refused its arguments (before anything ran) or failed to run.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("{kernel}: `{arg}` has dtype {got:?}, expected {expected:?}")]
    DType { kernel: &'static str, arg: &'static str, expected: DType, got: DType },
    #[error("{kernel}: `{arg}` has shape {got:?}, expected {expected}")]
    Shape { kernel: &'static str, arg: &'static str, expected: String, got: Vec<usize> },
    #[error("{kernel}: `{arg}`{at:?} = {value} is outside [{lo}, {hi})")]
    IndexOutOfRange { kernel: &'static str, arg: &'static str, at: Vec<usize>, value: i64, lo: i64, hi: i64 },
    #[error("{kernel}: {message}")]
    Invalid { kernel: &'static str, message: String },
    #[error(transparent)]
    Dsl(#[from] DslError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// Dtype and shape of a kernel argument; host tensors also expose their data so index
/// tensors can be range-checked (device tensors cannot: their indices are checked on the
/// host copy, or come from a kernel that produces them in range, e.g. `topk_block_select`).
pub trait TensorMeta {
    fn dtype(&self) -> DType;
    fn shape(&self) -> &[usize];
    fn host(&self) -> Option<&HostTensor> {
        None
    }
}

impl TensorMeta for HostTensor {
    fn dtype(&self) -> DType {
        HostTensor::dtype(self)
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn host(&self) -> Option<&HostTensor> {
        Some(self)
    }
}

impl TensorMeta for DeviceTensor {
    fn dtype(&self) -> DType {
        DeviceTensor::dtype(self)
    }
    fn shape(&self) -> &[usize] {
        DeviceTensor::shape(self)
    }
}

/// Checks dtype and shape: `None` entries of `expected` match any size.
pub(crate) fn expect(
    kernel: &'static str,
    arg: &'static str,
    t: &dyn TensorMeta,
    dtype: DType,
    expected: &[Option<usize>],
) -> Result<(), KernelError> {
    if t.dtype() != dtype {
        return Err(KernelError::DType { kernel, arg, expected: dtype, got: t.dtype() });
    }
    let s = t.shape();
    let ok = s.len() == expected.len() && s.iter().zip(expected).all(|(a, e)| e.is_none_or(|e| e == *a));
    if !ok {
        let exp: Vec<String> = expected.iter().map(|e| e.map_or("_".to_string(), |v| v.to_string())).collect();
        return Err(KernelError::Shape { kernel, arg, expected: format!("[{}]", exp.join(", ")), got: s.to_vec() });
    }
    Ok(())
}

/// Integer values of a host index tensor (i32 or i64), if `t` is on the host.
pub(crate) fn host_ints(t: &dyn TensorMeta) -> Option<Vec<i64>> {
    t.host().map(|h| match &h.data {
        HostData::I32(v) => v.iter().map(|&x| x as i64).collect(),
        HostData::I64(v) => v.clone(),
        _ => h.to_f64().iter().map(|&x| x as i64).collect(),
    })
}

pub(crate) fn invalid(kernel: &'static str, message: impl Into<String>) -> KernelError {
    KernelError::Invalid { kernel, message: message.into() }
}

/// Multi-index of flat position `i` in `shape`.
pub(crate) fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for ax in (0..shape.len()).rev() {
        idx[ax] = i % shape[ax];
        i /= shape[ax];
    }
    idx
}
