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
    /// A tensor-core fragment layout (see [`Fragment`]), `None` for the round-robin one.
    pub fragment: Option<Fragment>,
}

/// The register layouts of `mma.sync` results: a `dot` result `[M, N]` (and every tile of
/// that shape) kept as m16n8 accumulator fragments, and its rows `[M]` held by the
/// threads that hold the row's fragments. Softmax statistics then reduce with quad
/// shuffles and broadcast from registers (the FlashAttention-2 structure) instead of
/// passing through shared memory; see the header's `Frag` and `RowFrag`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fragment {
    /// An `[m, n]` tile over a `wm × (warps / wm)` warp grid.
    Tile { m: usize, n: usize, wm: usize },
    /// The rows of such tiles: an `[m]` tile.
    Rows { m: usize, wm: usize },
}

impl Fragment {
    /// Whether products of fewer than 16 rows take padded fragments (see
    /// [`Self::for_product`]): on unless `TESSERA_FRAGMENT_PAD=0`.
    pub fn padding_enabled() -> bool {
        std::env::var("TESSERA_FRAGMENT_PAD").map_or(true, |v| v != "0")
    }

    /// The header's layout type.
    pub fn type_name(&self) -> String {
        match self {
            Fragment::Tile { m, n, wm } => format!("tsr::Frag<{m}, {n}, {wm}>"),
            Fragment::Rows { m, wm } => format!("tsr::RowFrag<{m}, {wm}>"),
        }
    }

    /// Warps sharing one row (`warps / wm`).
    pub fn wn(&self, threads: usize) -> usize {
        let wm = match self {
            Fragment::Tile { wm, .. } | Fragment::Rows { wm, .. } => *wm,
        };
        threads / 32 / wm
    }

    /// The fragment layout of an `[m, n]` tensor-core product in a block of `threads`
    /// threads, if it has one: `m` a multiple of 16, the warps in a grid of `wm` row
    /// groups (the largest power of two dividing both the warp count and `m / 16`) by
    /// `wn` column groups, each column group a whole number of 8-column tiles.
    ///
    /// Fewer than 16 rows (a decode step's query heads of one KV head) take one padded
    /// strip: the rows past `m` are computed and never stored, and the scores, softmax
    /// statistics and accumulator stay in registers. Measured on the H200 (BENCHMARKS.md):
    /// 2–7 % faster decode than the round-robin path; `TESSERA_FRAGMENT_PAD=0` turns it off.
    pub fn for_product(m: usize, n: usize, threads: usize) -> Option<Fragment> {
        let warps = threads / 32;
        let padded = m < 16 && Self::padding_enabled();
        if m == 0 || !(m.is_multiple_of(16) || padded) || warps == 0 || !warps.is_power_of_two() {
            return None;
        }
        let strips = m.div_ceil(16);
        let wm = (0..=warps.trailing_zeros()).rev().map(|b| 1usize << b).find(|w| strips.is_multiple_of(*w))?;
        let wn = warps / wm;
        n.is_multiple_of(8 * wn).then_some(Fragment::Tile { m, n, wm })
    }
}

impl Layout {
    pub fn of(ty: &TileType, threads: usize) -> Layout {
        let numel = ty.numel();
        if ty.rank() >= 1 && numel <= 32 && threads > 32 {
            return Layout { numel, vec: 1, slots: 1, replicated: true, fragment: None };
        }
        let last = ty.shape.last().copied().unwrap_or(1);
        // Up to 8 consecutive elements (16 bytes of bf16/f16, two 16-byte halves of f32),
        // but narrower when that leaves threads without work: a small tile such as the
        // [4, 64] scores of flash-decoding is spread over the whole block instead of
        // piling onto one warp.
        let fits = |v: usize| last.is_multiple_of(v);
        let vec = [8, 4, 2].into_iter().find(|&v| fits(v) && numel / v >= threads).unwrap_or(1);
        let slots = numel.div_ceil(threads * vec) * vec;
        Layout { numel, vec, slots, replicated: false, fragment: None }
    }

    /// The layout of a fragment (`threads` threads).
    pub fn fragment(f: Fragment, threads: usize) -> Layout {
        match f {
            Fragment::Tile { m, n, wm } => {
                let slots = m.div_ceil(16) / wm * (n / 8 / f.wn(threads)) * 4;
                Layout { numel: m * n, vec: 2, slots, replicated: false, fragment: Some(f) }
            }
            Fragment::Rows { m, wm } => {
                Layout { numel: m, vec: 1, slots: 2 * (m.div_ceil(16) / wm), replicated: false, fragment: Some(f) }
            }
        }
    }

    /// A C++ condition for the threads that write this tile's elements to memory when
    /// several threads hold the same element (`None`: every thread writes its own).
    pub fn writer(&self) -> Option<String> {
        match self.fragment {
            Some(f @ Fragment::Rows { .. }) => Some(format!("{}::writes()", f.type_name())),
            _ if self.replicated => Some("threadIdx.x < 32".into()),
            _ => None,
        }
    }

    /// C++ expression for the flat element index held by `slot`.
    pub fn flat(&self, slot: &str) -> String {
        if let Some(f) = self.fragment {
            format!("{}::flat({slot})", f.type_name())
        } else if self.replicated {
            "tsr::lane()".to_string()
        } else {
            format!("tsr::flat<{}>({slot})", self.vec)
        }
    }

    /// The header's type for this layout (`RoundRobin`, `Frag`, `RowFrag`).
    pub fn type_name(&self) -> String {
        match self.fragment {
            Some(f) => f.type_name(),
            None if self.replicated => "tsr::RoundRobin<1, true>".into(),
            None => format!("tsr::RoundRobin<{}>", self.vec),
        }
    }

    /// Template arguments `E, V[, true]` of the header's stash/unstash helpers.
    pub fn targs(&self) -> String {
        if let Some(f) = self.fragment {
            format!("{}, {}", self.numel, f.type_name())
        } else if self.replicated {
            format!("{}, 1, true", self.numel)
        } else {
            format!("{}, {}", self.numel, self.vec)
        }
    }

    /// Trailing template arguments `V[, true]` of the row-stash and SIMT-dot helpers.
    pub fn vargs(&self) -> String {
        if let Some(f) = self.fragment {
            f.type_name()
        } else if self.replicated {
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
    fn fragments_tile_the_warps() {
        // 64 rows over 4 warps: one 16-row strip each, whole rows per warp.
        assert_eq!(Fragment::for_product(64, 64, 128), Some(Fragment::Tile { m: 64, n: 64, wm: 4 }));
        let l = Layout::fragment(Fragment::Tile { m: 64, n: 128, wm: 4 }, 128);
        assert_eq!((l.vec, l.slots), (2, 64));
        // 32 rows over 8 warps: 2 row groups by 4 column groups of 16 columns.
        let f = Fragment::for_product(32, 64, 256).unwrap();
        assert_eq!((f, f.wn(256)), (Fragment::Tile { m: 32, n: 64, wm: 2 }, 4));
        assert_eq!(Fragment::for_product(32, 24, 256), None, "24 columns do not split over 4 warps");
        // Fewer than 16 rows: round-robin unless padding is asked for; padded, one strip
        // with the warps side by side along the columns.
        if !Fragment::padding_enabled() {
            assert_eq!(Fragment::for_product(4, 64, 128), None);
            return;
        }
        let f = Fragment::for_product(4, 64, 128).unwrap();
        assert_eq!((f, f.wn(128)), (Fragment::Tile { m: 4, n: 64, wm: 1 }, 4));
        assert_eq!(Layout::fragment(f, 128).slots, 8, "2 column tiles of one strip per warp");
        assert_eq!(Layout::fragment(Fragment::Rows { m: 4, wm: 1 }, 128).slots, 2);
        assert_eq!(Fragment::for_product(4, 16, 128), None, "16 columns do not split over 4 warps");
        let rows = Layout::fragment(Fragment::Rows { m: 64, wm: 4 }, 128);
        assert_eq!((rows.slots, rows.writer().unwrap()), (2, "tsr::RowFrag<64, 4>::writes()".to_string()));
        assert_eq!(l.targs(), "8192, tsr::Frag<64, 128, 4>");
    }

    #[test]
    fn literals_are_exact() {
        assert_eq!(literal(1.5, DType::F32), "1.5f");
        assert_eq!(literal(2.0, DType::F32), "2.0f");
        assert_eq!(literal(f64::NEG_INFINITY, DType::F32), "-tsr::inf()");
        assert_eq!(literal(-3.0, DType::I64), "-3LL");
    }
}
