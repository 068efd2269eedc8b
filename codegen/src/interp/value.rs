//! Tile values: dense row-major arrays, and conversions between dtypes.
//!
//! Floats (f32, f16, bf16) are held as `f32` (f16/bf16 values are exactly representable);
//! integers and bools are held as `i64`, normalised to their dtype (i32 sign-extended,
//! u32 zero-extended, bool 0/1).

use half::{bf16, f16};

use crate::ir::DType;

/// Element storage of a tile.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Buf {
    F(Vec<f32>),
    I(Vec<i64>),
}

/// One element.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Elem {
    F(f32),
    I(i64),
}

/// A tile value (a scalar is a rank-0 tile with one element).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Tile {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub buf: Buf,
}

impl Tile {
    pub fn floats(dtype: DType, shape: Vec<usize>, v: Vec<f32>) -> Tile {
        debug_assert_eq!(shape.iter().product::<usize>(), v.len());
        Tile { dtype, shape, buf: Buf::F(v) }
    }

    pub fn ints(dtype: DType, shape: Vec<usize>, v: Vec<i64>) -> Tile {
        debug_assert_eq!(shape.iter().product::<usize>(), v.len());
        Tile { dtype, shape, buf: Buf::I(v) }
    }

    /// A tile of `shape` filled with `e`.
    pub fn splat(dtype: DType, shape: Vec<usize>, e: Elem) -> Tile {
        let n = shape.iter().product();
        match e {
            Elem::F(x) => Tile::floats(dtype, shape, vec![x; n]),
            Elem::I(x) => Tile::ints(dtype, shape, vec![x; n]),
        }
    }

    pub fn scalar(dtype: DType, e: Elem) -> Tile {
        Tile::splat(dtype, Vec::new(), e)
    }

    pub fn numel(&self) -> usize {
        match &self.buf {
            Buf::F(v) => v.len(),
            Buf::I(v) => v.len(),
        }
    }

    pub fn get(&self, i: usize) -> Elem {
        match &self.buf {
            Buf::F(v) => Elem::F(v[i]),
            Buf::I(v) => Elem::I(v[i]),
        }
    }

    /// The integer values (integer and bool tiles).
    pub fn ints_ref(&self) -> &[i64] {
        match &self.buf {
            Buf::I(v) => v,
            Buf::F(_) => panic!("{} tile used as an integer tile", self.dtype),
        }
    }

    /// The single integer value of an integer or bool scalar.
    pub fn as_i64(&self) -> i64 {
        self.ints_ref()[0]
    }

    pub fn as_bool(&self) -> bool {
        self.as_i64() != 0
    }

    /// The same data viewed with another shape of equal size.
    pub fn reshaped(mut self, shape: Vec<usize>) -> Tile {
        debug_assert_eq!(shape.iter().product::<usize>(), self.numel());
        self.shape = shape;
        self
    }
}

/// Rounds an f32 result to `dtype` (f16/bf16 round-to-nearest-even; f32 unchanged).
pub(crate) fn round_f(dtype: DType, x: f32) -> f32 {
    match dtype {
        DType::F16 => f16::from_f32(x).to_f32(),
        DType::BF16 => bf16::from_f32(x).to_f32(),
        _ => x,
    }
}

/// Normalises a wrapped integer result to `dtype` (two's-complement truncation).
pub(crate) fn wrap_i(dtype: DType, x: i64) -> i64 {
    match dtype {
        DType::I32 => x as i32 as i64,
        DType::U32 => x as u32 as i64,
        DType::Bool => (x != 0) as i64,
        _ => x,
    }
}

/// A float converted to `dtype` with Rust `as` semantics: to integers truncates toward
/// zero and saturates (NaN gives 0), to bool is `!= 0`, to f16/bf16 rounds to nearest even.
pub(crate) fn from_f64(dtype: DType, x: f64) -> Elem {
    match dtype {
        DType::F32 => Elem::F(x as f32),
        DType::F16 => Elem::F(f16::from_f64(x).to_f32()),
        DType::BF16 => Elem::F(bf16::from_f64(x).to_f32()),
        DType::I32 => Elem::I(x as i32 as i64),
        DType::U32 => Elem::I(x as u32 as i64),
        DType::I64 => Elem::I(x as i64),
        DType::Bool => Elem::I((x != 0.0) as i64),
    }
}

/// Converts one element of `from` to `to` (the `Cast` op).
pub(crate) fn cast_elem(e: Elem, to: DType) -> Elem {
    match e {
        Elem::F(x) => match to {
            DType::F32 | DType::F16 | DType::BF16 => Elem::F(round_f(to, x)),
            _ => from_f64(to, x as f64),
        },
        Elem::I(x) => match to {
            // i64 -> f32 rounds once; i32/u32 are exact in f64, so f16/bf16 round once too.
            DType::F32 => Elem::F(x as f32),
            DType::F16 | DType::BF16 => from_f64(to, x as f64),
            _ => Elem::I(wrap_i(to, x)),
        },
    }
}
