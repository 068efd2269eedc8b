//! Scalar and tile types of the tile IR.

use std::fmt;

/// Element type of a scalar, a tile or a global tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    F32,
    F16,
    BF16,
    I32,
    U32,
    I64,
    Bool,
}

impl DType {
    /// Every dtype, in a stable order (used by tests and docs).
    pub const ALL: [DType; 7] = [DType::F32, DType::F16, DType::BF16, DType::I32, DType::U32, DType::I64, DType::Bool];

    /// Floating-point types (f32, f16, bf16).
    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F16 | DType::BF16)
    }

    /// Integer types (i32, u32, i64); bool is not an integer.
    pub fn is_int(self) -> bool {
        matches!(self, DType::I32 | DType::U32 | DType::I64)
    }

    /// Size of one element in bytes, as stored in global memory.
    pub fn size_bytes(self) -> usize {
        match self {
            DType::F32 | DType::I32 | DType::U32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::I64 => 8,
            DType::Bool => 1,
        }
    }

    /// The Rust-style name (`bf16`, `i32`, ...), used in messages and the DSL.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::I32 => "i32",
            DType::U32 => "u32",
            DType::I64 => "i64",
            DType::Bool => "bool",
        }
    }

    /// Parses a Rust-style dtype name.
    pub fn parse(s: &str) -> Option<DType> {
        DType::ALL.into_iter().find(|d| d.name() == s)
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The type of an IR value: a tile with a compile-time shape.
///
/// A scalar is a tile of rank 0 (`shape == []`). Scalars are uniform across the
/// CUDA block (every thread holds the same value); tiles are spread over the threads.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TileType {
    pub dtype: DType,
    pub shape: Vec<usize>,
}

impl TileType {
    /// A rank-0 tile.
    pub fn scalar(dtype: DType) -> Self {
        TileType { dtype, shape: Vec::new() }
    }

    /// A tile of the given shape.
    pub fn tile(dtype: DType, shape: &[usize]) -> Self {
        TileType { dtype, shape: shape.to_vec() }
    }

    pub fn is_scalar(&self) -> bool {
        self.shape.is_empty()
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// Number of elements (1 for a scalar).
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Same shape, other dtype.
    pub fn with_dtype(&self, dtype: DType) -> Self {
        TileType { dtype, shape: self.shape.clone() }
    }
}

impl fmt::Display for TileType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.shape.is_empty() {
            write!(f, "{}", self.dtype)
        } else {
            let dims: Vec<String> = self.shape.iter().map(|d| d.to_string()).collect();
            write!(f, "tile<{}, [{}]>", self.dtype, dims.join(", "))
        }
    }
}

/// Broadcasts two shapes with NumPy rules (align from the right, 1 stretches).
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for i in 0..rank {
        let da = if i < rank - a.len() { 1 } else { a[i - (rank - a.len())] };
        let db = if i < rank - b.len() { 1 } else { b[i - (rank - b.len())] };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        };
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasting_follows_numpy() {
        assert_eq!(broadcast_shapes(&[4, 1], &[4, 64]), Some(vec![4, 64]));
        assert_eq!(broadcast_shapes(&[64], &[4, 64]), Some(vec![4, 64]));
        assert_eq!(broadcast_shapes(&[], &[3]), Some(vec![3]));
        assert_eq!(broadcast_shapes(&[4], &[8]), None);
    }

    #[test]
    fn dtype_names_round_trip() {
        for d in DType::ALL {
            assert_eq!(DType::parse(d.name()), Some(d));
        }
    }
}
