//! Shape buckets: each kernel declares which shape dimensions matter for tuning and how
//! they are rounded, and the bucket string (`n=32768,b=8`) becomes part of the key.

use crate::{Error, Result};

/// The smallest power of two ≥ `n` (1 for 0). 30000 → 32768, 32768 → 32768.
pub fn bucket_pow2(n: u64) -> u64 {
    n.max(1).checked_next_power_of_two().unwrap_or(1 << 63)
}

/// The largest power of two ≤ `n` (1 for 0). 30000 → 16384.
pub fn bucket_pow2_floor(n: u64) -> u64 {
    if n <= 1 {
        1
    } else {
        1 << (63 - n.leading_zeros())
    }
}

/// `n` rounded up to a multiple of `step` (`step` 0 is treated as 1).
pub fn bucket_multiple(n: u64, step: u64) -> u64 {
    let step = step.max(1);
    n.div_ceil(step).saturating_mul(step)
}

/// How one dimension is bucketed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucketing {
    /// The value itself (head dim, batch when it changes the grid shape).
    Exact,
    /// Next power of two up ([`bucket_pow2`]), e.g. sequence length.
    Pow2,
    /// Previous power of two down ([`bucket_pow2_floor`]).
    Pow2Floor,
    /// Rounded up to a multiple ([`bucket_multiple`]).
    Multiple(u64),
    /// The first bound ≥ the value, or the last bound when the value is larger.
    /// Bounds must be ascending.
    Bounds(&'static [u64]),
}

impl Bucketing {
    pub fn apply(self, n: u64) -> u64 {
        match self {
            Bucketing::Exact => n,
            Bucketing::Pow2 => bucket_pow2(n),
            Bucketing::Pow2Floor => bucket_pow2_floor(n),
            Bucketing::Multiple(s) => bucket_multiple(n, s),
            Bucketing::Bounds(b) => b.iter().copied().find(|&x| x >= n).or(b.last().copied()).unwrap_or(n),
        }
    }
}

/// Builds a bucket string dimension by dimension, in the order given:
/// `ShapeBucket::new().pow2("n", 30000).exact("b", 8).build() == "n=32768,b=8"`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShapeBucket {
    dims: Vec<(String, u64)>,
}

impl ShapeBucket {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn dim(mut self, name: &str, value: u64, how: Bucketing) -> Self {
        self.dims.push((name.to_string(), how.apply(value)));
        self
    }

    pub fn exact(self, name: &str, value: u64) -> Self {
        self.dim(name, value, Bucketing::Exact)
    }

    pub fn pow2(self, name: &str, value: u64) -> Self {
        self.dim(name, value, Bucketing::Pow2)
    }

    pub fn multiple(self, name: &str, value: u64, step: u64) -> Self {
        self.dim(name, value, Bucketing::Multiple(step))
    }

    /// The bucketed dimensions.
    pub fn dims(&self) -> &[(String, u64)] {
        &self.dims
    }

    pub fn build(&self) -> String {
        self.dims.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
    }
}

/// A kernel's declaration of the dimensions that matter, e.g.
/// `BucketSpec::new(&[("n", Bucketing::Pow2), ("b", Bucketing::Exact)])`.
/// Dimensions not declared are ignored; a declared one that is missing is an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketSpec {
    pub dims: &'static [(&'static str, Bucketing)],
}

impl BucketSpec {
    pub const fn new(dims: &'static [(&'static str, Bucketing)]) -> Self {
        BucketSpec { dims }
    }

    /// The bucket string of a concrete shape given as `(name, value)` pairs.
    pub fn bucket(&self, shape: &[(&str, u64)]) -> Result<String> {
        let mut b = ShapeBucket::new();
        for &(name, how) in self.dims {
            let value = shape
                .iter()
                .find(|(n, _)| *n == name)
                .map(|&(_, v)| v)
                .ok_or_else(|| Error::Invalid(format!("shape has no dimension `{name}`")))?;
            b = b.dim(name, value, how);
        }
        Ok(b.build())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets() {
        assert_eq!(bucket_pow2(0), 1);
        assert_eq!(bucket_pow2(1), 1);
        assert_eq!(bucket_pow2(30000), 32768);
        assert_eq!(bucket_pow2(32768), 32768);
        assert_eq!(bucket_pow2_floor(30000), 16384);
        assert_eq!(bucket_pow2_floor(0), 1);
        assert_eq!(bucket_multiple(100, 64), 128);
        assert_eq!(bucket_multiple(128, 64), 128);
        assert_eq!(Bucketing::Bounds(&[1, 8, 64]).apply(9), 64);
        assert_eq!(Bucketing::Bounds(&[1, 8, 64]).apply(100), 64);
        assert_eq!(ShapeBucket::new().pow2("n", 30000).exact("b", 8).build(), "n=32768,b=8");
        let spec = BucketSpec::new(&[("n", Bucketing::Pow2), ("d", Bucketing::Exact)]);
        assert_eq!(spec.bucket(&[("b", 3), ("d", 128), ("n", 5000)]).unwrap(), "n=8192,d=128");
        assert!(spec.bucket(&[("n", 5)]).is_err());
    }
}
