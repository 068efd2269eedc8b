//! Linear layers through cuBLAS: `y = x · wᵀ` with bf16 operands, f32 accumulation
//! (`CUBLAS_COMPUTE_32F`) and a bf16 or f32 result.
//!
//! Tensors are row-major with unit inner stride; the row stride may be larger than the
//! row (a view into a wider buffer, e.g. the last token's row of each sequence), so outputs
//! can be written straight into slices of fused buffers.

use std::ffi::c_void;

use cudarc::cublas::sys::{cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t, cudaDataType_t};
use cudarc::cublas::{result, CudaBlas};
use tessera_codegen::ir::DType;

use crate::cublas_libs;
use crate::device::Runtime;
use crate::error::{Result, RuntimeError};
use crate::tensor::DeviceTensor;

/// A cuBLAS handle bound to a runtime's stream.
#[derive(Debug)]
pub struct Blas {
    blas: CudaBlas,
}

/// `[rows, cols]` and the row stride of a rank-2 row-major view with unit inner stride.
fn rows_of(what: &str, t: &DeviceTensor, dtypes: &[DType]) -> Result<(usize, usize, usize)> {
    if !dtypes.contains(&t.dtype()) {
        return Err(RuntimeError::Blas(format!("`{what}` has dtype {}, expected one of {dtypes:?}", t.dtype())));
    }
    let (s, st) = (t.shape(), t.strides());
    if s.len() != 2 {
        return Err(RuntimeError::Blas(format!("`{what}` must be rank 2, got shape {s:?}")));
    }
    let (rows, cols) = (s[0], s[1]);
    let ld = if rows <= 1 { cols.max(1) as i64 } else { st[0] };
    if (cols > 1 && st[1] != 1) || ld < cols as i64 {
        return Err(RuntimeError::Blas(format!(
            "`{what}` {s:?} with strides {st:?}: rows must be contiguous with a row stride >= {cols}"
        )));
    }
    let fits = |n: usize| n <= i32::MAX as usize;
    if !fits(rows) || !fits(cols) || !fits(ld as usize) {
        return Err(RuntimeError::Blas(format!("`{what}` {s:?} exceeds cuBLAS's 32-bit sizes")));
    }
    Ok((rows, cols, ld as usize))
}

/// Sizes and leading dimensions of one checked `y = x · wᵀ`.
struct Operands {
    m: usize,
    n: usize,
    k: usize,
    ldx: usize,
    ldw: usize,
    ldy: usize,
}

fn data_type(d: DType) -> cudaDataType_t {
    match d {
        DType::BF16 => cudaDataType_t::CUDA_R_16BF,
        DType::F16 => cudaDataType_t::CUDA_R_16F,
        _ => cudaDataType_t::CUDA_R_32F,
    }
}

impl Blas {
    /// Finds cuBLAS ([`cublas_libs::ensure_cublas`]) and creates a handle on `rt`'s stream.
    pub fn new(rt: &Runtime) -> Result<Self> {
        cublas_libs::ensure_cublas()?;
        Ok(Blas { blas: CudaBlas::new(rt.stream().clone())? })
    }

    /// Checks the operands of [`Self::linear`]; returns `(M, N, K)`.
    pub fn check_linear(x: &DeviceTensor, w: &DeviceTensor, y: &DeviceTensor) -> Result<(usize, usize, usize)> {
        let d = Self::operands(x, w, y)?;
        Ok((d.m, d.n, d.k))
    }

    fn operands(x: &DeviceTensor, w: &DeviceTensor, y: &DeviceTensor) -> Result<Operands> {
        let (m, k, ldx) = rows_of("x", x, &[DType::BF16])?;
        let (n, kw, ldw) = rows_of("w", w, &[DType::BF16])?;
        let (my, ny, ldy) = rows_of("y", y, &[DType::BF16, DType::F32])?;
        if kw != k || my != m || ny != n {
            return Err(RuntimeError::Blas(format!(
                "y {:?} = x {:?} · wᵀ with w {:?}: shapes do not fit",
                y.shape(),
                x.shape(),
                w.shape()
            )));
        }
        if y.is_read_only() {
            return Err(RuntimeError::ReadOnly { param: "y".into() });
        }
        Ok(Operands { m, n, k, ldx, ldw, ldy })
    }

    /// `y[M, N] = x[M, K] · w[N, K]ᵀ` on the stream, asynchronously: `x`, `w` bf16, `y` bf16
    /// or f32, accumulation in f32. Nothing is launched when a check fails.
    pub fn linear(&self, x: &DeviceTensor, w: &DeviceTensor, y: &DeviceTensor) -> Result<()> {
        let Operands { m, n, k, ldx, ldw, ldy } = Self::operands(x, w, y)?;
        if m == 0 || n == 0 {
            return Ok(());
        }
        let (alpha, beta) = (1.0f32, 0.0f32);
        // Row-major y = x·wᵀ is column-major yᵀ = w·xᵀ: A = w (stored as its column-major
        // transpose, so op T), B = x (column-major [K, M], op N), C = yᵀ [N, M].
        // SAFETY: pointers are live device allocations of `rt`'s context; shapes, leading
        // dimensions and dtypes were checked above so every access stays in the views.
        unsafe {
            result::gemm_ex(
                *self.blas.handle(),
                cublasOperation_t::CUBLAS_OP_T,
                cublasOperation_t::CUBLAS_OP_N,
                n as i32,
                m as i32,
                k as i32,
                &alpha as *const f32 as *const c_void,
                w.device_ptr() as *const c_void,
                data_type(w.dtype()),
                ldw as i32,
                x.device_ptr() as *const c_void,
                data_type(x.dtype()),
                ldx as i32,
                &beta as *const f32 as *const c_void,
                y.device_ptr() as *mut c_void,
                data_type(y.dtype()),
                ldy as i32,
                cublasComputeType_t::CUBLAS_COMPUTE_32F,
                cublasGemmAlgo_t::CUBLAS_GEMM_DFALT,
            )?;
        }
        Ok(())
    }
}
