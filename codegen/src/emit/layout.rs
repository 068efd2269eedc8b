//! How a tile is spread over the threads of a block, and the C++ spelling of types.
//!
//! A tile of `numel` elements with vector width `vec` is cut into vectors of `vec`
//! consecutive (row-major) elements, dealt round-robin to the threads: slot `i` of
//! thread `t` holds flat element `((i / vec) * threads + t) * vec + i % vec`. The layout
//! depends only on the shape, so element-wise ops between tiles of one shape need no
//! communication; everything else goes through shared memory.

use crate::ir::{DType, TileType};

/// Slot layout of one tile type in a block of `threads` threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub numel: usize,
    pub vec: usize,
    /// Slots per thread (`ceil(numel / (threads * vec)) * vec`).
    pub slots: usize,
    /// Small tiles (at most 32 elements, in blocks of several warps) are held by every
    /// warp: lane `l` of each warp holds element `l`. Broadcasting one then takes a warp
    /// shuffle instead of a trip through shared memory and two barriers (the row maxima
    /// and rescale factors of attention are such tiles).
    pub replicated: bool,
}

impl Layout {
    pub fn of(ty: &TileType, threads: usize) -> Layout {
        let numel = ty.numel();
        if ty.rank() >= 1 && numel <= 32 && threads > 32 {
            return Layout { numel, vec: 1, slots: 1, replicated: true };
        }
        let last = ty.shape.last().copied().unwrap_or(1);
        // Up to 8 consecutive elements (16 bytes of bf16/f16, two 16-byte halves of f32),
        // but narrower when that leaves threads without work: a small tile such as the
        // [4, 64] scores of flash-decoding is spread over the whole block instead of
        // piling onto one warp.
        let fits = |v: usize| last.is_multiple_of(v);
        let vec = [8, 4, 2].into_iter().find(|&v| fits(v) && numel / v >= threads).unwrap_or(1);
        let slots = numel.div_ceil(threads * vec) * vec;
        Layout { numel, vec, slots, replicated: false }
    }

    /// C++ expression for the flat element index held by `slot`.
    pub fn flat(&self, slot: &str) -> String {
        if self.replicated {
            "tsr::lane()".to_string()
        } else {
            format!("tsr::flat<{}>({slot})", self.vec)
        }
    }

    /// Template arguments `E, V[, true]` of the header's stash/unstash helpers.
    pub fn targs(&self) -> String {
        if self.replicated {
            format!("{}, 1, true", self.numel)
        } else {
            format!("{}, {}", self.numel, self.vec)
        }
    }

    /// Trailing template arguments `V[, true]` of the row-stash and SIMT-dot helpers.
    pub fn vargs(&self) -> String {
        if self.replicated {
            "1, true".to_string()
        } else {
            self.vec.to_string()
        }
    }
}

/// C++ type of an element.
pub fn ctype(d: DType) -> &'static str {
    match d {
        DType::F32 => "float",
        DType::F16 => "tsr::f16",
        DType::BF16 => "tsr::bf16",
        DType::I32 => "int",
        DType::U32 => "unsigned",
        DType::I64 => "long long",
        DType::Bool => "bool",
    }
}

/// The type arithmetic happens in: f32 for every float type, the type itself otherwise.
pub fn compute_type(d: DType) -> DType {
    if d.is_float() {
        DType::F32
    } else {
        d
    }
}

/// A constant as a C++ expression of type `ctype(d)`; exact for every value of `d`.
pub fn literal(x: f64, d: DType) -> String {
    let f32_lit = |x: f32| {
        if x.is_nan() {
            "tsr::nan()".to_string()
        } else if x.is_infinite() {
            if x > 0.0 { "tsr::inf()" } else { "-tsr::inf()" }.to_string()
        } else {
            let s = format!("{x:?}");
            let s = if s.contains(['.', 'e']) { s } else { format!("{s}.0") };
            format!("{s}f")
        }
    };
    match d {
        DType::F32 => f32_lit(x as f32),
        DType::F16 | DType::BF16 => format!("tsr::cvt<{}>({})", ctype(d), f32_lit(x as f32)),
        DType::I32 => {
            let v = x as i32;
            if v == i32::MIN {
                "(-2147483647 - 1)".into()
            } else {
                v.to_string()
            }
        }
        DType::U32 => format!("{}u", x as u32),
        DType::I64 => format!("{}LL", x as i64),
        DType::Bool => (if x != 0.0 { "true" } else { "false" }).into(),
    }
}

/// Row-major strides of a shape.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// C++ expressions for the coordinates of flat element `f` (a C++ expression) in `shape`.
pub fn coords(f: &str, shape: &[usize]) -> Vec<String> {
    let st = strides(shape);
    (0..shape.len())
        .map(|d| {
            let q = if st[d] == 1 { f.to_string() } else { format!("({f} / {})", st[d]) };
            if d == 0 {
                q
            } else {
                format!("{q} % {}", shape[d])
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vector_width_follows_the_last_dimension() {
        let l = Layout::of(&TileType::tile(DType::BF16, &[64, 128]), 128);
        assert_eq!((l.vec, l.slots), (8, 64));
        // Small tiles spread out: [4, 64] has 256 elements for 128 threads.
        let l = Layout::of(&TileType::tile(DType::F32, &[4, 64]), 128);
        assert_eq!((l.vec, l.slots), (2, 2));
        // At most 32 elements: every warp holds the whole tile, one element per lane.
        let l = Layout::of(&TileType::tile(DType::F32, &[4]), 128);
        assert_eq!((l.vec, l.slots, l.replicated), (1, 1, true));
        assert!(!Layout::of(&TileType::tile(DType::F32, &[4]), 32).replicated);
        let l = Layout::of(&TileType::tile(DType::F32, &[777]), 128);
        assert_eq!((l.vec, l.slots), (1, 7));
    }

    #[test]
    fn literals_are_exact() {
        assert_eq!(literal(1.5, DType::F32), "1.5f");
        assert_eq!(literal(2.0, DType::F32), "2.0f");
        assert_eq!(literal(f64::NEG_INFINITY, DType::F32), "-tsr::inf()");
        assert_eq!(literal(-3.0, DType::I64), "-3LL");
    }
}
