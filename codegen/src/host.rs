//! Host-side tensors and scalar values: the data the interpreter runs on and the runtime
//! copies to and from the GPU.

use half::{bf16, f16};

use crate::ir::DType;

/// Contiguous row-major element storage of one dtype.
#[derive(Clone, Debug, PartialEq)]
pub enum HostData {
    F32(Vec<f32>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
    I32(Vec<i32>),
    U32(Vec<u32>),
    I64(Vec<i64>),
}

/// A dense row-major tensor in host memory.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: HostData,
}

impl HostTensor {
    /// A tensor of `dtype` filled with `value` (rounded to the dtype).
    pub fn full(dtype: DType, shape: &[usize], value: f64) -> Self {
        let n: usize = shape.iter().product();
        Self::from_f64(dtype, shape, &vec![value; n])
    }

    /// A tensor built from f64 values, rounded to `dtype` (round-to-nearest-even for
    /// f16/bf16, truncation toward zero for integers).
    pub fn from_f64(dtype: DType, shape: &[usize], values: &[f64]) -> Self {
        let n: usize = shape.iter().product();
        assert_eq!(n, values.len(), "shape {shape:?} needs {n} values, got {}", values.len());
        let data = match dtype {
            DType::F32 => HostData::F32(values.iter().map(|&x| x as f32).collect()),
            DType::F16 => HostData::F16(values.iter().map(|&x| f16::from_f64(x)).collect()),
            DType::BF16 => HostData::BF16(values.iter().map(|&x| bf16::from_f64(x)).collect()),
            DType::I32 => HostData::I32(values.iter().map(|&x| x as i32).collect()),
            DType::U32 => HostData::U32(values.iter().map(|&x| x as u32).collect()),
            DType::I64 => HostData::I64(values.iter().map(|&x| x as i64).collect()),
            DType::Bool => panic!("bool tensors are not supported; use i32"),
        };
        HostTensor { shape: shape.to_vec(), data }
    }

    /// Uniform random values in `[lo, hi)` from a caller's generator (integers: floor).
    pub fn random(dtype: DType, shape: &[usize], lo: f64, hi: f64, rng: &mut impl rand::Rng) -> Self {
        let n: usize = shape.iter().product();
        let vals: Vec<f64> =
            (0..n).map(|_| rng.random_range(lo..hi)).map(|x: f64| if dtype.is_int() { x.floor() } else { x }).collect();
        Self::from_f64(dtype, shape, &vals)
    }

    pub fn dtype(&self) -> DType {
        match self.data {
            HostData::F32(_) => DType::F32,
            HostData::F16(_) => DType::F16,
            HostData::BF16(_) => DType::BF16,
            HostData::I32(_) => DType::I32,
            HostData::U32(_) => DType::U32,
            HostData::I64(_) => DType::I64,
        }
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Row-major strides, in elements.
    pub fn strides(&self) -> Vec<i64> {
        contiguous_strides(&self.shape)
    }

    /// Element `i` (flat index) as f64.
    pub fn get_f64(&self, i: usize) -> f64 {
        match &self.data {
            HostData::F32(v) => v[i] as f64,
            HostData::F16(v) => v[i].to_f64(),
            HostData::BF16(v) => v[i].to_f64(),
            HostData::I32(v) => v[i] as f64,
            HostData::U32(v) => v[i] as f64,
            HostData::I64(v) => v[i] as f64,
        }
    }

    /// Sets element `i` (flat index), rounding to the dtype.
    pub fn set_f64(&mut self, i: usize, x: f64) {
        match &mut self.data {
            HostData::F32(v) => v[i] = x as f32,
            HostData::F16(v) => v[i] = f16::from_f64(x),
            HostData::BF16(v) => v[i] = bf16::from_f64(x),
            HostData::I32(v) => v[i] = x as i32,
            HostData::U32(v) => v[i] = x as u32,
            HostData::I64(v) => v[i] = x as i64,
        }
    }

    /// All elements as f64.
    pub fn to_f64(&self) -> Vec<f64> {
        (0..self.numel()).map(|i| self.get_f64(i)).collect()
    }

    /// The raw bytes (little-endian, as on the GPU).
    pub fn as_bytes(&self) -> &[u8] {
        fn bytes<T>(v: &[T]) -> &[u8] {
            // SAFETY: plain-old-data element types with no padding.
            unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v)) }
        }
        match &self.data {
            HostData::F32(v) => bytes(v),
            HostData::F16(v) => bytes(v),
            HostData::BF16(v) => bytes(v),
            HostData::I32(v) => bytes(v),
            HostData::U32(v) => bytes(v),
            HostData::I64(v) => bytes(v),
        }
    }

    /// Mutable raw bytes (for copies back from the GPU).
    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        fn bytes<T>(v: &mut [T]) -> &mut [u8] {
            // SAFETY: plain-old-data element types; every bit pattern is a valid value.
            unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr() as *mut u8, std::mem::size_of_val(v)) }
        }
        match &mut self.data {
            HostData::F32(v) => bytes(v),
            HostData::F16(v) => bytes(v),
            HostData::BF16(v) => bytes(v),
            HostData::I32(v) => bytes(v),
            HostData::U32(v) => bytes(v),
            HostData::I64(v) => bytes(v),
        }
    }
}

/// Row-major strides of a shape, in elements.
pub fn contiguous_strides(shape: &[usize]) -> Vec<i64> {
    let mut s = vec![1i64; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1] as i64;
    }
    s
}

/// A runtime scalar kernel argument.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ScalarValue {
    F32(f32),
    I32(i32),
    U32(u32),
    I64(i64),
    Bool(bool),
}

impl ScalarValue {
    pub fn dtype(self) -> DType {
        match self {
            ScalarValue::F32(_) => DType::F32,
            ScalarValue::I32(_) => DType::I32,
            ScalarValue::U32(_) => DType::U32,
            ScalarValue::I64(_) => DType::I64,
            ScalarValue::Bool(_) => DType::Bool,
        }
    }

    pub fn as_f64(self) -> f64 {
        match self {
            ScalarValue::F32(x) => x as f64,
            ScalarValue::I32(x) => x as f64,
            ScalarValue::U32(x) => x as f64,
            ScalarValue::I64(x) => x as f64,
            ScalarValue::Bool(x) => x as u8 as f64,
        }
    }
}
