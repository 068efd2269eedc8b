//! Typed, strided tensors in device memory.

use std::sync::Arc;

use cudarc::driver::{CudaSlice, CudaStream, DevicePtr};
use tessera_codegen::host::{contiguous_strides, HostTensor};
use tessera_codegen::ir::DType;

use crate::error::{Result, RuntimeError};

/// A tensor in device memory: a dtype, a shape and strides (in elements) over a shared
/// byte buffer, starting `offset` elements in.
///
/// Clones and [`view`](Self::view)s share the buffer. All copies run on the stream the
/// buffer was allocated on and are synchronous towards the host. A tensor can be marked
/// read-only; a launch then refuses it for a parameter the kernel writes.
#[derive(Clone, Debug)]
pub struct DeviceTensor {
    dtype: DType,
    shape: Vec<usize>,
    strides: Vec<i64>,
    offset: usize,
    read_only: bool,
    /// The allocation (at least one byte, so empty tensors have a valid pointer).
    buffer: Arc<CudaSlice<u8>>,
    /// Logical size of the allocation in bytes (may be 0).
    bytes: usize,
}

fn check_dtype(dtype: DType) -> Result<()> {
    if dtype == DType::Bool {
        return Err(RuntimeError::Tensor("bool tensors are not supported; use i32".into()));
    }
    Ok(())
}

/// The smallest and one-past-largest element offsets a view reaches (`None` if empty).
fn span(shape: &[usize], strides: &[i64], offset: usize) -> Option<(i64, i64)> {
    if shape.contains(&0) {
        return None;
    }
    let (mut lo, mut hi) = (offset as i64, offset as i64);
    for (&n, &s) in shape.iter().zip(strides) {
        let reach = (n as i64 - 1) * s;
        if reach < 0 {
            lo += reach;
        } else {
            hi += reach;
        }
    }
    Some((lo, hi + 1))
}

impl DeviceTensor {
    fn alloc(stream: &Arc<CudaStream>, dtype: DType, shape: &[usize]) -> Result<Self> {
        check_dtype(dtype)?;
        let n: usize = shape.iter().product();
        let bytes = n * dtype.size_bytes();
        // SAFETY: uninitialised device bytes; every constructor fills them.
        let buffer = unsafe { stream.alloc::<u8>(bytes.max(1)) }?;
        Ok(DeviceTensor {
            dtype,
            shape: shape.to_vec(),
            strides: contiguous_strides(shape),
            offset: 0,
            read_only: false,
            buffer: Arc::new(buffer),
            bytes,
        })
    }

    /// Copies a host tensor to a new contiguous device tensor.
    pub fn upload(stream: &Arc<CudaStream>, host: &HostTensor) -> Result<Self> {
        let mut t = Self::alloc(stream, host.dtype(), &host.shape)?;
        let src = host.as_bytes();
        if !src.is_empty() {
            let buf = Arc::get_mut(&mut t.buffer).expect("fresh buffer");
            let mut dst = buf.slice_mut(..src.len());
            stream.memcpy_htod(src, &mut dst)?;
        }
        Ok(t)
    }

    /// A new contiguous tensor of zeros.
    pub fn zeros(stream: &Arc<CudaStream>, dtype: DType, shape: &[usize]) -> Result<Self> {
        let t = Self::alloc(stream, dtype, shape)?;
        t.fill_bytes(0)?;
        Ok(t)
    }

    /// A new contiguous tensor with every byte `0xFF` (NaN for floats, -1 for signed
    /// integers): an output that a kernel fails to write stands out.
    pub fn poisoned(stream: &Arc<CudaStream>, dtype: DType, shape: &[usize]) -> Result<Self> {
        let t = Self::alloc(stream, dtype, shape)?;
        t.poison()?;
        Ok(t)
    }

    /// Sets every byte of the span this tensor covers to `byte` (for a view with gaps,
    /// the gaps too).
    pub fn fill_bytes(&self, byte: u8) -> Result<()> {
        let Some((lo, hi)) = span(&self.shape, &self.strides, self.offset) else { return Ok(()) };
        let size = self.dtype.size_bytes();
        let stream = self.buffer.stream();
        let (base, _sync) = self.buffer.device_ptr(stream);
        let ptr = base + (lo as u64) * size as u64;
        let n = (hi - lo) as usize * size;
        // SAFETY: [ptr, ptr + n) lies inside the allocation (checked when the view was made).
        unsafe { cudarc::driver::result::memset_d8_async(ptr, byte, n, stream.cu_stream()) }?;
        stream.synchronize()?;
        Ok(())
    }

    /// Fills with `0xFF` bytes (NaN for floats).
    pub fn poison(&self) -> Result<()> {
        self.fill_bytes(0xFF)
    }

    /// Copies the tensor's elements (in row-major order of its shape) to the host.
    pub fn download(&self) -> Result<HostTensor> {
        let mut host = HostTensor::full(self.dtype, &self.shape, 0.0);
        let Some((lo, hi)) = span(&self.shape, &self.strides, self.offset) else { return Ok(host) };
        let stream = self.buffer.stream();
        let size = self.dtype.size_bytes();
        // Only the span the view covers travels.
        let (lo, hi) = (lo as usize, hi as usize);
        let mut part = vec![0u8; (hi - lo) * size];
        stream.memcpy_dtoh(&self.buffer.slice(lo * size..hi * size), &mut part)?;
        stream.synchronize()?;
        let dst = host.as_bytes_mut();
        if self.is_contiguous() {
            dst.copy_from_slice(&part[(self.offset - lo) * size..][..dst.len()]);
        } else {
            gather(&part, &self.shape, &self.strides, self.offset - lo, size, dst);
        }
        Ok(host)
    }

    /// A view of the same buffer with another shape, strides (elements, may be negative)
    /// and element offset. Errors if it reaches outside the buffer.
    pub fn view(&self, shape: &[usize], strides: &[i64], offset: usize) -> Result<Self> {
        if shape.len() != strides.len() {
            return Err(RuntimeError::Tensor(format!("shape {shape:?} and strides {strides:?} differ in rank")));
        }
        let capacity = (self.bytes / self.dtype.size_bytes()) as i64;
        if let Some((lo, hi)) = span(shape, strides, offset) {
            if lo < 0 || hi > capacity {
                return Err(RuntimeError::Tensor(format!(
                    "view shape {shape:?} strides {strides:?} offset {offset} reaches elements [{lo}, {hi}) of a buffer of {capacity}"
                )));
            }
        }
        Ok(DeviceTensor { shape: shape.to_vec(), strides: strides.to_vec(), offset, ..self.clone() })
    }

    /// The same tensor, marked read-only (launches refuse it for written parameters).
    pub fn read_only(&self) -> Self {
        DeviceTensor { read_only: true, ..self.clone() }
    }

    /// Element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Sizes.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Strides, in elements.
    pub fn strides(&self) -> &[i64] {
        &self.strides
    }

    /// Offset of element 0 into the buffer, in elements.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// Rank.
    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether it was marked with [`read_only`](Self::read_only).
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// Whether the strides are the row-major ones of the shape.
    pub fn is_contiguous(&self) -> bool {
        self.numel() == 0
            || self
                .shape
                .iter()
                .zip(&self.strides)
                .zip(contiguous_strides(&self.shape))
                .all(|((&n, &s), c)| n == 1 || s == c)
    }

    /// The device address of element 0 (what the kernel ABI passes).
    pub fn device_ptr(&self) -> u64 {
        let (base, _sync) = self.buffer.device_ptr(self.buffer.stream());
        base + (self.offset * self.dtype.size_bytes()) as u64
    }

    /// The stream the buffer was allocated on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        self.buffer.stream()
    }
}

/// Copies the strided elements of `src` into contiguous row-major `dst`.
fn gather(src: &[u8], shape: &[usize], strides: &[i64], offset: usize, size: usize, dst: &mut [u8]) {
    let n: usize = shape.iter().product();
    let mut idx = vec![0usize; shape.len()];
    for i in 0..n {
        let e = offset as i64 + idx.iter().zip(strides).map(|(&k, &s)| k as i64 * s).sum::<i64>();
        let e = e as usize * size;
        dst[i * size..(i + 1) * size].copy_from_slice(&src[e..e + size]);
        for d in (0..shape.len()).rev() {
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans() {
        assert_eq!(span(&[2, 3], &[3, 1], 0), Some((0, 6)));
        assert_eq!(span(&[2, 3], &[1, 2], 1), Some((1, 7)));
        assert_eq!(span(&[3], &[-1], 2), Some((0, 3)));
        assert_eq!(span(&[0, 3], &[3, 1], 0), None);
        assert_eq!(span(&[], &[], 4), Some((4, 5)));
    }

    #[test]
    fn gathers_transposed_view() {
        // 2x3 row-major [0..6) viewed as its 3x2 transpose.
        let src: Vec<u8> = (0..6).collect();
        let mut dst = vec![0u8; 6];
        gather(&src, &[3, 2], &[1, 3], 0, 1, &mut dst);
        assert_eq!(dst, vec![0, 3, 1, 4, 2, 5]);
        // Two-byte elements, offset 1, reversed.
        let src: Vec<u8> = (0..8).collect();
        let mut dst = vec![0u8; 6];
        gather(&src, &[3], &[-1], 3, 2, &mut dst);
        assert_eq!(dst, vec![6, 7, 4, 5, 2, 3]);
    }
}
